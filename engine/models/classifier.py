"""A GPT with a class head: the seed's spam classifier (engine.tasks.classify).

`score` (no bias, as HF's GPT2ForSequenceClassification) reads the final-LayerNorm'd hidden state of each
sequence's last real token: under causal attention only that position has seen the whole text, and right
padding after it changes nothing. The LM head stays (it is the tied embedding), so inspection still works.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import ModelConfig
from .gpt import GPT


class GPTClassifier(GPT):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.score = nn.Linear(config.n_embd, config.n_classes, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, labels: Tensor | None = None, last: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Class logits [B, n_classes] at position `last` [B] (default: the final one); with labels [B],
        the mean cross entropy."""
        x = self._embed(idx, 0)
        for block in self.transformer.h:
            x, _ = block(x)
        if last is None:
            last = torch.full((idx.size(0),), idx.size(1) - 1, device=idx.device)
        pooled = self.transformer.ln_f(x[torch.arange(idx.size(0), device=idx.device), last])
        logits = self.score(pooled)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return logits, loss
