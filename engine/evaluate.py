"""Validation loss and perplexity of a model or of a run's checkpoint, over the run's validation split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_model
from .config import RunConfig
from .events import sanitize
from .tasks import make_task

EVAL_MAX_TOKENS = 1 << 18  # enough for a stable loss, a few seconds on a CPU for the small presets


def evaluate_run(run_dir: Path, which: str = "best", max_tokens: int = EVAL_MAX_TOKENS,
                 device: str = "cpu") -> dict[str, Any]:
    """Validation loss and perplexity of a run's checkpoint ("latest", "best" or "int8")."""
    model, cfg, tokenizer = load_model(run_dir, which, device)
    return evaluate_model(model, cfg, tokenizer, max_tokens, device)


@torch.no_grad()
def evaluate_model(model: nn.Module, cfg: RunConfig, tokenizer: Any, max_tokens: int = EVAL_MAX_TOKENS,
                   device: str = "cpu") -> dict[str, Any]:
    """Mean loss over the task's validation split in order (lm: consecutive windows, up to max_tokens
    predicted tokens), in fp32 so fp32 and int8 models compare like for like: {"val_loss", "perplexity",
    "tokens"} and the task's eval metrics (a classifier's val_accuracy)."""
    task = make_task(cfg, tokenizer)
    model.eval()
    total, count = 0.0, 0
    for batch in task.val_batches(cfg.train.batch_size):
        _, loss = model(*[b.to(device) for b in batch])
        n = int((batch[1] != -1).sum())  # predicted tokens (lm, instruct) or labelled texts (classify)
        total += loss.item() * n
        count += n
        if count >= max_tokens:
            break
    val_loss = total / count
    return {"val_loss": val_loss, "perplexity": sanitize(math.exp(min(val_loss, 700.0))), "tokens": count,
            **task.eval_fields(model)}
