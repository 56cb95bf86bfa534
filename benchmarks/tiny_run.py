"""A tiny, deterministic run for the Generate/Inspect tests and benchmarks/ui_generate.py: a seed-initialised
GPT (or LSTM) saved with the checkpoint module, a char tokenizer trained on a fixed text. Same seed, same
weights, same screens.

An untrained model picks end-of-text about once in vocab_size tokens, which would end every stream after a
few dozen tokens; the tests need streams as long as they ask for, so the EOS logit is pushed far down
(through the final LayerNorm's bias for the tied GPT head, along a direction no other token's embedding
sees, so every other logit is unchanged; through the head's bias for the LSTM)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

CORPUS = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n" * 8)


def make_tiny_run(home: Path, name: str = "tiny", kind: str = "gpt", seed: int = 0,
                  model: dict | None = None) -> Path:
    """A run under home/checkpoints/name; `model` overrides ModelConfig fields (n_embd must exceed the
    char vocab, 18, for the EOS trick)."""
    import torch

    from engine import checkpoint
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.models import build_model
    from engine.rundir import RunDir
    from engine.runs import create_run
    from engine.tokenizer import Tokenizer

    corpus = home / "corpora" / "tiny.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text(CORPUS)
    model_cfg = (ModelConfig(kind="gpt", n_layer=2, n_head=2, n_embd=32, block_size=32) if kind == "gpt"
                 else ModelConfig(kind="lstm", n_layer=2, n_head=1, n_embd=24, block_size=32))
    if model:
        model_cfg = replace(model_cfg, **model)
    cfg = RunConfig(model=model_cfg, data=DataConfig(corpus=str(corpus), tokenizer_kind="char"),
                    train=TrainConfig(max_steps=10, batch_size=4, eval_interval=5))
    run_dir = create_run(cfg, name=name)
    cfg = RunConfig.load(RunDir(run_dir).config)  # vocab_size now set from the tokenizer
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    eos = Tokenizer.load(RunDir(run_dir).tokenizer).eos_id
    with torch.no_grad():
        if kind == "gpt":  # logits = ln_f(x) @ W.T; the vocab (18) is smaller than n_embd (32)
            weights = model.lm_head.weight
            others = torch.cat([weights[:eos], weights[eos + 1:]])
            w = weights[eos]
            d = w - others.T @ (torch.linalg.pinv(others.T) @ w)  # w minus its part in the others' span
            model.transformer.ln_f.bias -= 30.0 * d / d.dot(w)
        else:
            model.lm_head.bias[eos] -= 30.0
    state = {"step": 0, "model_config": cfg.to_dict()["model"]}
    checkpoint.save_checkpoint(run_dir, "latest", model, None, state)
    checkpoint.save_checkpoint(run_dir, "best", model, None, state)
    return run_dir
