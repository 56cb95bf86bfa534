"""The int8 quantizer: QuantLinear within its rounding bound of nn.Linear, every Linear swapped, a trained
model's logits and perplexity kept, a lossless save/load round trip through safetensors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from engine import checkpoint as ckpt
from engine.config import ModelConfig, apply_overrides, preset
from engine.errors import CheckpointError, ConfigError
from engine.models import build_model
import engine.quantize as quantize
from engine.int8 import save_int8
from engine.quantize import _INT_MM_ROWS, INT8, QuantEmbedding, QuantLinear, measure_speed, quantize_model


def rounding_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Worst case |x w^T - q(x) q(w)^T| per output when each x row and w row is rounded to a grid of step
    s = max|row| / 127: x^ w^ - x w = x dw + w dx + dx dw with |dx| <= s_x / 2, |dw| <= s_w / 2."""
    s_x = x.abs().amax(1, keepdim=True) / 127  # [M, 1]
    s_w = w.abs().amax(1) / 127  # [N]
    k = x.size(1)
    return (x.abs().sum(1, keepdim=True) * s_w / 2 + s_x / 2 * w.abs().sum(1) + k * s_x * s_w / 4)


def weight_only_bound(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Worst case of the weight-only path: the int8 weight's rounding (|x| . s_w / 2) plus bf16's relative
    2^-9 on each activation and scale and 2^-9 on the output (the kernel accumulates in fp32)."""
    s_w = w.abs().amax(1) / 127
    return x.abs().sum(1, keepdim=True) * s_w / 2 + 2 * 2.0 ** -9 * (x.abs() @ w.abs().t()) + 2.0 ** -9 * y.abs()


@pytest.mark.parametrize("bias", [True, False])
def test_both_kernel_paths_are_within_their_bound_of_linear(bias):
    """A few rows (decode) take the weight-only bf16 kernel, more rows the per-token int8 _int_mm one; each
    stays within its worst-case rounding bound of the fp32 Linear and the bound is ~1% of the outputs."""
    torch.manual_seed(2)
    linear = nn.Linear(384, 1152, bias=bias)
    q = QuantLinear.from_linear(linear)
    w = linear.weight.detach()
    for rows in (1, quantize.WEIGHT_ONLY_MAX_ROWS, quantize.WEIGHT_ONLY_MAX_ROWS + 1, 64):
        x = torch.randn(rows, 384) * torch.linspace(0.1, 5, 384)
        with torch.no_grad():
            want, got = linear(x), q(x)
        err = (got - want).abs()
        weight_only = rows <= quantize.WEIGHT_ONLY_MAX_ROWS
        bound = weight_only_bound(x, w, want) if weight_only else rounding_bound(x, w)
        assert got.dtype == torch.float32
        assert torch.all(err <= bound + 1e-5), rows
        assert 0 < err.max() < 0.02 * want.abs().max(), rows
    # The weight-only path really is the bf16 kernel: its numbers differ from the int8 product's.
    x = torch.randn(1, 384)
    with torch.no_grad():
        few = q(x)
        many = q(x.expand(quantize.WEIGHT_ONLY_MAX_ROWS + 1, 384))[:1]
    assert not torch.equal(few, many)


@pytest.mark.parametrize("bias", [True, False])
def test_quant_linear_is_within_the_rounding_bound_of_linear(bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias)
    x = torch.randn(3, 7, 96) * torch.linspace(0.1, 5, 96)  # uneven channels, as real activations are
    q = QuantLinear.from_linear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.weight_scale.dtype == torch.float32
    with torch.no_grad():
        want, got = linear(x), q(x)
    assert got.shape == want.shape == (3, 7, 40)
    err = (got - want).reshape(-1, 40).abs()
    bound = rounding_bound(x.reshape(-1, 96), linear.weight.detach())
    assert torch.all(err <= bound + 1e-5)
    assert err.max() > 0  # it really ran in int8
    assert err.max() < 0.02 * want.abs().max()  # and the bound is not vacuous: ~1% of the output range


def test_padded_rows_and_the_dequantize_fallback_give_the_same_numbers(monkeypatch):
    torch.manual_seed(1)
    linear = nn.Linear(64, 24)
    q = QuantLinear.from_linear(linear)
    x = torch.randn(5, 64)
    with torch.no_grad():
        direct = q(x)
        key = (x.device.type, 64, 24)
        assert _INT_MM_ROWS[key] is not None  # this CPU has _int_mm (x86 and ARM torch builds both do)
        monkeypatch.setitem(_INT_MM_ROWS, key, 17)  # CUDA's rule: fewer than 17 rows are zero-padded
        assert torch.equal(q(x), direct)
        monkeypatch.setitem(_INT_MM_ROWS, key, None)  # no _int_mm: fp32 matmul of the dequantized weight
        fallback = q(x)
    torch.testing.assert_close(fallback, F.linear(x, q.dequantized_weight(), q.bias), rtol=1e-6, atol=1e-6)
    assert torch.all((fallback - linear(x)).abs() <= rounding_bound(x, linear.weight.detach()))


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_every_linear_is_swapped_and_the_tied_embedding_reads_the_int8_head(kind):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=50, n_layer=2, n_head=2, n_embd=32, block_size=16))
    fp32_head = model.lm_head.weight.detach().clone()
    quantize_model(model)
    assert not any(type(m) is nn.Linear for m in model.modules())
    wte = model.transformer.wte if kind == "gpt" else model.wte
    assert isinstance(wte, QuantEmbedding) and isinstance(model.lm_head, QuantLinear)
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    torch.testing.assert_close(wte(idx)[0], model.lm_head.dequantized_weight()[idx[0]])
    assert (model.lm_head.dequantized_weight() - fp32_head).abs().max() <= fp32_head.abs().max() / 254 + 1e-7
    sd = model.state_dict()
    assert not any(k.startswith(("transformer.wte", "wte")) for k in sd)  # stored once, as the head
    int8 = [k for k, v in sd.items() if v.dtype == torch.int8]
    assert "lm_head.weight_int8" in int8
    if kind == "lstm":
        assert isinstance(model.lstm, nn.LSTM)  # recurrent weights stay fp32 (fused kernel)
    else:
        assert len(int8) == 1 + 4 * 2  # head + c_attn, c_proj, c_fc, mlp c_proj per layer


# ---- a trained model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A small GPT trained by the real trainer on the first 100 KB of python-docs (char level)."""
    from engine import runs
    from engine.corpora import prepare_builtin
    from engine.trainer import train

    home = tmp_path_factory.mktemp("quant-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLGPT_HOME", str(home))
        text = prepare_builtin("python-docs").read_text(encoding="utf-8")[:100_000]
        (home / "docs.txt").write_text(text, encoding="utf-8")
        cfg = apply_overrides(preset("tiny"), {
            "model": dict(n_layer=2, n_head=2, n_embd=64, block_size=32),
            "data": dict(corpus=str(home / "docs.txt"), tokenizer_kind="char"),
            "train": dict(batch_size=16, max_steps=150, lr=3e-3, min_lr=3e-4, warmup_steps=10,
                          eval_interval=150, eval_batches=4, sample_tokens=0, log_interval=50)})
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small models train faster on one thread of a shared 2-core box
        try:
            summary = train(runs.create_run(cfg, name="trained"))
        finally:
            torch.set_num_threads(threads)
        assert summary["val_loss"] < 2.9  # it learned (uniform over ~100 characters would be 4.6)
        yield Path(summary["run_dir"])


@pytest.mark.slow
def test_trained_model_keeps_its_logits_and_perplexity(trained_run, monkeypatch):
    from engine.evaluate import evaluate_model

    monkeypatch.setenv("SMALLGPT_HOME", str(trained_run.parent.parent))
    model, cfg, tokenizer = ckpt.load_model(trained_run, "best")
    qmodel = quantize_model(copy.deepcopy(model))
    text = "The return statement leaves the current function call with the expression list."
    idx = torch.tensor([tokenizer.encode(text)[: cfg.model.block_size]])
    with torch.no_grad():
        want, _ = model(idx)
        got, _ = qmodel(idx)
    # Bound: int8 logits within 0.1 of fp32 (measured ~0.03 on this model, whose logits span ~20),
    # and the same most likely next character at nearly every position.
    assert (got - want).abs().max() < 0.1
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.95
    fp32 = evaluate_model(model, cfg, tokenizer, max_tokens=1 << 13)
    int8 = evaluate_model(qmodel, cfg, tokenizer, max_tokens=1 << 13)
    print(f"max |logit diff| {(got - want).abs().max():.4f}, perplexity fp32 {fp32['perplexity']:.4f} "
          f"int8 {int8['perplexity']:.4f}")
    assert abs(int8["perplexity"] / fp32["perplexity"] - 1) < 0.02


@pytest.mark.slow
def test_save_load_round_trip_and_report(trained_run, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setenv("SMALLGPT_HOME", str(trained_run.parent.parent))
    with pytest.raises(CheckpointError, match="smallgpt quantize"):
        ckpt.load_model(trained_run, INT8)
    steps = []
    report = save_int8(trained_run, eval_tokens=1 << 12, progress=lambda f, label: steps.append(f),
                       decode_tokens=8, repeats=1)
    assert steps[0] == 0.0 and steps[-1] == 1.0 and steps == sorted(steps)
    assert report["int8_bytes"] < 0.45 * report["fp32_bytes"]  # small model: wpe and LayerNorms stay fp32
    assert report["int_mm"] is True
    assert abs(report["perplexity_delta"]) < 0.02
    for key in ("fp32_prefill_tokens_per_s", "int8_prefill_tokens_per_s", "fp32_decode_tokens_per_s",
                "int8_decode_tokens_per_s"):
        assert report[key] > 0
    path = trained_run / "ckpt" / INT8
    state = json.loads((path / "state.json").read_text())
    assert state["source"] == "best" and state["step"] == 150 and "lm_head" in state["quantized"]
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["lm_head.weight_int8"] == "I8" and dtypes["lm_head.weight_scale"] == "F32"

    fp32_model, cfg, tokenizer = ckpt.load_model(trained_run, "best")
    loaded, _, _ = ckpt.load_model(trained_run, INT8)
    idx = torch.tensor([tokenizer.encode("def f(x):\n    return x")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], quantize_model(fp32_model)(idx)[0], rtol=0, atol=0)


@pytest.mark.slow
def test_int8_generates_with_the_kv_cache_like_its_full_forward(trained_run, monkeypatch):
    """Decoding token by token through the cache gives the logits of one full forward (int8 layers have
    no hidden state), and measure_speed times both paths."""
    monkeypatch.setenv("SMALLGPT_HOME", str(trained_run.parent.parent))
    model, cfg, tokenizer = ckpt.load_model(trained_run, "best")
    qmodel = quantize_model(model)
    idx = torch.tensor([tokenizer.encode("import os\nimport sys\n")[:20]])

    def decode_and_full() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            full, _ = qmodel(idx)
            state = qmodel.init_state(1)
            steps = []
            for t in range(idx.size(1)):
                logits, state = qmodel.step(idx[:, t:t + 1], state)
                steps.append(logits)
        return torch.cat(steps, 1), full

    # Both through _int_mm: per-token activation scales are the same either way, only the fp32 summation
    # order differs.
    with monkeypatch.context() as m:
        m.setattr(quantize, "WEIGHT_ONLY_MAX_ROWS", 0)
        steps, full = decode_and_full()
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)
    # The default hybrid decodes one token at a time on the bf16 weight-only kernel: bf16 rounding apart
    # (the kernel-path test bounds it per layer), the same logits and the same greedy tokens.
    steps, full = decode_and_full()
    # A few bf16 steps of the largest logit (how many depends on the trained weights, which float rounding
    # in training moves); a wrong cache is off by whole logits.
    bound = 8 * 2 ** -8 * full.abs().max()
    assert (steps - full).abs().max() < bound
    # The same greedy token wherever the full forward's best two logits are further apart than that.
    best = full.topk(2, dim=-1).values
    clear = best[..., 0] - best[..., 1] > 2 * bound
    assert clear.sum() >= idx.size(1) // 2
    assert torch.equal(steps.argmax(-1)[clear], full.argmax(-1)[clear])
    speed = measure_speed(qmodel, prefill_tokens=16, decode_tokens=8, repeats=1)
    assert speed["prefill_tokens_per_s"] > 0 and speed["decode_tokens_per_s"] > 0


@pytest.mark.slow
def test_a_mismatched_int8_checkpoint_is_refused(trained_run, tmp_path, monkeypatch):
    """An int8 checkpoint whose config no longer matches the run's config.toml names the changed field."""
    monkeypatch.setenv("SMALLGPT_HOME", str(tmp_path))
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    if not (run / "ckpt" / INT8).is_dir():
        save_int8(run, eval_tokens=1 << 10, decode_tokens=4, repeats=1)
    cfg_text = (run / "config.toml").read_text().replace("n_embd = 64", "n_embd = 32")
    (run / "config.toml").write_text(cfg_text)
    with pytest.raises(ConfigError, match=r"n_embd 64 -> 32"):
        ckpt.load_model(run, INT8)
