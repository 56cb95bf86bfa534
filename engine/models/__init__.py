"""Language models: GPT and LSTM behind one interface (see docs/ARCHITECTURE.md, engine.models)."""

from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from .classifier import GPTClassifier
from .gpt import GPT, KVCache
from .lstm import LSTM, LSTMState

__all__ = ["GPT", "LSTM", "KVCache", "LSTMState", "build_model", "count_params"]


def build_model(cfg: ModelConfig) -> GPT | LSTM:
    """A freshly initialised model of cfg.kind (on the current default device); a GPTClassifier when
    cfg.n_classes > 0."""
    if cfg.vocab_size < 1:
        raise ConfigError(f"model.vocab_size must be positive (got {cfg.vocab_size}): "
                          f"set it from the tokenizer before building the model.")
    if cfg.kind == "gpt":
        if cfg.n_classes:
            return GPTClassifier(cfg)
        return GPT(cfg)
    if cfg.kind == "lstm":
        return LSTM(cfg)
    raise ConfigError(f"model.kind must be one of gpt, lstm (got '{cfg.kind}').")


def count_params(model: nn.Module) -> dict[str, int]:
    """{"total", "non_embedding"}: tied weights counted once; non-embedding leaves out the position
    embeddings only, as nanoGPT reports (the token embedding is also the output head)."""
    total = sum(p.numel() for p in model.parameters())
    positions = model.transformer.wpe.weight.numel() if isinstance(model, GPT) and "wpe" in model.transformer else 0
    return {"total": total, "non_embedding": total - positions}
