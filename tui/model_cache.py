"""Loaded models shared by the Generate and Inspect tabs, one per (run, checkpoint).

Loading takes a while (torch import, safetensors read), so each (run, checkpoint) is loaded once and
kept. The key includes the checkpoint directory's identity (inode + mtime): the trainer writes a new
checkpoint into a temp dir and renames it over the old one, so a new checkpoint is a new key and live
views pick it up without any explicit invalidation. Called from thread workers only (torch is imported
there, never on the path to the first frame).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from engine import checkpoint

_lock = threading.Lock()
_threads_set = False
_cache: dict[tuple[str, str], tuple[tuple[int, int] | None, Any]] = {}


def checkpoint_stamp(run_dir: Path, which: str) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the directory `which` loads from, or None when there is none yet."""
    if which == "int8":
        path: Path | None = Path(run_dir) / checkpoint.CKPT_DIR / "int8"
    else:  # "best" falls back to "latest" before the first eval, exactly as load_model does
        path = checkpoint.checkpoint_dir(run_dir, which) or (
            checkpoint.checkpoint_dir(run_dir, "latest") if which == "best" else None)
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns) if st else None


def load(run_dir: Path, which: str) -> tuple[Any, Any, Any]:
    """(model, RunConfig, Tokenizer) for the run's checkpoint, loaded once per version of the files."""
    _leave_a_core_for_the_ui()
    key = (str(Path(run_dir).resolve()), which)
    stamp = checkpoint_stamp(run_dir, which)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1]
    loaded = checkpoint.load_model(run_dir, which)  # raises CheckpointError naming what is missing
    with _lock:
        _cache[key] = (stamp, loaded)
    return loaded


def _leave_a_core_for_the_ui() -> None:
    """Cap torch's intra-op threads at cores - 1 in the TUI process.

    Decoding one token of a small model is many tiny kernels; with every core busy in torch's thread pool
    the UI thread (and any training process) fights its spinning workers, and on a 2-core machine that was
    measured at 9 tok/s instead of 630 tok/s with one thread. One core stays free to keep keys responsive.
    """
    global _threads_set
    if _threads_set:
        return
    import os

    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
    _threads_set = True
