"""The event log of a run: events.jsonl, one JSON object per line, appended and flushed as it happens.

Every event has `event` (its kind), `step`, `time` (seconds since the run first started, carried across
resumes) and `wall` (Unix time); each kind's other fields are the dataclass of that kind below. The file
holds plain records (`EventReader`, `read_events`); `parse_event` types one, and `RunState` folds them
into what a run looks like now. Readers ignore unknown kinds and fields and tolerate a partial last line
(the writer may be mid-line).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from .rundir import RunDir


class EventWriter:
    def __init__(self, run_dir: Path, time_offset: float = 0.0):
        self.path = RunDir(run_dir).events
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
        self.path = RunDir(run_dir).events
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



# --- typed events -----------------------------------------------------------------------------------
@dataclass
class Event:
    step: int = 0
    time: float = 0.0  # seconds since the run first started
    wall: float | None = None  # Unix time


@dataclass
class Start(Event):
    config: dict[str, Any] = field(default_factory=dict)  # the RunConfig as a dict
    params: dict[str, int] = field(default_factory=dict)  # engine.models.count_params
    device: str = ""
    dtype: str = ""
    resumed_from: int | None = None
    world_size: int = 1
    tokens_per_step: int = 0
    task: str = "lm"  # engine.tasks: lm | classify | instruct
    init_from: str = ""  # task.init_from, the run the weights started from ("" = random init)
    init_source: dict[str, Any] | None = None  # checkpoint.load_base: its run dir, checkpoint, step, import
    trainable: dict[str, Any] = field(default_factory=dict)  # engine.lora.trainable_counts
    labels: list[str] = field(default_factory=list)  # classify
    template: str = ""  # instruct
    split: dict[str, int] = field(default_factory=dict)  # classify, instruct: seed and records per split
    dropped_too_long: int = 0  # instruct: records whose prompt fills the block

    @property
    def total_params(self) -> int | None:
        return self.params.get("total") if isinstance(self.params, dict) else None

    @property
    def max_steps(self) -> int:
        return int((self.config.get("train") or {}).get("max_steps") or 0)


@dataclass
class Step(Event):
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    tokens_seen: int = 0
    eta_s: float | None = None


@dataclass
class Eval(Event):
    train_loss: float | None = None
    val_loss: float | None = None
    val_perplexity: float | None = None
    val_accuracy: float | None = None  # classify


@dataclass
class Sample(Event):
    text: str = ""


@dataclass
class Heads(Event):
    layers: list[list[dict[str, Any]]] = field(default_factory=list)  # engine.inspection.HeadMetrics dicts
    probe_tokens: int = 0


@dataclass
class Checkpoint(Event):
    path: str = ""
    kind: str = ""  # latest | best


@dataclass
class Done(Event):
    reason: str = ""  # max_steps | stopped
    tokens_seen: int = 0


@dataclass
class Report(Event):
    """A classifier's metrics at the end of training, per split: records, accuracy, precision and recall
    per class, confusion[true][predicted], majority_baseline."""
    labels: list[str] = field(default_factory=list)
    val: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)


@dataclass
class Error(Event):
    message: str = ""


@dataclass
class Import(Event):
    """The provenance of a run made by engine.interop.import_model (its only event until trained)."""
    source: str = ""  # the folder, or hub:<name>
    folder: str = ""
    weights: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)
    architecture: str = ""
    params: dict[str, int] = field(default_factory=dict)


KINDS: dict[str, type[Event]] = {"start": Start, "step": Step, "eval": Eval, "sample": Sample, "heads": Heads,
                                 "checkpoint": Checkpoint, "done": Done, "report": Report, "error": Error,
                                 "import": Import}
_FIELDS = {kind: {f.name for f in fields(cls)} for kind, cls in KINDS.items()}


def parse_event(record: dict[str, Any]) -> Event | None:
    """The typed event of a record; None for a kind this version does not know. Unknown fields are
    dropped, missing ones take their defaults, a null step or time counts as 0."""
    kind = record.get("event")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    event = cls(**{k: v for k, v in record.items() if k in _FIELDS[kind]})
    event.step = int(event.step or 0)
    event.time = float(event.time or 0.0)
    return event


def typed(records: Iterable[dict[str, Any]]) -> list[Event]:
    """The typed events of records, those of unknown kinds left out."""
    return [e for e in map(parse_event, records) if e is not None]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class RunState:
    """What a run's events say about it: fed records in order (all at once, or as they arrive)."""
    started: float | None = None  # Unix time of the first start; None: never started
    step: int = 0
    max_steps: int = 0  # from the last start's config
    params: int | None = None
    device: str = ""
    train_steps: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: float | None = None
    tokens_per_s: float | None = None
    sample: str = ""
    imported: bool = False  # made by `smallgpt import` (an import event)
    ended: str = ""  # since the last start: "" while it may go on, else the done reason or "error"
    error: str = ""  # the message of an error since the last start
    # (time, step) of the first and latest step event since the last start: the rate for the ETA,
    # measured per session so the pause between a stop and a resume does not count.
    _rate_from: tuple[float, int] | None = None
    _rate_to: tuple[float, int] | None = None

    def feed(self, records: Iterable[dict[str, Any]]) -> bool:
        """Fold records in; True when something this state shows changed (heads, checkpoints: no)."""
        changed = False
        for record in records:
            e = parse_event(record)
            if isinstance(e, Start):
                if self.started is None:
                    self.started = e.wall
                self.max_steps = e.max_steps or self.max_steps
                self.params = e.total_params
                self.device = str(e.device or "")
                self.ended, self.error = "", ""
                self._rate_from = self._rate_to = None
            elif isinstance(e, Step):
                if e.loss is not None:
                    self.train_steps.append(e.step)
                    self.train_loss.append(float(e.loss))
                self.lr = e.lr if e.lr is not None else self.lr
                self.tokens_per_s = e.tokens_per_s if e.tokens_per_s is not None else self.tokens_per_s
                point = (e.time, e.step)
                if self._rate_from is None:
                    self._rate_from = point
                self._rate_to = point
            elif isinstance(e, Eval):
                if _number(e.val_loss):
                    self.val_steps.append(e.step)
                    self.val_loss.append(float(e.val_loss))
            elif isinstance(e, Sample):
                self.sample = str(e.text or "")
            elif isinstance(e, Done):
                self.ended = str(e.reason or "done")
            elif isinstance(e, Error):
                self.ended, self.error = "error", str(e.message or "")
            elif isinstance(e, Import):
                self.imported = True
                self.params = e.params.get("total") if isinstance(e.params, dict) else None
            else:
                continue
            self.step = max(self.step, e.step)
            changed = True
        return changed

    @property
    def best_val_loss(self) -> float | None:
        return min(self.val_loss) if self.val_loss else None

    def status(self, running: bool) -> str:
        """running (the lock is held) | failed | finished (done at max_steps) | stopped (done when asked,
        or killed without a word) | imported (by `smallgpt import`, never trained) | new (never started)."""
        if running:
            return "running"
        if self.ended == "error":  # also when set-up failed before the start event
            return "failed"
        if self.started is None:
            return "imported" if self.imported else "new"
        return "finished" if self.ended == "max_steps" else "stopped"

    def eta_seconds(self) -> float | None:
        if self._rate_from is None or self._rate_to is None or not self.max_steps or self.ended:
            return None
        (t0, s0), (t1, s1) = self._rate_from, self._rate_to
        if s1 <= s0 or t1 <= t0:
            return None
        return (self.max_steps - self.step) * (t1 - t0) / (s1 - s0)
