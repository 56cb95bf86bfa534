"""The Train tab: a validated form, the detached training process, live curves and the runs table.

Training never runs in this process: Start creates a run directory and launches `python -m engine train`
in its own session. TrainForm holds the form, RunFollower tails the followed and overlaid runs' events,
RunMonitor draws them; this tab starts, stops and resumes runs and wires the three together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, DataTable

from engine.config import RunConfig
from engine.errors import SmallGPTError
from tui.tabs.base import EngineTab
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_follower import FollowChanged, RunFollower
from tui.widgets.run_monitor import RunMonitor
from tui.widgets.runs_table import RunsTable
from tui.widgets.train_form import TrainForm
from tui.workers import WorkFailed, engine_work


@dataclass
class RunLaunched(Message):
    """A training process was started for run_dir (fresh or resumed)."""
    run_dir: Path
    pid: int


class TrainTab(EngineTab):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start"),
        Binding("ctrl+t", "stop", "Stop"),
        Binding("ctrl+r", "resume", "Resume"),
        Binding("ctrl+l", "toggle_log", "Log scale"),
        Binding("ctrl+o", "toggle_overlay", "Overlay run"),
        Binding("ctrl+y", "focus_runs", "Runs table"),
    ]
    can_focus = True

    def __init__(self) -> None:
        super().__init__()
        self.follower = RunFollower()  # asked about live runs at quit or hang-up, even before it is mounted

    def compose(self) -> ComposeResult:
        yield self.follower
        with Horizontal(id="train-body"):
            yield TrainForm(id="train-left")
            yield RunMonitor(self.follower, id="train-monitor")

    @property
    def monitor(self) -> RunMonitor:
        return self.query_one(RunMonitor)

    def on_follow_changed(self, message: FollowChanged) -> None:
        self.redraw(message.force)

    def redraw(self, force: bool = False) -> None:
        """The runs table, the Stop/Resume buttons and (paced, unless forced) the monitor."""
        self.monitor.show_runs()
        w = self.follower.followed
        self.query_one("#stop", Button).disabled = w is None or not w.live
        self.query_one("#resume", Button).disabled = w is None or w.live
        self.monitor.redraw(force)

    # ----- actions ----------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"start": self.action_start, "stop": self.action_stop, "resume": self.action_resume}
        if event.button.id in actions:
            actions[event.button.id]()

    def action_start(self) -> None:
        form = self.query_one(TrainForm)
        cfg = form.validate()
        if cfg is None:
            self.notify("Fix the fields marked in the form before starting.", severity="warning")
            return
        form.remember()
        self.monitor.say("Creating the run…" if not form.fine_tune else "Creating the run (reading the task data)…")
        self._launch(cfg, form.run_name, form.fine_tune)

    @engine_work("start")
    def _launch(self, cfg: RunConfig, name: str | None, fine_tune: bool) -> None:
        from engine.runs import create_run, launch  # no torch: the trainer imports it in its own process

        if fine_tune:  # reads the task data and the base run (engine.finetune imports torch: in this worker)
            from engine.finetune import create_finetune_run

            run_dir = create_finetune_run(cfg, name=name)
        else:
            run_dir = create_run(cfg, name=name)
        self.post_message(RunLaunched(Path(run_dir), launch(run_dir)))

    @engine_work("resume")
    def _resume(self, run_dir: Path) -> None:
        from engine.runs import launch

        self.post_message(RunLaunched(run_dir, launch(run_dir, resume=True)))

    def on_run_launched(self, message: RunLaunched) -> None:
        self.follower.attach(message.run_dir, message.pid)

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group in ("start", "resume"):  # instead of "Creating the run…" for good
            self.monitor.say(f"{message.group} failed (see the notification)")

    def action_stop(self) -> None:
        w = self.follower.followed
        if w is None or not w.live:
            self.notify("No live run to stop.", severity="warning")
            return
        w.stopping = True
        self._stop([w.path])
        self.redraw(force=True)

    @engine_work("stop")
    def _stop(self, paths: list[Path]) -> None:
        from engine.runs import stop_run

        for p in paths:
            stop_run(p)

    def action_resume(self) -> None:
        path = self.follower.attached or self.query_one(RunsTable).run_key()
        if not path:
            self.notify("Select a run in the table first (Enter follows it).", severity="warning")
        elif self.follower.is_live(path):
            self.notify(f"Run {Path(path).name} is already running.", severity="warning", markup=False)
        else:
            self._resume(Path(path))

    def action_focus_runs(self) -> None:
        self.query_one(RunsTable).focus()

    def action_toggle_log(self) -> None:
        chart = self.query_one(LossChart)
        chart.log_scale = not chart.log_scale

    def action_toggle_overlay(self) -> None:
        path = self.query_one(RunsTable).run_key()
        if path is not None:
            self.follower.toggle_overlay(path)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if isinstance(event.data_table, RunsTable) and event.row_key.value:
            self.follower.attach(Path(event.row_key.value))

    # ----- quitting (asked by the app) ----------------------------------------------------------------
    def live_runs(self) -> list[Path]:
        """Runs this TUI follows or launched that are still training."""
        return self.follower.live_runs()

    def stop_runs(self, paths: list[Path]) -> None:
        """Ask each run to stop, now (the app is about to exit, so not in a worker)."""
        from engine.runs import stop_run

        try:
            for p in paths:
                stop_run(p)
        except SmallGPTError as e:
            self.app.report_error(e)  # type: ignore[attr-defined]
