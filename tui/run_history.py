"""What the Train tab shows of a run, folded from its events (engine.events schema, DESIGN section 3).

Pure bookkeeping, no widgets: the tailing worker feeds events in, the redraw timer reads the fields out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class RunHistory:
    name: str
    train_steps: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    step: int = 0
    max_steps: int = 0
    lr: float | None = None
    tokens_per_s: float | None = None
    sample: str = ""
    params: int | None = None
    device: str = ""
    ended: str = ""  # "" while it may go on; else the done reason or "error"
    error: str = ""
    # (time, step) of the first and latest step event since the last start: the rate for the ETA,
    # measured per session so the pause between a stop and a resume does not count.
    _rate_from: tuple[float, int] | None = None
    _rate_to: tuple[float, int] | None = None
    dirty: bool = True

    def feed(self, events: Iterable[dict[str, Any]]) -> None:
        for e in events:
            kind, step = e.get("event"), int(e.get("step") or 0)
            if kind == "start":
                cfg = e.get("config") or {}
                self.max_steps = int(cfg.get("train", {}).get("max_steps") or self.max_steps)
                params = e.get("params")
                self.params = params.get("total") if isinstance(params, dict) else params
                self.device = str(e.get("device") or "")
                self.ended, self.error = "", ""
                self._rate_from = self._rate_to = None
            elif kind == "step":
                if e.get("loss") is not None:
                    self.train_steps.append(step)
                    self.train_loss.append(float(e["loss"]))
                self.lr = e.get("lr", self.lr)
                self.tokens_per_s = e.get("tokens_per_s", self.tokens_per_s)
                point = (float(e.get("time") or 0.0), step)
                if self._rate_from is None:
                    self._rate_from = point
                self._rate_to = point
            elif kind == "eval":
                if e.get("val_loss") is not None:
                    self.val_steps.append(step)
                    self.val_loss.append(float(e["val_loss"]))
            elif kind == "sample":
                self.sample = str(e.get("text") or "")
            elif kind == "done":
                self.ended = str(e.get("reason") or "done")
            elif kind == "error":
                self.ended, self.error = "error", str(e.get("message") or "")
            else:
                continue
            self.step = max(self.step, step)
            self.dirty = True

    def eta_seconds(self) -> float | None:
        if self._rate_from is None or self._rate_to is None or not self.max_steps or self.ended:
            return None
        (t0, s0), (t1, s1) = self._rate_from, self._rate_to
        if s1 <= s0 or t1 <= t0:
            return None
        return (self.max_steps - self.step) * (t1 - t0) / (s1 - s0)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
