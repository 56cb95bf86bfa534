"""Validation loss and perplexity of a model or of a run's checkpoint, over the run's validation split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_model
from .config import RunConfig
from .corpora import load_corpus
from .dataset import TokenDataset, prepare_dataset
from .errors import ConfigError
from .events import sanitize

EVAL_MAX_TOKENS = 1 << 18  # enough for a stable loss, a few seconds on a CPU for the small presets


def evaluate_run(run_dir: Path, which: str = "best", max_tokens: int = EVAL_MAX_TOKENS,
                 device: str = "cpu") -> dict[str, Any]:
    """Validation loss and perplexity of a run's checkpoint ("latest", "best" or "int8")."""
    model, cfg, tokenizer = load_model(run_dir, which, device)
    return evaluate_model(model, cfg, tokenizer, max_tokens, device)


@torch.no_grad()
def evaluate_model(model: nn.Module, cfg: RunConfig, tokenizer: Any, max_tokens: int = EVAL_MAX_TOKENS,
                   device: str = "cpu") -> dict[str, Any]:
    """Mean loss over consecutive windows of the validation split (up to max_tokens predicted tokens),
    in fp32 so fp32 and int8 models compare like for like: {"val_loss", "perplexity", "tokens"}."""
    val = TokenDataset(prepare_dataset(load_corpus(cfg.data.corpus), tokenizer, val_ratio=cfg.data.val_ratio), "val")
    if len(val) < 2:
        raise ConfigError(f"The validation split of {cfg.data.corpus} has {len(val)} tokens: use a bigger corpus.")
    model.eval()
    total, count = 0.0, 0
    for x, y in val.iter_windows(cfg.model.block_size, cfg.train.batch_size):
        _, loss = model(x.to(device), y.to(device))
        n = int((y != -1).sum())
        total += loss.item() * n
        count += n
        if count >= max_tokens:
            break
    val_loss = total / count
    return {"val_loss": val_loss, "perplexity": sanitize(math.exp(min(val_loss, 700.0))), "tokens": count}
