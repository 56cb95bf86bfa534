"""Encoded datasets: a corpus encoded once into token memmaps, then read in random or strided windows.

corpora/cache/encoded/<key>/ holds train.bin and val.bin (raw uint16, or uint32 for vocabularies over
65536) and meta.json. The key hashes the corpus fingerprint, the tokenizer's sha256 and the val ratio, so
a change to any of them encodes afresh and an unchanged one is reused without reading the corpus. The
validation split is the last val_ratio of the tokens (text order is kept: no shuffling across the split).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .errors import ConfigError, CorpusError
from .paths import cache_dir

# torch is imported only where batches are made: encoding a corpus (the Data tab) must not load it.
if TYPE_CHECKING:
    import torch

    from .corpora import Corpus
    from .tokenizer import Tokenizer

Progress = Callable[[float, str], None]

SPLITS = ("train", "val")
META_FILE = "meta.json"
_FORMAT = 1  # bump when the on-disk layout changes
_PIECE_CHARS = 1 << 16  # text per encode_batch item: small enough to spread over threads


def dataset_key(corpus: Corpus, tokenizer: Tokenizer, val_ratio: float) -> str:
    h = hashlib.sha256(f"{_FORMAT}:{corpus.fingerprint()}:{tokenizer.sha256()}:{val_ratio!r}".encode())
    return h.hexdigest()[:16]


def prepare_dataset(corpus: Corpus, tokenizer: Tokenizer, val_ratio: float = 0.1,
                    progress: Progress | None = None) -> Path:
    """The directory of the corpus encoded with the tokenizer, encoding it only if it is not there yet."""
    if not 0.0 < val_ratio < 1.0:
        raise ConfigError(f"data.val_ratio must be between 0 and 1, exclusive (got {val_ratio}).")
    root = cache_dir() / "encoded"
    out = root / dataset_key(corpus, tokenizer, val_ratio)
    if (out / META_FILE).is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{out.name}."))
    try:
        dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
        n, n_chars = _encode_to(tmp / "all.bin", corpus, tokenizer, dtype, progress)
        if n < 2:
            raise CorpusError(f"The corpus '{corpus.name}' encodes to {n} token(s): it needs more text to train on.")
        n_val = max(1, int(n * val_ratio))
        n_train = n - n_val
        # The val split is the tail: copy it out, then cut the file down to the train split in place.
        tokens = np.memmap(tmp / "all.bin", dtype=dtype, mode="r", shape=(n,))
        tokens[n_train:].tofile(tmp / "val.bin")
        del tokens
        os.truncate(tmp / "all.bin", n_train * np.dtype(dtype).itemsize)
        os.replace(tmp / "all.bin", tmp / "train.bin")
        meta = {
            "format": _FORMAT, "corpus": corpus.source, "corpus_name": corpus.name,
            "corpus_fingerprint": corpus.fingerprint(), "tokenizer_sha256": tokenizer.sha256(),
            "tokenizer_kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "val_ratio": val_ratio,
            "dtype": np.dtype(dtype).name, "train_tokens": n_train, "val_tokens": n_val,
            "chars_per_token": n_chars / n,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same encoding first: its copy is as good as ours
            if not (out / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(1.0, "encoded")
    return out


def _encode_to(path: Path, corpus: Corpus, tokenizer: Tokenizer, dtype: type,
               progress: Progress | None) -> tuple[int, int]:
    """Encode the corpus stream into a raw token file; returns the token and character counts."""
    n = 0
    n_chars = 0
    tail = ""
    with path.open("wb") as f:
        def flush(text: str) -> None:
            nonlocal n, n_chars
            n_chars += len(text)
            for ids in tokenizer.encode_batch(_pieces(text)):
                np.asarray(ids, dtype=dtype).tofile(f)
                n += len(ids)

        reading = (lambda frac, _: progress(0.98 * frac, "encoding")) if progress else None
        for chunk in corpus.iter_text(progress=reading):
            block = tail + chunk
            cut = block.rfind("\n") + 1  # encode whole lines: a piece boundary never splits a word
            if cut:
                flush(block[:cut])
            tail = block[cut:]
        if tail:
            flush(tail)
    return n, n_chars


def _pieces(text: str) -> list[str]:
    """text cut after a newline roughly every _PIECE_CHARS characters (one piece when it has no newline)."""
    pieces = []
    start = 0
    while start < len(text):
        cut = text.find("\n", start + _PIECE_CHARS)
        end = len(text) if cut < 0 else cut + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def load_meta(data_dir: Path) -> dict:
    try:
        return json.loads((Path(data_dir) / META_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise CorpusError(f"'{data_dir}' is not an encoded dataset (no valid {META_FILE}): encode the corpus "
                          "again.") from None


class TokenDataset:
    """One split of an encoded dataset, memory-mapped: windows are read from disk, never the whole split."""

    def __init__(self, data_dir: Path, split: str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.meta = load_meta(data_dir)
        self.split = split
        path = Path(data_dir) / f"{split}.bin"
        dtype = np.dtype(self.meta["dtype"])
        # numpy cannot map an empty file; an empty split is reported by _check_length when it is used.
        self.tokens = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.empty(0, dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def _check_length(self, block_size: int) -> None:
        if len(self) < block_size + 1:
            raise CorpusError(
                f"The {self.split} split of '{self.meta['corpus_name']}' has {len(self)} tokens, fewer than "
                f"block size + 1 = {block_size + 1}: use a longer corpus, a smaller block size or a different "
                "validation ratio.")

    def get_batch(self, batch_size: int, block_size: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_size random windows: x [B, T] and y = x shifted by one, int64. The draw uses only
        `generator`, so a run is reproducible and resumes exactly from the generator's saved state."""
        import torch

        self._check_length(block_size)
        starts = torch.randint(len(self) - block_size, (batch_size,), generator=generator).numpy()
        return self._windows(starts, block_size)

    def iter_windows(self, block_size: int, batch_size: int,
                     stride: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every window start 0, stride, 2*stride, ... (stride defaults to block_size: each token predicted
        once) in batches; the last batch may be smaller, and fewer than `stride` trailing tokens may be left
        unpredicted."""
        self._check_length(block_size)
        stride = stride or block_size
        starts = np.arange(0, len(self) - block_size, stride)
        for i in range(0, len(starts), batch_size):
            yield self._windows(starts[i:i + batch_size], block_size)

    def _windows(self, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        rows = self.tokens[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()
