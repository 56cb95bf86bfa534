"""What the Train tab shows of a run: engine.events.RunState, plus its name and whether it needs a redraw.

Pure bookkeeping, no widgets: the tailing worker feeds events in, the redraw timer reads the fields out.
"""

from __future__ import annotations

from typing import Any, Iterable

from engine.events import RunState


class RunHistory(RunState):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.dirty = True

    def feed(self, events: Iterable[dict[str, Any]]) -> bool:
        changed = super().feed(events)
        self.dirty = self.dirty or changed
        return changed


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
