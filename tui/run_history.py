"""What the Train tab shows of a run: engine.events.RunState, plus its name, whether it needs a redraw, and
what a fine-tune reports (its task, the trainable share, a classifier's accuracy).

Pure bookkeeping, no widgets: the tailing worker feeds events in, the redraw timer reads the fields out.
"""

from __future__ import annotations

from typing import Any, Iterable

from engine.events import Eval, Report, RunState, Start, typed


class RunHistory(RunState):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.dirty = True
        self.task = "lm"  # what the run trains for (its start event): lm | classify | instruct
        self.trainable_share: float | None = None  # of the parameters, for a fine-tune
        self.val_acc_steps: list[float] = []  # a classifier's val accuracy (0..1) at each eval
        self.val_accuracy: list[float] = []
        self.test_accuracy: float | None = None  # a classifier's final report (test split, else val)

    def feed(self, events: Iterable[dict[str, Any]]) -> bool:
        events = list(events)
        changed = super().feed(events)
        for e in typed(events):
            if isinstance(e, Start):
                self.task = e.task or "lm"
                self.trainable_share = e.trainable.get("share") if e.trainable else None
            elif isinstance(e, Eval) and e.val_accuracy is not None:
                self.val_acc_steps.append(e.step)
                self.val_accuracy.append(float(e.val_accuracy))
            elif isinstance(e, Report):
                self.test_accuracy = (e.test or e.val).get("accuracy")
                changed = True
        self.dirty = self.dirty or changed
        return changed


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
