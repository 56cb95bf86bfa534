"""Loaded models shared by the Generate and Inspect tabs, one per (run, checkpoint).

Loading takes a while (torch import, safetensors read), so each (run, checkpoint) is loaded once and
kept. The key includes the checkpoint directory's identity (inode + mtime): the trainer writes a new
checkpoint into a temp dir and renames it over the old one, so a new checkpoint is a new key and live
views pick it up without any explicit invalidation. Called from thread workers only: engine.checkpoint
imports torch, which must stay off the path to the first frame.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[tuple[int, int] | None, Any]] = {}


def checkpoint_stamp(run_dir: Path, which: str) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the directory `which` loads from, or None when there is none yet."""
    from engine.checkpoint import find

    path = find(run_dir, which)
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns) if st else None


def load(run_dir: Path, which: str) -> tuple[Any, Any, Any]:
    """(model, RunConfig, Tokenizer) for the run's checkpoint, loaded once per version of the files."""
    from engine.checkpoint import load_model
    from engine.process import share_cpu_with_ui

    share_cpu_with_ui()
    key = (str(Path(run_dir).resolve()), which)
    stamp = checkpoint_stamp(run_dir, which)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1]
    loaded = load_model(run_dir, which)  # raises CheckpointError naming what is missing
    with _lock:
        _cache[key] = (stamp, loaded)
    return loaded
