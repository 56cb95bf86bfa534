"""Where things live. Everything is relative to the project home: $SMALLGPT_HOME, else the current directory.

corpora/catalog.toml ships with the project; corpora/cache/ (downloads, prepared built-ins, encoded
datasets) and checkpoints/ (runs) are created on demand and gitignored.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    return Path(os.environ.get("SMALLGPT_HOME") or Path.cwd())


def corpora_dir() -> Path:
    return home() / "corpora"


def cache_dir() -> Path:
    return corpora_dir() / "cache"


def checkpoints_dir() -> Path:
    return home() / "checkpoints"


def catalog_path() -> Path:
    """The catalog of named public corpora: the project's own copy wins over the packaged one."""
    local = corpora_dir() / "catalog.toml"
    return local if local.exists() else PACKAGE_ROOT / "corpora" / "catalog.toml"


def log_path() -> Path:
    """The front ends' log: tracebacks go here, never to the screen."""
    return home() / "logs" / "smallgpt.log"
