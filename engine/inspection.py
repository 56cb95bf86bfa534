"""Looking inside a model: attention maps, head metrics and badges, next-token top-k, logit lens.

Head metrics (each a mean over query positions i >= 1 of an attention matrix A [T, T], rows summing to 1;
row 0 can only attend to itself and says nothing):
- entropy: row entropy divided by its maximum log(i + 1): 0 = one key, 1 = uniform over the past;
- prev_token: A[i, i-1], the weight on the token just before;
- sink: A[i, 0], the weight on the first token (heads "park" attention there when nothing matches);
- distance: sum_j A[i, j] * (i - j), how far back the head looks, in tokens;
- induction: measured on its own probe, a random token sequence r (length n) followed by r again:
  the mean of A[i, i - n + 1] over the second copy, the weight on the token that followed the previous
  occurrence of the current token (what an induction head copies forward).

Badges, the first that applies (a clean mechanism scores near 1 on its metric, a head that is a mix
stays under the bars; induction first because an induction head also puts weight on recent tokens):
  I  induction >= 0.4     P  prev_token >= 0.5     S  sink >= 0.5     D  entropy >= 0.8     (blank otherwise)
A uniform head (every head at initialization) has entropy 1 and sink mean(1/(i+1)): it reads D, never S.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .errors import TokenizerError

BADGE_THRESHOLDS: dict[str, tuple[str, float]] = {  # badge -> (metric, minimum), in priority order
    "I": ("induction", 0.4),
    "P": ("prev_token", 0.5),
    "S": ("sink", 0.5),
    "D": ("entropy", 0.8),
}
INDUCTION_LEN = 32  # n: the probe is 2n tokens (shorter when the block size is smaller)
INDUCTION_SEED = 0


@dataclass
class HeadMetrics:
    layer: int
    head: int
    entropy: float
    prev_token: float
    sink: float
    distance: float
    induction: float

    @property
    def badge(self) -> str:
        return badge(self)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: _num(v) for k, v in asdict(self).items()}, "badge": self.badge}


def badge(m: HeadMetrics) -> str:
    """One letter for what the head mostly does (see the module docstring), or "" for none."""
    for letter, (metric, minimum) in BADGE_THRESHOLDS.items():
        value = getattr(m, metric)
        if not math.isnan(value) and value >= minimum:
            return letter
    return ""


# --- metrics on attention arrays ----------------------------------------------------------------------
def attention_metrics(attn: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head entropy, prev_token, sink and distance of attn [H, T, T] (or [T, T]): arrays of [H].

    With fewer than two positions there is nothing to measure: NaN.
    """
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    h, t, _ = a.shape
    if t < 2:
        nan = np.full(h, np.nan)
        return {"entropy": nan, "prev_token": nan.copy(), "sink": nan.copy(), "distance": nan.copy()}
    rows = a[:, 1:, :]  # queries i = 1 .. T-1
    i = np.arange(1, t)
    plogp = np.where(rows > 0, rows * np.log(np.where(rows > 0, rows, 1.0)), 0.0)
    entropy = (-plogp.sum(-1) / np.log(i + 1)).mean(-1)
    prev = a[:, i, i - 1].mean(-1)
    sink = rows[:, :, 0].mean(-1)
    back = i[:, None] - np.arange(t)[None, :]  # i - j, negative above the diagonal where A is 0
    distance = (rows * np.clip(back, 0, None)).sum(-1).mean(-1)
    return {"entropy": entropy, "prev_token": prev, "sink": sink, "distance": distance}


def induction_scores(attn: np.ndarray, n: int) -> np.ndarray:
    """Per-head induction score of attn [H, 2n, 2n] (or [2n, 2n]) on a sequence r + r with len(r) = n."""
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    i = np.arange(n, 2 * n)
    return a[:, i, i - n + 1].mean(-1)


def induction_probe(vocab_size: int, n: int, seed: int = INDUCTION_SEED) -> torch.Tensor:
    """[1, 2n] token ids: n random tokens, then the same n again. Distinct tokens when the vocabulary
    allows, so the "previous occurrence" of each token is unique."""
    gen = torch.Generator().manual_seed(seed)
    if vocab_size >= n:
        r = torch.randperm(vocab_size, generator=gen)[:n]
    else:
        r = torch.randint(0, vocab_size, (n,), generator=gen)
    return torch.cat([r, r]).unsqueeze(0)


# --- metrics of a model ---------------------------------------------------------------------------
@torch.no_grad()
def attention_maps(model: nn.Module, tokens: Sequence[int] | torch.Tensor) -> np.ndarray:
    """Attention weights of every layer and head for one sequence: float32 [L, H, T, T]."""
    idx = _as_batch(tokens, _device(model))
    _, attn, _ = model.forward_inspect(idx)
    return torch.stack([a[0] for a in attn]).float().cpu().numpy()


def head_metrics(model: nn.Module, tokens: Sequence[int] | torch.Tensor,
                 induction_len: int = INDUCTION_LEN, seed: int = INDUCTION_SEED) -> list[list[HeadMetrics]]:
    """HeadMetrics per layer and head of a GPT: entropy, prev_token, sink and distance on `tokens`,
    induction on a seeded repeated random sequence of 2 * min(induction_len, block_size // 2) tokens."""
    return _metrics_from_maps(attention_maps(model, tokens), model, induction_len, seed)


def _metrics_from_maps(maps: np.ndarray, model: nn.Module, induction_len: int, seed: int) -> list[list[HeadMetrics]]:
    n = max(1, min(induction_len, model.config.block_size // 2))
    ind_maps = attention_maps(model, induction_probe(model.config.vocab_size, n, seed))
    out = []
    for layer in range(maps.shape[0]):
        m = attention_metrics(maps[layer])
        ind = induction_scores(ind_maps[layer], n)
        out.append([HeadMetrics(layer, h, float(m["entropy"][h]), float(m["prev_token"][h]), float(m["sink"][h]),
                                float(m["distance"][h]), float(ind[h])) for h in range(maps.shape[1])])
    return out


def heads_event(model: nn.Module, probe: torch.Tensor) -> dict[str, Any] | None:
    """Fields of the trainer's `heads` event: {"layers": [[{metrics, badge} per head] per layer],
    "probe_tokens": T}; None for models without attention (LSTM)."""
    if not _has_attention(model):
        return None
    was_training = model.training
    model.eval()
    try:
        metrics = head_metrics(model, probe.reshape(-1))
    finally:
        model.train(was_training)
    return {"layers": [[m.to_dict() for m in layer] for layer in metrics], "probe_tokens": int(probe.numel())}


# --- a whole inspection ---------------------------------------------------------------------------
@dataclass
class Inspection:
    """Everything the Inspect views show for one prompt. Arrays are numpy; T = prompt tokens."""

    kind: str  # "gpt" | "lstm"
    token_ids: np.ndarray  # [T]
    tokens: list[str]  # display form of each token
    topk_ids: np.ndarray  # [T, k]: the most likely next tokens after each position
    topk_tokens: list[list[str]]
    topk_probs: np.ndarray  # [T, k]
    entropy: np.ndarray  # [T]: entropy of the next-token distribution, in nats
    attn: np.ndarray | None = None  # GPT: [L, H, T, T]
    metrics: list[list[HeadMetrics]] = field(default_factory=list)  # GPT: per layer and head
    lens_ids: np.ndarray | None = None  # GPT: [L + 1, T] top-1 token of each residual (embedding, blocks)
    lens_tokens: list[list[str]] = field(default_factory=list)
    lens_probs: np.ndarray | None = None  # [L + 1, T]
    hidden: np.ndarray | None = None  # LSTM: hidden states [layers, T, units] (the model exposes its last layer)

    @property
    def badges(self) -> list[list[str]]:
        return [[m.badge for m in layer] for layer in self.metrics]

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-ready: tokens, top-k, entropy, head metrics with badges, logit lens; with include_maps the
        attention weights (GPT) or hidden states (LSTM) too."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "tokens": self.tokens,
            "token_ids": self.token_ids.tolist(),
            "top_k": [[{"id": int(i), "token": s, "prob": float(p)} for i, s, p in zip(ids, toks, probs)]
                      for ids, toks, probs in zip(self.topk_ids, self.topk_tokens, self.topk_probs)],
            "entropy": [float(e) for e in self.entropy],
        }
        if self.kind == "gpt":
            d["heads"] = [[m.to_dict() for m in layer] for layer in self.metrics]
            d["logit_lens"] = [[{"token": s, "prob": float(p)} for s, p in zip(toks, probs)]
                               for toks, probs in zip(self.lens_tokens, self.lens_probs)]
            if include_maps:
                d["attention"] = self.attn.tolist()
        else:
            d["hidden_shape"] = list(self.hidden.shape)
            if include_maps:
                d["hidden"] = self.hidden.tolist()
        return d


@torch.no_grad()
def inspect_prompt(model: nn.Module, tokenizer: Any, prompt: str, top_k: int = 5) -> Inspection:
    """Run the prompt through the model once and collect what the Inspect views need.

    Prompts longer than the block size keep their last block_size tokens (what the model would see
    when generating after them).
    """
    ids = tokenizer.encode(prompt)
    if not ids:
        raise TokenizerError("The prompt is empty after tokenization: type some text to inspect.")
    block = getattr(model.config, "block_size", len(ids))
    ids = ids[-block:] if _has_attention(model) else ids
    model.eval()
    idx = _as_batch(ids, _device(model))
    k = max(1, min(top_k, model.config.vocab_size))

    def name(i: int) -> str:
        return tokenizer.id_to_token(int(i))

    if _has_attention(model):
        logits, attn, residuals = model.forward_inspect(idx)
    else:
        logits, hidden = model.forward_inspect(idx)
    probs = torch.softmax(logits[0].float(), dim=-1)
    top_p, top_i = probs.topk(k, dim=-1)
    out = Inspection(
        kind="gpt" if _has_attention(model) else "lstm",
        token_ids=np.asarray(ids), tokens=[name(i) for i in ids],
        topk_ids=top_i.cpu().numpy(), topk_tokens=[[name(i) for i in row] for row in top_i.tolist()],
        topk_probs=top_p.cpu().numpy(), entropy=_entropy(probs).cpu().numpy())
    if out.kind == "lstm":
        out.hidden = hidden.float().cpu().numpy()  # [1, T, units]: the batch axis stands for the one layer
        out.lens_ids = np.zeros((0, len(ids)), dtype=np.int64)  # no residual stream to read
        out.lens_probs = np.zeros((0, len(ids)), dtype=np.float32)
        return out
    out.attn = torch.stack([a[0] for a in attn]).float().cpu().numpy()
    out.metrics = _metrics_from_maps(out.attn, model, INDUCTION_LEN, INDUCTION_SEED)
    # Logit lens: each residual through the final LayerNorm and head, as if the model stopped there.
    lens_p, lens_i = torch.stack([torch.softmax(model.lens_logits(r)[0].float(), dim=-1) for r in residuals]).max(-1)
    out.lens_ids, out.lens_probs = lens_i.cpu().numpy(), lens_p.cpu().numpy()
    out.lens_tokens = [[name(i) for i in row] for row in lens_i.tolist()]
    return out


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)


def _has_attention(model: nn.Module) -> bool:
    return hasattr(model, "lens_logits")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_batch(tokens: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    t = tokens if isinstance(tokens, torch.Tensor) else torch.tensor(list(tokens), dtype=torch.long)
    return t.reshape(1, -1).to(device)


def _num(v: Any) -> Any:
    """JSON has no NaN: unmeasurable metrics (a one-token prompt) become null."""
    return None if isinstance(v, float) and math.isnan(v) else v
