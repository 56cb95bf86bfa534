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
_tuned = False
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
    _share_the_cpu_with_the_ui()
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


def _share_the_cpu_with_the_ui() -> None:
    """Tune the TUI process once, before its first model runs in a worker thread.

    - torch's intra-op threads capped at cores - 1: decoding a small model is many tiny kernels, and with
      every core in torch's spinning pool the UI thread (and any training process) starves; on a 2-core
      machine one thread decoded at 630 tok/s, two at 9.
    - a 0.5 ms GIL switch interval (default 5 ms): each torch op releases the GIL and must win it back from
      the busy UI thread, waiting up to a whole interval each time; measured while streaming in the
      Generate tab on a loaded 2-core machine: 23 tok/s at 5 ms, 53 tok/s at 0.5 ms, and keys answered
      sooner too.
    """
    global _tuned
    if _tuned:
        return
    import os
    import sys

    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
    sys.setswitchinterval(0.0005)
    _tuned = True
