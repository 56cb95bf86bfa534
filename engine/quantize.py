"""Int8 quantization: per-output-channel int8 weights, per-token int8 activations, int32 accumulation.

Every nn.Linear becomes a QuantLinear: its weight is stored as int8 with one fp32 scale per output
channel (symmetric, scale = max|w_row| / 127). At run time each input row (token) is quantized the same
way with its own scale, multiplied with `torch._int_mm` (int8 x int8 -> int32; VNNI on x86 CPUs) and the
int32 result is rescaled by (row scale x channel scale) to fp32. Where `_int_mm` cannot run (a platform
without it, or shapes it refuses) the layer dequantizes its weight and does an fp32 matmul instead:
same numbers up to the activation rounding, only slower. `torch.ao.quantization` is not used.

A hybrid by input size: inputs of at most WEIGHT_ONLY_MAX_ROWS rows (decode, one token per sequence) take
the weight-only kernel `torch._weight_int8pack_mm` instead: bf16 activations (not quantized), the same
int8 weights and scales, fp32 out. Why: at one row the GEMV is bound by streaming the weights, which int8
cuts 4x, but the per-token path wraps `_int_mm` in ~7 small quantize/rescale ops whose fixed costs ate the
gain (medium decode 0.8x fp32); the fused kernel is one op (medium decode ~1.5x fp32). Prefill-sized inputs
keep per-token int8 activations on `_int_mm`, so evaluation (perplexity) runs the int8 x int8 product.

The output head is tied to the token embedding in both models: the head is quantized like any Linear
and the embedding becomes a view of the same int8 rows (QuantEmbedding), so the matrix is stored once,
in int8. What stays fp32: LayerNorms, position embeddings, biases and the LSTM's recurrent weights
(nn.LSTM runs a fused kernel that int8 weights would have to replace wholesale).

An int8 checkpoint lives in RUN/ckpt/int8/ (model.safetensors with int8 tensors and fp32 scales,
state.json naming its source checkpoint and holding the report), written by `engine.int8.save_int8` and
loaded with `engine.checkpoint.load_model(run_dir, "int8")`.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn import functional as F

INT8 = "int8"
FORMAT = "smallgpt-int8-v1"  # state.json "format" of an int8 checkpoint


# --- the int8 matmul --------------------------------------------------------------------------------
# Rows of A that `_int_mm` accepts, per (device type, K, N): 1 (any), 17 (CUDA wants more than 16 rows and
# K, N multiples of 8: fewer rows are zero-padded) or None (unsupported: dequantize instead).
_INT_MM_ROWS: dict[tuple[str, int, int], int | None] = {}


def int_mm_min_rows(device: torch.device, k: int, n: int) -> int | None:
    """How many rows `torch._int_mm` needs for a [M, k] x [k, n] product on this device, or None if it cannot
    run it. Found once per shape by a tiny trial call; the answer is cached."""
    key = (device.type, k, n)
    if key not in _INT_MM_ROWS:
        _INT_MM_ROWS[key] = None
        b = torch.zeros(n, k, dtype=torch.int8, device=device).t()  # the layout QuantLinear passes
        for rows in (1, 17):
            try:
                torch._int_mm(torch.zeros(rows, k, dtype=torch.int8, device=device), b)
            except (RuntimeError, NotImplementedError, AttributeError):
                continue
            _INT_MM_ROWS[key] = rows
            break
    return _INT_MM_ROWS[key]


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row: (q int8 [M, K], scale fp32 [M, 1]) with x ~= q * scale.

    An all-zero row gets a tiny scale and quantizes to zeros. |x / scale| <= 127 by construction, so
    rounding stays in range without a clamp.
    """
    scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(x / scale).to(torch.int8), scale


def int8_linear(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None, min_rows: int) -> Tensor:
    """x [M, K] fp32 @ (w_q [N, K] int8 * w_scale [N])^T + bias, with x quantized per row: fp32 [M, N].

    Written for few passes over memory: at prefill sizes the elementwise work around the int8 product
    costs as much as the product itself. In: |x|, its row max, then scale, round, narrow to int8. Out:
    the int32 -> fp32 cast fused into the row rescale, then channel scale and bias in one in-place pass.
    """
    # max|x| per row. Not linalg.vector_norm(inf): one pass, but its generic reduction measured 7-14x slower.
    amax = x.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12)
    x_q = torch.mul(x, 127.0 / amax).round_().to(torch.int8)  # |x| * 127 / amax <= 127: no clamp needed
    m = x_q.size(0)
    if m < min_rows:
        x_q = F.pad(x_q, (0, 0, 0, min_rows - m))
    acc = torch._int_mm(x_q, w_q.t())
    y = torch.mul(acc[:m] if m < min_rows else acc, amax.mul_(1.0 / 127.0))  # int32 * fp32 -> fp32
    return y.mul_(w_scale) if bias is None else torch.addcmul(bias, y, w_scale, out=y)


def weight_only_linear(x: Tensor, w_q: Tensor, w_scale_bf16: Tensor, bias: Tensor | None) -> Tensor:
    """x [M, K] @ (w_q [N, K] int8 * scale [N])^T + bias with bf16 activations, for a few rows: fp32 [M, N].

    One fused kernel (`torch._weight_int8pack_mm`) reads the int8 weight directly; its fp32-input variant
    is unvectorized on x86 (10x slower than an fp32 GEMV here), hence bf16 in and out.
    """
    y = torch._weight_int8pack_mm(x.to(torch.bfloat16), w_q, w_scale_bf16)
    return y.to(torch.float32) if bias is None else torch.add(y, bias)  # bf16 + fp32 -> fp32, one op


# Weight-only kernel availability per (device type, K, N), found by a trial call like int_mm_min_rows.
_WEIGHT_ONLY: dict[tuple[str, int, int], bool] = {}


def weight_only_ok(device: torch.device, k: int, n: int) -> bool:
    """Whether `torch._weight_int8pack_mm` runs a [M, k] bf16 x [n, k] int8 product on this device."""
    key = (device.type, k, n)
    if key not in _WEIGHT_ONLY:
        try:
            torch._weight_int8pack_mm(torch.zeros(1, k, dtype=torch.bfloat16, device=device),
                                      torch.zeros(n, k, dtype=torch.int8, device=device),
                                      torch.ones(n, dtype=torch.bfloat16, device=device))
            _WEIGHT_ONLY[key] = True
        except (RuntimeError, NotImplementedError, AttributeError):
            _WEIGHT_ONLY[key] = False
    return _WEIGHT_ONLY[key]


# Inputs with at most this many rows (decode: one token per sequence) take the weight-only kernel. Measured
# per Linear at medium's shapes, 1 thread: at 1-4 rows it costs ~0.6x an fp32 GEMV and streams a quarter of
# the bytes, while _int_mm plus its ~7 small quantize/rescale ops costs about as much as fp32; from 8 rows on
# the weight-only kernel falls behind (a GEMV per row) and _int_mm wins.
WEIGHT_ONLY_MAX_ROWS = 4


class QuantLinear(nn.Module):
    """A drop-in for nn.Linear with int8 weights (buffers `weight_int8` [out, in], `weight_scale` [out])."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # The weight-only kernel wants its scales in the activations' dtype: a derived copy, never saved,
        # refreshed whenever weight_scale is (from_linear, load_state_dict).
        self.register_buffer("weight_scale_bf16", torch.ones(out_features, dtype=torch.bfloat16), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_derived())

    def _refresh_derived(self) -> None:
        self.weight_scale_bf16 = self.weight_scale.to(torch.bfloat16)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "QuantLinear":
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        w = linear.weight.detach().float()
        w_q, scale = quantize_rows(w)
        q.weight_int8.copy_(w_q)
        q.weight_scale.copy_(scale.squeeze(1))
        q._refresh_derived()
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q.to(linear.weight.device)

    def dequantized_weight(self) -> Tensor:
        return self.weight_int8.to(torch.float32) * self.weight_scale.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.size(0) <= WEIGHT_ONLY_MAX_ROWS and weight_only_ok(x2.device, self.in_features, self.out_features):
            y = weight_only_linear(x2, self.weight_int8, self.weight_scale_bf16, self.bias)
        else:
            x2 = x2.to(torch.float32)  # bf16 under autocast: quantize from fp32
            min_rows = int_mm_min_rows(x2.device, self.in_features, self.out_features)
            if min_rows is None:
                y = F.linear(x2, self.dequantized_weight(), self.bias)
            else:
                y = int8_linear(x2, self.weight_int8, self.weight_scale, self.bias, min_rows)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantEmbedding(nn.Module):
    """The token embedding of a model whose head is tied to it: rows read from the head's int8 matrix.

    Holds no tensors of its own (the head's buffers are saved once); `weight` materializes the dequantized
    matrix for code that asks for it (dtype/device of caches), never on the forward path.
    """

    def __init__(self, head: QuantLinear):
        super().__init__()
        self._head = [head]  # a list, so the head is not registered (and saved) a second time under this name

    @property
    def weight(self) -> Tensor:
        return self._head[0].dequantized_weight()

    def forward(self, idx: Tensor) -> Tensor:
        head = self._head[0]
        return F.embedding(idx, head.weight_int8).to(torch.float32) * head.weight_scale[idx].unsqueeze(-1)


def quantize_model(model: nn.Module) -> nn.Module:
    """Swap every nn.Linear of model for a QuantLinear (in place; returns model), and an embedding tied to
    a head for a QuantEmbedding reading the head's int8 rows. Other layers are untouched."""
    embeddings = {id(m.weight): name for name, m in model.named_modules() if isinstance(m, nn.Embedding)}
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        q = QuantLinear.from_linear(linear)
        _set_module(model, name, q)
        tied = embeddings.get(id(linear.weight))
        if tied is not None:
            _set_module(model, tied, QuantEmbedding(q))
    return model.eval()


def quantized_names(model: nn.Module) -> dict[str, list[str]]:
    """{"int8": module names with int8 weights, "fp32": names of the tensors kept in fp32}."""
    int8 = [n for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))]
    fp32 = [n for n, t in model.state_dict().items() if t.is_floating_point() and not n.endswith("weight_scale")]
    return {INT8: int8, "fp32": fp32}


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


# --- speed ------------------------------------------------------------------------------------------
@torch.inference_mode()
def measure_speed(model: nn.Module, prefill_tokens: int | None = None, decode_tokens: int = 64,
                  repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Tokens/s of a prompt prefill (one `step` over prefill_tokens, default the block size) and of
    decoding (one `step` per token, greedy, from a one-token prompt), batch 1, best of `repeats` (the least
    disturbed by other processes on a shared machine)."""
    cfg = model.config
    device = next(model.parameters()).device
    prefill_tokens = min(prefill_tokens or cfg.block_size, cfg.block_size)
    decode_tokens = min(decode_tokens, cfg.block_size - 1)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, cfg.vocab_size, (1, prefill_tokens), generator=gen).to(device)

    def prefill() -> None:
        model.step(prompt, model.init_state(1))

    def decode() -> None:
        state, token = model.init_state(1), prompt[:, :1]
        for _ in range(decode_tokens):
            logits, state = model.step(token, state)
            token = logits[:, -1:].argmax(-1)

    prefill()
    decode()  # warm-up: allocator, kernels, the _int_mm trial calls
    return {"prefill_tokens_per_s": prefill_tokens / _best_time(prefill, repeats),
            "decode_tokens_per_s": decode_tokens / _best_time(decode, repeats)}


def _best_time(fn: Callable[[], None], repeats: int, min_s: float = 0.1) -> float:
    """Seconds per call: the best of `repeats` rounds, each calling fn until min_s has passed (short calls
    are timed over many runs, so the timer's resolution and one-off hiccups do not dominate)."""
    best = float("inf")
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_s:
                break
        best = min(best, elapsed / calls)
    return best
