"""Comparing two checkpoints head by head: the same prompt through two models of the same shape (a base
run and the run fine-tuned from it, two checkpoints of one run, fp32 and int8), and how much each
attention head's pattern changed.

A head's change is the mean, over query rows i >= 1, of the Jensen-Shannon distance between its two
attention rows A[i] and B[i] (row 0 can only attend to itself in both). The JS distance is the square
root of the JS divergence in bits: symmetric, 0 for identical rows, 1 for rows with disjoint support,
and a metric, so "how far apart" reads the same in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from .errors import ConfigError
from .inspection import Inspection, inspect_prompt


def js_distance(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) between distributions along `axis`."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> np.ndarray:  # KL(x || m); 0 log 0 = 0, and m > 0 wherever x > 0
        ratio = np.divide(x, m, out=np.ones_like(x), where=x > 0)
        return (x * np.log2(ratio)).sum(axis)

    return np.sqrt(np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0))


def row_distances(attn_a: np.ndarray, attn_b: np.ndarray) -> np.ndarray:
    """JS distance of every query row of every head: [L, H, T, T] x 2 -> [L, H, T] (row 0 is always 0)."""
    return js_distance(attn_a, attn_b, axis=-1)


def head_distances(rows: np.ndarray) -> np.ndarray:
    """Each head's change: the mean of its row distances [L, H, T] over query rows i >= 1 -> [L, H]
    (zeros for a one-token prompt, where nothing can differ)."""
    return rows[..., 1:].mean(-1) if rows.shape[-1] > 1 else np.zeros(rows.shape[:-1])


def rank_heads(distance: np.ndarray) -> list[tuple[int, int]]:
    """(layer, head) from the most changed to the least; ties keep layer-then-head order."""
    n_layers, n_heads = distance.shape
    order = np.argsort(-distance.reshape(-1), kind="stable")
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


@dataclass
class Comparison:
    """One prompt through checkpoints A and B: both inspections and each head's change."""

    a: Inspection
    b: Inspection
    label_a: str
    label_b: str
    rows: np.ndarray  # [L, H, T]: JS distance of each query row
    distance: np.ndarray  # [L, H]: mean over rows i >= 1
    ranking: list[tuple[int, int]]  # (layer, head), most changed first
    diff: np.ndarray  # [L, H, T, T]: A - B attention weights, in [-1, 1] (computed once, off the UI thread)

    def rank_of(self, layer: int, head: int) -> int:
        """0 for the most changed head."""
        return self.ranking.index((layer, head))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What an export keeps of the comparison, beside A's own arrays."""
        return {"attn_b": self.b.attn, "attn_diff": self.diff, "js_distance": self.distance, "js_rows": self.rows,
                "ranking": np.array(self.ranking, dtype=np.int64).reshape(-1, 2),
                "label_a": np.array(self.label_a), "label_b": np.array(self.label_b)}


def check_comparable(model_a: nn.Module, tokenizer_a: Any, model_b: nn.Module, tokenizer_b: Any,
                     label_a: str = "A", label_b: str = "B") -> None:
    """ConfigError, in one sentence, unless both models have attention heads in the same grid, the same
    block size and the same tokenizer (so one prompt is the same tokens, and head (l, h) means one thing)."""
    for model, label in ((model_a, label_a), (model_b, label_b)):
        if not hasattr(model, "lens_logits"):
            raise ConfigError(f"{label} is an LSTM, which has no attention heads to compare: pick two GPT checkpoints.")
    shape_a, shape_b = (_shape(m) for m in (model_a, model_b))
    if shape_a != shape_b:
        raise ConfigError(f"{label_a} and {label_b} differ in shape (layers x heads, block size: {_fmt(shape_a)} vs "
                          f"{_fmt(shape_b)}): compare checkpoints of one run, or a run with the one it was fine-tuned from.")
    if tokenizer_a.sha256() != tokenizer_b.sha256():
        raise ConfigError(f"{label_a} and {label_b} use different tokenizers, so one prompt is not the same tokens "
                          f"in both: compare runs that share a tokenizer.")


def compare_prompt(model_a: nn.Module, tokenizer_a: Any, model_b: nn.Module, tokenizer_b: Any, prompt: str,
                   label_a: str = "A", label_b: str = "B", top_k: int = 5) -> Comparison:
    """Inspect `prompt` with both models (see check_comparable) and measure each head's change."""
    check_comparable(model_a, tokenizer_a, model_b, tokenizer_b, label_a, label_b)
    a = inspect_prompt(model_a, tokenizer_a, prompt, top_k)
    b = inspect_prompt(model_b, tokenizer_b, prompt, top_k)
    rows = row_distances(a.attn, b.attn)
    distance = head_distances(rows)
    return Comparison(a, b, label_a, label_b, rows, distance, rank_heads(distance), a.attn - b.attn)


def _shape(model: nn.Module) -> tuple[int, int, int]:
    c = model.config
    return (c.n_layer, c.n_head, c.block_size)


def _fmt(shape: tuple[int, int, int]) -> str:
    return f"{shape[0]}x{shape[1]}, {shape[2]}"
