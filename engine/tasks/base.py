"""The interface between the trainer and a task (see engine.tasks), and the batching they share."""

from __future__ import annotations

from typing import Any, Iterator

import torch

Batch = tuple[torch.Tensor, ...]


class Task:
    """The trainer's view of a task."""

    kind = ""

    def start_fields(self) -> dict[str, Any]:
        """Extra fields of the `start` event (split sizes, labels, template)."""
        return {}

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def eval_sets(self, batch_size: int, n_batches: int, gen: torch.Generator) -> dict[str, list[Batch]]:
        """Fixed "val" and "train" batches, drawn once: every eval sees the same ones."""
        raise NotImplementedError

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole validation split, in order (`smallgpt eval`)."""
        raise NotImplementedError

    def eval_fields(self, model: torch.nn.Module) -> dict[str, Any]:
        """Task metrics for the `eval` event beyond the losses."""
        return {}

    def sample(self, model: torch.nn.Module, max_tokens: int) -> str | None:
        """The `sample` event's text at an eval, or None for none."""
        return None

    def report(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """The `report` event at the end of training, or None."""
        return None


def bucketed(order: list[int], batch_size: int, gen: torch.Generator) -> list[int]:
    """batch_size neighbours in `order` (records sorted by length) from a random start: batches of similar
    lengths, so padding stays small (length-bucketed dynamic padding)."""
    start = int(torch.randint(max(1, len(order) - batch_size + 1), (1,), generator=gen))
    return order[start:start + batch_size]
