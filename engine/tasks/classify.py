"""Text classification: a class head on the last real token (engine.models.classifier), trained on
labelled texts; accuracy at each eval, and at the end accuracy, per-class precision/recall and the
confusion matrix on the validation and test splits."""

from __future__ import annotations

import random
from typing import Any, Iterator

import torch

from ..config import RunConfig
from ..tokenizer import Tokenizer
from .base import Batch, Task, bucketed
from .records import TaskData

EVAL_MAX_RECORDS = 2000  # accuracy at each eval: up to this many validation records


def balanced(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Undersample every label to the rarest one's count (seeded), keeping the records' order."""
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_label.setdefault(r["label"], []).append(i)
    n = min(map(len, by_label.values()))
    rng = random.Random(seed)
    keep = sorted(i for idx in by_label.values() for i in rng.sample(idx, n))
    return [records[i] for i in keep]


def encode_texts(tokenizer: Tokenizer, texts: list[str], block_size: int) -> list[list[int]]:
    """Token ids of each text, cut to block_size (an empty encoding becomes one end-of-text token)."""
    return [(ids or [tokenizer.eos_id])[:block_size] for ids in tokenizer.encode_batch(texts)]


def collate(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] (L the longest here) and the index of each sequence's last real token."""
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
    return x, torch.tensor([len(s) - 1 for s in seqs])


class ClassifyTask(Task):
    kind = "classify"

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer, data: TaskData, info: dict[str, Any]):
        self.tokenizer, self.info = tokenizer, info
        self.labels: list[str] = info["labels"]
        index = {name: i for i, name in enumerate(self.labels)}
        ids = encode_texts(tokenizer, [r["text"] for r in data.records], cfg.model.block_size)
        self.split: dict[str, tuple[list[list[int]], list[int]]] = {
            name: ([ids[i] for i in part], [index[data.records[i]["label"]] for i in part])
            for name, part in data.parts.items()}
        self.order = {name: sorted(range(len(s[0])), key=lambda i: len(s[0][i])) for name, s in self.split.items()}

    def start_fields(self) -> dict[str, Any]:
        return {"labels": self.labels, "split": self.info["split"]}

    def _batch(self, name: str, idx: list[int]) -> Batch:
        seqs, labels = self.split[name]
        x, last = collate([seqs[i] for i in idx], self.tokenizer.pad_id)
        return x, torch.tensor([labels[i] for i in idx]), last

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        return self._batch("train", bucketed(self.order["train"], batch_size, gen))

    def eval_sets(self, batch_size: int, n_batches: int, gen: torch.Generator) -> dict[str, list[Batch]]:
        return {name: [self._batch(name, bucketed(self.order[name], batch_size, gen)) for _ in range(n_batches)]
                for name in ("val", "train")}

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        order = self.order["val"]
        return (self._batch("val", order[i:i + batch_size]) for i in range(0, len(order), batch_size))

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, name: str, limit: int | None = None) -> tuple[list[int], list[int]]:
        """(predicted, true) label ids over a split (its first `limit` records in length order)."""
        order = self.order[name][:limit]
        seqs, labels = self.split[name]
        device = next(model.parameters()).device
        pred: list[int] = []
        for i in range(0, len(order), 64):
            x, last = collate([seqs[j] for j in order[i:i + 64]], self.tokenizer.pad_id)
            logits, _ = model(x.to(device), last=last.to(device))
            pred += logits.argmax(-1).tolist()
        return pred, [labels[j] for j in order]

    def eval_fields(self, model: torch.nn.Module) -> dict[str, Any]:
        pred, true = self.predict(model, "val", EVAL_MAX_RECORDS)
        return {"val_accuracy": sum(p == t for p, t in zip(pred, true)) / max(1, len(true))}

    def report(self, model: torch.nn.Module) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": self.labels}
        for name in ("val", "test"):
            if self.split[name][0]:
                out[name] = metrics(*self.predict(model, name), len(self.labels))
        return out


def metrics(pred: list[int], true: list[int], n_classes: int) -> dict[str, Any]:
    """accuracy, per-class precision and recall (None where undefined), confusion[true][predicted]."""
    confusion = [[0] * n_classes for _ in range(n_classes)]
    for p, t in zip(pred, true):
        confusion[t][p] += 1
    predicted = [sum(confusion[t][c] for t in range(n_classes)) for c in range(n_classes)]
    actual = [sum(row) for row in confusion]
    return {"records": len(true), "accuracy": sum(confusion[c][c] for c in range(n_classes)) / max(1, len(true)),
            "precision": [confusion[c][c] / predicted[c] if predicted[c] else None for c in range(n_classes)],
            "recall": [confusion[c][c] / actual[c] if actual[c] else None for c in range(n_classes)],
            "confusion": confusion,
            "majority_baseline": max(actual) / max(1, len(true))}


def classify_texts(model: torch.nn.Module, tokenizer: Tokenizer, labels: list[str], texts: list[str]
                   ) -> list[dict[str, float]]:
    """Class probabilities of each text: [{label: probability}]."""
    seqs = encode_texts(tokenizer, texts, model.config.block_size)
    x, last = collate(seqs, tokenizer.pad_id)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits, _ = model(x.to(device), last=last.to(device))
    probs = torch.softmax(logits.float(), -1).tolist()
    return [dict(zip(labels, p)) for p in probs]
