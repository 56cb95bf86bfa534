"""The layout of a run directory: the one place that names its files.

    RUN/config.toml tokenizer.json events.jsonl train.log pid run.lock ckpt/{latest,best,int8}/
    task.json (a fine-tuned run's labels or prompt template, data fingerprint and split: engine.tasks)
    serve.lock serve.json serve.log   (while `smallgpt serve` serves the run)

Imports nothing heavy: the TUI and the CLI list runs through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunError

CHECKPOINTS = ("latest", "best", "int8")  # what a run's checkpoint can be called
FP32_CHECKPOINTS = CHECKPOINTS[:2]  # the trained weights themselves (int8 is derived from them)
STATE_FILE = "state.json"  # a checkpoint's file written last: a checkpoint directory without it is incomplete


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: "Path | str | RunDir"):
        object.__setattr__(self, "path", path.path if isinstance(path, RunDir) else Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def task(self) -> Path:
        return self.path / "task.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log(self) -> Path:
        """stdout/stderr of a detached trainer and the engine's logging while it trains."""
        return self.path / "train.log"

    @property
    def lock(self) -> Path:
        """flock'ed by the training process for its whole life: "running" means this lock is held."""
        return self.path / "run.lock"

    @property
    def pid(self) -> Path:
        return self.path / "pid"

    @property
    def serve_lock(self) -> Path:
        """flock'ed by the run's `smallgpt serve` process for its whole life: "served" means it is held."""
        return self.path / "serve.lock"

    @property
    def serve_record(self) -> Path:
        """That server's address: url, host, port, pid, checkpoint (JSON), written once it listens."""
        return self.path / "serve.json"

    @property
    def serve_log(self) -> Path:
        """stdout/stderr of a detached server."""
        return self.path / "serve.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "ckpt"

    def checkpoint(self, which: str) -> Path:
        """ckpt/<which> (latest, best or int8), complete or not."""
        return self.checkpoints / which

    def complete_checkpoint(self, which: str) -> Path | None:
        """The complete checkpoint `which`, or the previous copy a crash between engine.checkpoint's two
        renames left (.old-<which>-<pid>), or None."""
        if (self.checkpoint(which) / STATE_FILE).is_file():
            return self.checkpoint(which)
        olds = sorted((p for p in self.checkpoints.glob(f".old-{which}-*") if (p / STATE_FILE).is_file()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        return olds[0] if olds else None

    def is_run(self) -> bool:
        """A directory holds a run once it has its config.toml."""
        return self.config.is_file()


def read_task_info(run_dir: "Path | str | RunDir") -> dict[str, Any]:
    """A fine-tuned run's task.json (labels, template, split); torch-free, so the TUI reads it anywhere."""
    path = RunDir(run_dir).task
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"Run {run_dir} has no readable {path.name}: create task runs with `smallgpt finetune`.") \
            from None
