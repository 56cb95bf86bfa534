"""What every tab shares: engine calls in workers that can fail without closing the app.

A tab subclasses EngineTab, declares its own BINDINGS (they show in the Footer while the tab has focus,
and in the help screen and the command palette always) and starts engine work with run_engine().
"""

from __future__ import annotations

from typing import Any, Callable

from textual.containers import Vertical
from textual.worker import Worker, WorkerState


class EngineTab(Vertical):
    """A tab's root widget. TITLE names its section in the help screen."""

    TITLE: str = ""

    def run_engine(self, fn: Callable[..., Any], *args: Any, name: str, exclusive: bool = True,
                   **kwargs: Any) -> Worker:
        """Run a blocking engine call in a thread worker. Its failure becomes a notification (see
        on_worker_state_changed); `exclusive` cancels an earlier worker of the same name."""
        return self.run_worker(lambda: fn(*args, **kwargs), name=name, group=name, thread=True,
                               exclusive=exclusive, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # The one place worker failures surface: Worker.StateChanged does not bubble, so each tab
        # forwards its own workers' errors to the app, which notifies (and logs any traceback).
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.report_error(event.worker.error)  # type: ignore[attr-defined]
