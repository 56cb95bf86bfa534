"""Shared fixtures. Every test gets its own project home (corpora/, checkpoints/, logs/) so runs never
touch the developer's checkpoints; the prepared built-in corpus is shared across tests via a session cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh SMALLGPT_HOME with the project's catalog."""
    monkeypatch.setenv("SMALLGPT_HOME", str(tmp_path))
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "catalog.toml").write_text((ROOT / "corpora" / "catalog.toml").read_text())
    return tmp_path


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SMALLGPT_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "120"
    return env
