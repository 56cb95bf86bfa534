"""GPT language model in one readable file, after nanoGPT.

Token + learned position embeddings, n_layer pre-LN blocks (causal self-attention, GELU MLP), a final
LayerNorm and an output head tied to the token embedding. Module names follow nanoGPT/GPT-2
(transformer.wte, transformer.h.0.attn.c_attn, ...) so GPT-2 shaped weights map one to one.
ModelConfig's options beyond GPT-2 (the GPT-2 speedruns' choices): rotary positions instead of learned
ones, RMS-normalised queries and keys, ReLU² MLPs, an untied head, zero-initialised residual projections,
tanh soft-capped logits.

Three ways through the same weights:
- `model(idx, targets)`: training and evaluation, attention by `scaled_dot_product_attention`.
- `init_state` / `step`: generation with a preallocated KV cache, one forward per new token.
- `forward_inspect`: an explicit softmax path that returns every layer's attention weights and the
  residual stream after every block (SDPA returns no weights).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn import functional as F

from ..config import ModelConfig
from ..errors import ConfigError


def _rotary_tables(head_dim: int, length: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin [length, head_dim / 2] of RoPE's angles: position p turns the pair (i, i + head_dim / 2)
    by p / base^(2i / head_dim)."""
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


class _NormRotate(torch.autograd.Function):
    """RoPE of x [..., hd] by the angles of cos and sin [..., hd / 2] (`_rotary_tables`), after an RMS norm
    over hd when `norm`, in fp32 at least. The backward is written by hand because autograd's makes about
    twice the passes over x (docs/PERFORMANCE.md)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor, norm: bool) -> Tensor:
        dtype, half = x.dtype, x.size(-1) // 2
        x = x.to(torch.promote_types(dtype, torch.float32))
        r = None
        if norm:
            r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1))
            r = r.add_(torch.finfo(x.dtype).eps).rsqrt_()  # fp32's eps for bf16 too: a bf16 decode matches fp32
            x = x * r
        x1, x2 = x[..., :half], x[..., half:]
        out = torch.empty_like(x)  # (x1 cos - x2 sin, x2 cos + x1 sin)
        torch.mul(x1, cos, out=out[..., :half]).addcmul_(x2, sin, value=-1)
        torch.mul(x2, cos, out=out[..., half:]).addcmul_(x1, sin)
        ctx.save_for_backward(x, r, cos, sin)
        return out.to(dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        n, r, cos, sin = ctx.saved_tensors
        dtype, half = g.dtype, g.size(-1) // 2
        g = g.to(n.dtype)
        g1, g2 = g[..., :half], g[..., half:]
        gn = torch.empty_like(n)  # the rotation's transpose: (g1 cos + g2 sin, g2 cos - g1 sin)
        torch.mul(g1, cos, out=gn[..., :half]).addcmul_(g2, sin)
        torch.mul(g2, cos, out=gn[..., half:]).addcmul_(g1, sin, value=-1)
        if r is not None:  # through n = x * r, r = 1 / rms(x): r * (gn - n * mean(gn * n))
            dot = torch.linalg.vecdot(gn, n, dim=-1).unsqueeze(-1).div_(n.size(-1))
            gn = gn.addcmul_(n, dot, value=-1).mul_(r)
        return gn.to(dtype), None, None, None


def _causal_mask(t: int, start: int, device: torch.device) -> Tensor:
    """[t, start + t] bool mask: query i sits at position start + i and sees keys 0 .. start + i."""
    return torch.ones(t, start + t, dtype=torch.bool, device=device).tril(diagonal=start)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.qk_norm = config.qk_norm
        self.rotary = config.positions == "rotary"
        if self.rotary:  # derived tables, not weights: never saved
            cos, sin = _rotary_tables(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

    def _rotate(self, x: Tensor, start: int | Tensor, norm: bool = False) -> Tensor:
        """RoPE on x [B, T, heads, hd] at positions start.. (or one position per row, T == 1), after an RMS
        norm of each head's vector when `norm`."""
        if isinstance(start, Tensor):
            cos, sin = self.cos[start].view(-1, 1, 1, self.cos.size(1)), self.sin[start].view(-1, 1, 1, self.sin.size(1))
        else:
            cos, sin = self.cos[start:start + x.size(1)].unsqueeze(1), self.sin[start:start + x.size(1)].unsqueeze(1)
        return _NormRotate.apply(x, cos, sin, norm)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int | Tensor = 0,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """start: the position of x's first token, or a [B] tensor of one position per row (T == 1)."""
        B, T, C = x.shape
        per_row = isinstance(start, Tensor)
        qkv = self.c_attn(x)
        # Under CPU bf16 autocast attention runs in fp32 (the CPU flash kernel's bf16 backward is several
        # times slower than its fp32 one), the matmuls around it in bf16; one cast of qkv, not three.
        fp32_attention = not per_row and start == 0 and not need_weights and qkv.dtype == torch.bfloat16 and x.device.type == "cpu"
        if fp32_attention:
            qkv = qkv.float()
        hd = C // self.n_head
        # Queries and keys as one [B, T, 2 * nh, hd] view: one norm and one rotation for both.
        qk, v = qkv.view(B, T, 3 * self.n_head, hd).split(2 * self.n_head, dim=2)
        if self.rotary:
            qk = self._rotate(qk, start, norm=self.qk_norm)
        elif self.qk_norm:
            qk = F.rms_norm(qk, (hd,), eps=torch.finfo(torch.float32).eps).type_as(v)
        q, k = qk.transpose(1, 2).split(self.n_head, dim=1)  # (B, nh, T, hd)
        v = v.transpose(1, 2)
        mask = None
        if per_row:
            # Rows of unrelated sequences (batched serving), row b's token at position start[b]: store each
            # row's key/value there; each row sees its own keys only (a shorter row masks the rest).
            rows = torch.arange(B, device=x.device)
            kv[0][rows, :, start] = k[:, :, 0]
            kv[1][rows, :, start] = v[:, :, 0]
            end = int(start.max()) + 1
            mask = (torch.arange(end, device=x.device) <= start[:, None]).view(B, 1, 1, end)
            k, v = kv[0][:, :, :end], kv[1][:, :, :end]
        elif kv is not None:
            # Generation: store this chunk's keys/values, then attend over everything the cache holds.
            end = start + T
            kv[0][:, :, start:end] = k
            kv[1][:, :, start:end] = v
            k, v = kv[0][:, :, :end], kv[1][:, :, :end]

        dropout = self.dropout if self.training else 0.0
        att = None
        if need_weights:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(~_causal_mask(T, start, x.device), float("-inf"))
            att = F.softmax(att, dim=-1)
            y = F.dropout(att, dropout, self.training) @ v
        elif per_row:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif fp32_attention:
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True).to(torch.bfloat16)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:
            # One new token after the cache may see every cached key: no mask at all.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            # A chunk after cached tokens: is_causal would align the triangle top-left, so spell it out.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_mask(T, start, x.device),
                                               dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), att


class ReLUSquared(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.c_fc = Linear(config.n_embd, hidden, bias=config.bias)
        self.act = (ReLUSquared() if config.activation == "relu2"
                    else nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none"))
        self.c_proj = Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int | Tensor = 0,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        a, att = self.attn(self.ln_1(x), kv, start, need_weights)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, att


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ConfigError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head}): "
                              f"pick a width that is a multiple of the head count.")
        self.config = config
        # The KV cache holds at most block_size tokens; the sampler slides its window past that.
        self.max_state_len: int | None = config.block_size
        # wpe right after wte, as always: the seeded initialisation draws in this order.
        modules: dict[str, nn.Module] = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.positions == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(dict(
            **modules,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_head:
            self.transformer.wte.weight = self.lm_head.weight
        # Positions as a buffer, so a decode step slices instead of allocating; not saved with the weights.
        self.register_buffer("positions", torch.arange(config.block_size), persistent=False)

        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer), each block adding two to the stream.
        # zero_init: each block starts as the identity and an untied head predicts uniformly.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or (name == "lm_head.weight" and not config.tie_head):
                if config.zero_init:
                    nn.init.zeros_(p)
                elif name != "lm_head.weight":
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _embed(self, idx: Tensor, start: int | Tensor) -> Tensor:
        """Token embeddings plus learned position embeddings (rotary positions act in attention instead)."""
        if isinstance(start, Tensor):  # one token per row, each at its own position
            if bool((start >= self.config.block_size).any()):
                raise ValueError(f"A position exceeds block_size {self.config.block_size}: slide that row's window.")
            positions = start.view(-1, 1)
        else:
            end = start + idx.size(1)
            if end > self.config.block_size:
                raise ValueError(f"Positions up to {end} exceed block_size {self.config.block_size}: "
                                 f"feed at most block_size tokens (the sampler slides its window).")
            positions = self.positions[start:end]
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(positions)
        return self.transformer.drop(x)

    def lens_logits(self, residual: Tensor) -> Tensor:
        """Final LayerNorm + head (+ soft cap): the model's output layer, applicable to any layer's residual."""
        logits = self.lm_head(self.transformer.ln_f(residual))
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits [B, T, V] at every position; with targets [B, T], the mean cross entropy (-1 ignored)."""
        x = self._embed(idx, 0)
        for block in self.transformer.h:
            x, _ = block(x)
        logits = self.lens_logits(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def init_state(self, batch_size: int) -> KVCache:
        """An empty KV cache for batch_size sequences."""
        c = self.config
        w = self.transformer.wte.weight
        shape = (batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        return KVCache(k=[torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in range(c.n_layer)],
                       v=[torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in range(c.n_layer)])

    def step(self, idx: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        """Feed new tokens idx [B, T] after the state.length cached ones: logits [B, T, V] for them.

        Prefill a prompt with T > 1, then decode with T == 1. The cache is updated in place.
        """
        start = state.length
        if idx.size(0) != state.k[0].size(0):
            raise ValueError(f"Batch of {idx.size(0)} does not match the cache's {state.k[0].size(0)}.")
        one_token_cpu = idx.size(1) == 1 and idx.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
        with cpu_decode(state) if one_token_cpu else nullcontext():
            x = self._embed(idx, start)
            for block, k, v in zip(self.transformer.h, state.k, state.v):
                x, _ = block(x, (k, v), start)
            logits = self.lens_logits(x)
        state.length = start + idx.size(1)
        return logits, state

    def state_len(self, state: KVCache) -> int:
        return state.length

    # Continuous batching (engine.batching): the rows of one cache hold unrelated sequences of their own
    # lengths, which the caller keeps; state.length is unused.

    def prefill_row(self, idx: Tensor, state: KVCache, row: int) -> Tensor:
        """Feed idx [1, T] into row `row` of a batch cache from position 0: logits [T, V]."""
        view = KVCache(k=[k[row:row + 1] for k in state.k], v=[v[row:row + 1] for v in state.v],
                       transposed=state.transposed)
        return self.step(idx, view)[0][0]

    def step_rows(self, idx: Tensor, state: KVCache, positions: Tensor) -> Tensor:
        """One token idx[i] for each of the first n rows of a batch cache, row i at position positions[i]:
        logits [n, V]. Each row attends over its own cached keys only."""
        n = idx.size(0)
        one_token_cpu = idx.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
        with cpu_decode(state) if one_token_cpu else nullcontext():
            x = self._embed(idx.view(n, 1), positions)
            for block, k, v in zip(self.transformer.h, state.k, state.v):
                x, _ = block(x, (k[:n], v[:n]), positions)
            return self.lens_logits(x)[:, 0]

    @staticmethod
    def move_row(state: KVCache, src: int, dst: int, length: int) -> None:
        """Copy row src's first `length` cached positions into row dst."""
        for t in (*state.k, *state.v):
            t[dst, :, :length] = t[src, :, :length]

    def forward_inspect(self, idx: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """(logits [B,T,V], attention [B,H,T,T] per layer, residual stream [B,T,C] after the embedding
        and after each block: n_layer + 1 entries). `lens_logits(residuals[-1])` equals the logits."""
        x = self._embed(idx, 0)
        attn: list[Tensor] = []
        residuals = [x]
        for block in self.transformer.h:
            x, att = block(x, need_weights=True)
            attn.append(att)
            residuals.append(x)
        return self.lens_logits(x), attn, residuals


# --- the KV cache and the CPU decode seam ---------------------------------------------------------
@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far.

    Preallocated to block_size so a decode step writes in place instead of concatenating; `length`
    tokens are valid. `GPT.step` updates it in place and returns it.
    """

    k: list[Tensor]  # per layer [B, n_head, block_size, head_dim]
    v: list[Tensor]
    length: int = 0
    transposed: dict[nn.Module, Tensor] = field(default_factory=dict)  # [in, out] weight copies: see `Linear`


# Why: a one-token step on a CPU is a chain of matrix-vector products bound by reading the weights, and
# MKL's fp32 GEMV streams a wide Linear's weight about twice as fast from an [in, out] copy (long rows) as
# from the stored [out, in] layout (short rows). Inside `cpu_decode(cache)` every fp32 `Linear` wider out
# than in multiplies by such a copy, made once per KV cache; everywhere else `Linear` is nn.Linear (and
# the quantizer swaps it like one). With several rows (batched serving, x [B, 1, in]) every Linear does:
# for B = 4 the [in, out] product took 200-285 us against 290-355 for nn.Linear (384 -> 1536), 208 against
# 330 (1536 -> 384).
# From 768-wide rows the gain is 13% (GPT-2's blocks: 11.8 against 13.6 GB/s, one thread) for copies as
# large as the weights (198 MB at 124M), so there only a vocabulary head 8+ times taller than wide gets one.
_gemv_weights: ContextVar[dict[nn.Module, Tensor] | None] = ContextVar("gemv_weights", default=None)


@contextmanager
def cpu_decode(cache: KVCache) -> Iterator[None]:
    token = _gemv_weights.set(cache.transposed)
    try:
        yield
    finally:
        _gemv_weights.reset(token)


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        copies = _gemv_weights.get()
        if (copies is None or self.weight.dtype != torch.float32
                or (self.in_features >= 768 and self.out_features < 8 * self.in_features)
                or (self.out_features <= self.in_features and x.size(0) == 1)):
            return F.linear(x, self.weight, self.bias)
        w_t = copies.get(self)
        if w_t is None:
            w_t = copies[self] = self.weight.t().contiguous()
        y = x @ w_t
        return y if self.bias is None else y + self.bias
