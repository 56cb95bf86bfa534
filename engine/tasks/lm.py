"""Next-token prediction on a corpus: random fixed-length windows of the encoded dataset (engine.dataset)."""

from __future__ import annotations

from typing import Any, Iterator

import torch

from ..config import RunConfig
from ..corpora import load_corpus
from ..dataset import TokenDataset, prepare_dataset
from ..errors import ConfigError
from ..sampler import SamplingConfig, generate_text
from ..tokenizer import Tokenizer
from .base import Batch, Task

SAMPLE_SEED = 1234  # samples at each eval use one seed, so they differ only by what the model learned


class LMTask(Task):
    kind = "lm"

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer):
        self.tokenizer, self.block = tokenizer, cfg.model.block_size
        data_dir = prepare_dataset(load_corpus(cfg.data.corpus), tokenizer, val_ratio=cfg.data.val_ratio)
        self.train_ds, self.val_ds = TokenDataset(data_dir, "train"), TokenDataset(data_dir, "val")
        for split, ds in (("validation", self.val_ds), ("training", self.train_ds)):
            if len(ds) < self.block + 1:
                raise ConfigError(f"block_size {self.block} needs at least {self.block + 1} tokens but the {split} "
                                  f"split has {len(ds)}: use a smaller --block-size or a bigger corpus.")

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        return self.train_ds.get_batch(batch_size, self.block, gen)

    def eval_sets(self, batch_size: int, n_batches: int, gen: torch.Generator) -> dict[str, list[Batch]]:
        return {split: [ds.get_batch(batch_size, self.block, gen) for _ in range(n_batches)]
                for split, ds in (("val", self.val_ds), ("train", self.train_ds))}

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        return self.val_ds.iter_windows(self.block, batch_size)

    def sample(self, model: Any, max_tokens: int) -> str:
        return generate_text(model, self.tokenizer, "\n", SamplingConfig(max_new_tokens=max_tokens, temperature=0.8,
                                                                         seed=SAMPLE_SEED))
