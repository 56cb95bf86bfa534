"""How the TUI works in the background. The one way it runs engine work: a method decorated with
@engine_work runs in a thread worker and hands its result to the UI thread by posting a dataclass Message; a widget that starts such work mixes in
ReportsWorkerErrors, so a failure becomes one notification (app.report_error) and the app keeps running,
and a WorkFailed message bubbles up for a tab's status line.
Throttle paces the redraws such results (or held keys) ask for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from textual import work
from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState


def engine_work(group: str, exclusive: bool = True) -> Any:
    """@work in a thread, named after its group; `exclusive` cancels an earlier worker of the group."""
    return work(thread=True, exclusive=exclusive, group=group, name=group, exit_on_error=False)


@dataclass
class WorkFailed(Message):
    """A worker of this group failed; its error (`message`) was reported already."""
    group: str
    message: str


class ReportsWorkerErrors:
    """Worker.StateChanged goes to the widget that started the worker and does not bubble: each such
    widget reports its own workers' failures. Textual calls this along with any subclass's handler."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.report_error(event.worker.error)  # type: ignore[attr-defined]
            self.post_message(WorkFailed(event.worker.group, str(event.worker.error)))  # type: ignore[attr-defined]


class Throttle:
    """Calls `fn` at most once per `interval` seconds; a call inside the window runs once at its end.
    Holding a key must not queue more frames than anyone can see."""

    def __init__(self, owner: MessagePump, interval: float, fn: Callable[[], None]) -> None:
        self.owner, self.interval, self.fn = owner, interval, fn
        self._last = 0.0
        self._pending = False

    def __call__(self, now: bool = False) -> None:
        wait = self._last + self.interval - time.monotonic()
        if now or wait <= 0:
            self._run()
        elif not self._pending:
            self._pending = True
            self.owner.set_timer(wait, self._run)

    def _run(self) -> None:
        self._pending = False
        self._last = time.monotonic()
        self.fn()
