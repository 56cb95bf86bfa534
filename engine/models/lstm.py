"""LSTM language model: embedding, n_layer LSTM, dropout, output head tied to the embedding.

The hidden size equals n_embd, so the head can always share the embedding matrix (Press & Wolf, 2017).
Generation carries (h, c) between calls, so each new token costs one LSTM step however long the text.
Same interface as GPT: `model(idx, targets)`, `init_state`, `step`, `state_len`, `forward_inspect`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor
from torch.nn import functional as F

from ..config import ModelConfig


@dataclass
class LSTMState:
    hc: tuple[Tensor, Tensor] | None  # (h, c), each [n_layer, B, n_embd]; None before the first token
    length: int = 0  # tokens consumed


class LSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # (h, c) summarise any length of context: no window to slide.
        self.max_state_len: int | None = None
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.n_embd, config.n_embd, num_layers=config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        self.lm_head.weight = self.wte.weight
        # nn.Embedding's default N(0, 1) through a tied head gives logits of std ~sqrt(n_embd): start small,
        # as PyTorch's word_language_model example does.
        nn.init.uniform_(self.wte.weight, -0.1, 0.1)
        if self.lm_head.bias is not None:
            nn.init.zeros_(self.lm_head.bias)

    def _run(self, idx: Tensor, hc: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        hidden, hc = self.lstm(self.drop(self.wte(idx)), hc)
        return self.lm_head(self.drop(hidden)), hidden, hc

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits [B, T, V] from a zero state; with targets [B, T], the mean cross entropy (-1 ignored)."""
        logits, _, _ = self._run(idx, None)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def init_state(self, batch_size: int) -> LSTMState:
        """The zero state of batch_size sequences."""
        w = self.wte.weight
        shape = (self.config.n_layer, batch_size, self.config.n_embd)
        return LSTMState(hc=(w.new_zeros(shape), w.new_zeros(shape)))

    def step(self, idx: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """Feed new tokens idx [B, T] after the state: logits [B, T, V] and a new state (use the returned one)."""
        logits, _, hc = self._run(idx, state.hc)
        return logits, LSTMState(hc=hc, length=state.length + idx.size(1))

    def state_len(self, state: LSTMState) -> int:
        return state.length

    # Continuous batching (engine.batching): the rows of one state hold unrelated sequences.

    def prefill_row(self, idx: Tensor, state: LSTMState, row: int) -> Tensor:
        """Feed idx [1, T] into row `row` of a batch state from a zero state: logits [T, V]."""
        logits, _, (h, c) = self._run(idx, None)
        state.hc[0][:, row], state.hc[1][:, row] = h[:, 0], c[:, 0]
        return logits[0]

    def step_rows(self, idx: Tensor, state: LSTMState, positions: Tensor) -> Tensor:
        """One token idx[i] for each of the first n rows of a batch state (positions unused): logits [n, V]."""
        n = idx.size(0)
        h, c = state.hc
        logits, _, (h_new, c_new) = self._run(idx.view(n, 1), (h[:, :n].contiguous(), c[:, :n].contiguous()))
        h[:, :n], c[:, :n] = h_new, c_new
        return logits[:, 0]

    @staticmethod
    def move_row(state: LSTMState, src: int, dst: int, length: int) -> None:
        """Copy row src's state into row dst."""
        for t in state.hc:
            t[:, dst] = t[:, src]

    def forward_inspect(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(logits [B, T, V], the last layer's hidden state h_t at every position [B, T, n_embd])."""
        logits, hidden, _ = self._run(idx, None)
        return logits, hidden
