"""The models the Inspect tab and ClassifyView run in the UI process's thread workers (engine.checkpoint.ModelCache:
one per (run, checkpoint), picked up again when a new checkpoint is written). The Generate tab's streams decode
in their own process (engine.decode_process). Called from thread workers only: engine.checkpoint imports
torch, which must stay off the path to the first frame.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_models: Any = None  # the ModelCache, made on first use (its module imports torch)


def load(run_dir: Path, which: str) -> tuple[Any, Any, Any]:
    """(model, RunConfig, Tokenizer) for the run's checkpoint, loaded once per version of the files."""
    global _models
    from engine.checkpoint import ModelCache
    from engine.process import share_cpu

    share_cpu()
    with _lock:
        if _models is None:
            _models = ModelCache()
    return _models.load(run_dir, which)
