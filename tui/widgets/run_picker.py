"""RunPicker: choose a run (from engine.runs.list_runs) and one of its checkpoints (latest, best, int8).

Listing runs reads run directories, so it happens in a thread worker; the picker keeps the current
choice when the list is refreshed and otherwise selects the most recently started run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Select

from engine.config import CHECKPOINTS
from tui.workers import ReportsWorkerErrors, engine_work

log = logging.getLogger(__name__)
NO_RUNS = "no runs yet: train one in the Train tab"


@dataclass
class RunPicked(Message):
    """The run or checkpoint changed; run_dir is None while no run exists."""
    run_dir: Path | None
    checkpoint: str
    picker: RunPicker  # which picker, where a tab has two

    @property
    def control(self) -> RunPicker:  # so @on(RunPicked, "#id") selects by picker
        return self.picker


@dataclass
class RunsListed(Message):
    runs: list[Any]  # engine.runs.RunInfo


def run_label(run: Any) -> str:
    """"name · status · step N"; a running run's step would be stale at once, so it has none."""
    return f"{run.name} · {run.status}" + ("" if run.status == "running" else f" · step {run.step}")


class RunPicker(ReportsWorkerErrors, Horizontal):
    DEFAULT_CSS = """
    RunPicker { height: 1; width: 1fr; }
    RunPicker > #run { width: 1fr; max-width: 48; }
    RunPicker > #checkpoint { width: 14; margin-left: 1; }
    """

    def __init__(self, checkpoint: str = "best", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial_checkpoint = checkpoint
        self._paths: set[str] = set()  # of the runs listed
        self._last_active = ""

    def compose(self) -> ComposeResult:
        yield Select([], prompt=NO_RUNS, id="run", compact=True)
        yield Select([(c, c) for c in CHECKPOINTS], value=self._initial_checkpoint, allow_blank=False,
                     id="checkpoint", compact=True)

    def on_mount(self) -> None:
        self.refresh_runs()
        # The Train tab's attached run becomes the default here (SmallGPTApp.active_run), and a run that
        # starts or ends while this is shown is re-labelled (SmallGPTApp.run_states).
        for state in ("active_run", "run_states"):
            if hasattr(self.app, state):
                self.watch(self.app, state, lambda _: self.refresh_runs(), init=False)

    def on_show(self) -> None:
        self.refresh_runs()  # runs may have been created or finished while another tab was shown

    @property
    def run_dir(self) -> Path | None:
        value = self.query_one("#run", Select).value
        return None if value is Select.NULL else Path(value)

    @property
    def checkpoint(self) -> str:
        return str(self.query_one("#checkpoint", Select).value)

    @engine_work("list-runs")
    def refresh_runs(self) -> None:
        from engine.runs import list_runs

        try:
            runs = list_runs()
        except Exception:  # a broken run directory must not take the picker down with it
            log.exception("listing runs failed")
            runs = []
        self.post_message(RunsListed(runs))

    def on_runs_listed(self, message: RunsListed) -> None:
        message.stop()
        runs = message.runs
        select = self.query_one("#run", Select)
        self._paths = {str(r.path) for r in runs}
        active = str(getattr(self.app, "active_run", "") or "")
        current = select.value
        newest_first = sorted(runs, key=lambda r: r.started or 0.0, reverse=True)
        # The prompt is also the list's blank first row: it reads as a choice only while there is none.
        select.prompt = "pick a run" if runs else NO_RUNS
        with select.prevent(Select.Changed):  # re-listing is not a change of choice
            select.set_options([(run_label(r), str(r.path)) for r in newest_first])
        if active in self._paths and active != self._last_active:
            self._last_active = active
            select.value = active
        elif current is not Select.NULL and current in self._paths:
            with select.prevent(Select.Changed):
                select.value = current
        elif newest_first:
            select.value = str(newest_first[0].path)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(RunPicked(self.run_dir, self.checkpoint, self))
