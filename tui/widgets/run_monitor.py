"""RunMonitor: the Train tab's right side, drawn from RunFollower's buffers: the followed run's status,
progress and latest sample, the loss curves (with overlaid runs) and the runs table.

Drawing is paced: the status at most every REDRAW_S, the chart (the costly part: a plotext canvas turned
into styled text) at most every CHART_S, nothing while hidden (the dirty flags stay set, so it catches up
when shown). A fast run costs the UI the same as a slow one (measured: 4-5% of a core following a run
that logs a dozen times a second).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import ProgressBar

from tui.run_history import RunHistory, format_duration
from tui.widgets.loss_chart import LossChart, Series
from tui.widgets.run_follower import RunFollower, Watch
from tui.widgets.runs_table import RunsTable, human_count

REDRAW_S = 1.0  # how often the status is redrawn (only when something changed)
CHART_S = 2.0  # how often the loss chart is


class Readout(Widget):
    """Text that changes every second but never its size: a repaint, without the whole-screen re-layout
    that Static.update costs (measured: most of the UI's CPU while following a fast run)."""

    DEFAULT_CSS = "Readout { height: 3; }"
    text: reactive[Text] = reactive(Text, layout=False)

    def render(self) -> Text:
        return self.text


def state(w: Watch) -> str:
    if w.running:
        return "stopping" if w.stopping else "running"
    if w.pid:
        return "starting"
    return {"": "not running", "max_steps": "finished"}.get(w.history.ended, w.history.ended)


class RunMonitor(Vertical):
    def __init__(self, follower: RunFollower, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.follower = follower
        self._chart_dirty = self._status_dirty = False
        self._chart_drawn = 0.0
        self._sample_shown: str | None = None

    def compose(self) -> ComposeResult:
        yield Readout(id="run-status")
        yield ProgressBar(id="run-progress", show_eta=False)
        yield LossChart(id="loss-chart")
        yield Readout(id="run-sample")
        yield RunsTable(id="runs-table")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self.say("No run followed: fill the form and press Start (ctrl+s).")
        self.set_interval(REDRAW_S, self.redraw)

    def on_show(self) -> None:  # what changed while the tab was hidden is drawn now, not at the next tick
        self.redraw()

    def say(self, message: str) -> None:
        self.query_one("#run-status", Readout).text = Text(message)

    def show_runs(self) -> None:
        f = self.follower
        self.query_one(RunsTable).update_runs(f.runs, f.overlay, f.attached)

    def redraw(self, force: bool = False) -> None:
        """Draw what changed in the buffers, at the pace above (force: everything, now)."""
        watches = self.follower.watches.values()
        if any(w.history.dirty for w in watches):
            self._chart_dirty = self._status_dirty = True
            for w in watches:
                w.history.dirty = False
        if not (force or self.region):  # a hidden tab has no region
            return
        now = time.monotonic()
        if self._chart_dirty and (force or now - self._chart_drawn >= CHART_S):
            self._chart_dirty, self._chart_drawn = False, now
            self.query_one(LossChart).series = self._series()
        if self._status_dirty or force:
            self._status_dirty = False
            self._show_status(self.follower.followed)

    def _series(self) -> list[Series]:
        series: list[Series] = []
        w = self.follower.followed
        if w is not None:
            h = w.history
            series += [Series(f"{h.name} train", h.train_steps, h.train_loss),
                       Series(f"{h.name} val", h.val_steps, h.val_loss)]
        for o in self.follower.overlaid():
            h = o.history
            series.append(Series(f"{h.name} val", h.val_steps, h.val_loss) if h.val_steps
                          else Series(f"{h.name} train", h.train_steps, h.train_loss))
        return series

    def _show_status(self, w: Watch | None) -> None:
        bar = self.query_one(ProgressBar)
        if w is None:
            bar.display = False
            return
        h = w.history
        self.query_one("#run-status", Readout).text = status_text(h, state(w))
        bar.display = True
        bar.update(total=max(h.max_steps, 1), progress=h.step)
        if h.sample != self._sample_shown:  # samples come once per eval
            self._sample_shown = h.sample
            sample = self.query_one("#run-sample", Readout)
            sample.text = Text(h.sample.strip()[-400:], overflow="ellipsis")
            sample.display = bool(h.sample)


def status_text(h: RunHistory, state: str) -> Text:
    """Three lines, most important first on each, cut rather than wrapped: the readout has a fixed height."""
    last_loss = f"{h.train_loss[-1]:.4f}" if h.train_loss else "-"
    last_val = f"{h.val_loss[-1]:.4f}" if h.val_loss else "-"
    lr = f"{h.lr:.2e}" if h.lr is not None else "-"
    tps = f"{human_count(int(h.tokens_per_s))} tok/s" if h.tokens_per_s else "- tok/s"
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{h.name}", style="bold")
    text.append(f"  {state}\n", style="bold green" if state == "running" else "yellow")
    text.append(f"step {h.step}/{h.max_steps or '?'}  ETA {format_duration(h.eta_seconds())}  {tps}\n")
    if h.error:  # also shown in full as a notification
        text.append(h.error, style="bold red")
    else:
        text.append(f"loss {last_loss}  val {last_val}  lr {lr}  params {human_count(h.params)}")
    return text
