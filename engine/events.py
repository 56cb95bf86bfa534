"""The event log of a run: events.jsonl, one JSON object per line, appended and flushed as it happens.

Every event has `event` (its kind), `step`, `time` (seconds since the run first started, carried across
resumes) and `wall` (Unix time). Kinds: start, step, eval, sample, heads, checkpoint, done, error.
Readers ignore unknown kinds and fields and tolerate a partial last line (the writer may be mid-line).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

EVENTS_FILE = "events.jsonl"


class EventWriter:
    def __init__(self, run_dir: Path, time_offset: float = 0.0):
        self.path = Path(run_dir) / EVENTS_FILE
        self._f = self.path.open("a", encoding="utf-8")
        # A crash (or a full disk) mid-line leaves a torn last line: end it, or our first event would be
        # glued to it and skipped by every reader (a resumed run's `start` lost).
        if self._f.tell() and not _ends_with_newline(self.path):
            self._f.write("\n")
        self._t0 = time.monotonic() - time_offset

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def emit(self, event: str, step: int, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "step": step, "time": round(self.elapsed(), 3), "wall": round(time.time(), 3)}
        record.update(fields)
        self._f.write(json.dumps(record, default=_json_default, allow_nan=False) + "\n")
        self._f.flush()
        return record

    def close(self) -> None:
        self._f.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def sanitize(value: float) -> float | None:
    """JSON has no NaN/inf: non-finite numbers are written as null."""
    return value if math.isfinite(value) else None


class EventReader:
    """Incremental reader: each poll() returns the complete new lines since the last call."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._offset = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        return list(_parse(data[: end + 1]))


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """All complete events of a run, in order."""
    return EventReader(run_dir).poll()


def _parse(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn or foreign line: skip it, never fail the reader
        if isinstance(obj, dict) and "event" in obj:
            yield obj

