"""Shared fixtures. Every test gets its own project home (corpora/, checkpoints/, logs/) so runs never
touch the developer's checkpoints; the prepared built-in corpus is shared across tests via a session cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def builtin_cache(tmp_path_factory) -> Path:
    """One prepared copy of the built-in corpora for the whole session (each takes seconds to extract);
    subprocesses inherit it through the environment. A SMALLGPT_BUILTIN_CACHE already set wins."""
    path = Path(os.environ.get("SMALLGPT_BUILTIN_CACHE") or tmp_path_factory.mktemp("builtin-corpora"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLGPT_BUILTIN_CACHE", str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def notes_kept():
    """Every notification an app shows is also kept in its `notes_seen` (read by pilot_helpers.notes): the
    app's own list drops a notification once its timeout passes, which a test on a busy machine can miss."""
    from textual.app import App
    from textual.notifications import Notification

    notify = App.notify

    def keeping(self, message, *args, **kwargs):
        self.__dict__.setdefault("notes_seen", []).append(
            Notification(str(message), severity=kwargs.get("severity", "information")))
        return notify(self, message, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(App, "notify", keeping)
        yield


SMALL_CORPUS_CHARS = 200_000


@pytest.fixture
def small_corpus(home) -> Path:
    """A ~200 KB plain-text corpus (the start of python-docs) in the test's home: quick to train on."""
    from engine.corpora import prepare_builtin

    with prepare_builtin("python-docs").open(encoding="utf-8") as f:
        text = f.read(SMALL_CORPUS_CHARS)
    path = home / "small.txt"
    path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh SMALLGPT_HOME with the project's catalog."""
    monkeypatch.setenv("SMALLGPT_HOME", str(tmp_path))
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "catalog.toml").write_text((ROOT / "corpora" / "catalog.toml").read_text())
    return tmp_path


def smallgpt(home: Path, *args: str, stdin: str | None = None, timeout: float = 180,
             **env: str | None) -> subprocess.CompletedProcess:
    """`smallgpt ARGS` as a real command in `home`: no colour, 120 columns, one torch thread (tiny models on
    a shared 2-core box: one thread avoids spin-wait stalls); `env` overrides variables (None removes one)."""
    full = dict(os.environ, SMALLGPT_HOME=str(home), NO_COLOR="1", COLUMNS="120", OMP_NUM_THREADS="1")
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([str(BIN / "smallgpt"), *args], capture_output=True, text=True, env=full, cwd=home,
                          timeout=timeout, input=stdin)


def one_json(r: subprocess.CompletedProcess) -> dict:
    """--json prints exactly one JSON object on stdout (progress and warnings go to stderr)."""
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
