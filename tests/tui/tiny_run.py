"""A tiny, deterministic run for the Generate/Inspect tests: a seed-initialised GPT (or LSTM) saved with the
checkpoint module, a char tokenizer trained on a fixed text. Same seed, same weights, same screens."""

from __future__ import annotations

from pathlib import Path

CORPUS = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n" * 8)


def make_tiny_run(home: Path, name: str = "tiny", kind: str = "gpt", seed: int = 0) -> Path:
    import torch

    from engine import checkpoint
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.models import build_model
    from engine.runs import create_run

    corpus = home / "corpora" / "tiny.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text(CORPUS)
    model_cfg = (ModelConfig(kind="gpt", n_layer=2, n_head=2, n_embd=32, block_size=32) if kind == "gpt"
                 else ModelConfig(kind="lstm", n_layer=2, n_head=1, n_embd=24, block_size=32))
    cfg = RunConfig(model=model_cfg, data=DataConfig(corpus=str(corpus), tokenizer_kind="char"),
                    train=TrainConfig(max_steps=10, batch_size=4, eval_interval=5))
    run_dir = create_run(cfg, name=name)
    cfg = RunConfig.load(run_dir / "config.toml")  # vocab_size now set from the tokenizer
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    state = {"step": 0, "model_config": cfg.to_dict()["model"]}
    checkpoint.save_checkpoint(run_dir, "latest", model, None, state)
    checkpoint.save_checkpoint(run_dir, "best", model, None, state)
    return run_dir
