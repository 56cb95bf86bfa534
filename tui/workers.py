"""The one way the TUI runs engine work: a method decorated with @engine_work runs in a thread worker and
hands its result to the UI thread by posting a dataclass Message; a widget that starts such work mixes in
ReportsWorkerErrors, so a failure becomes one notification (app.report_error) and the app keeps running.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.worker import Worker, WorkerState


def engine_work(group: str, exclusive: bool = True) -> Any:
    """@work in a thread, named after its group; `exclusive` cancels an earlier worker of the group."""
    return work(thread=True, exclusive=exclusive, group=group, name=group, exit_on_error=False)


class ReportsWorkerErrors:
    """Worker.StateChanged goes to the widget that started the worker and does not bubble: each such
    widget reports its own workers' failures. Textual calls this along with any subclass's handler."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.report_error(event.worker.error)  # type: ignore[attr-defined]
