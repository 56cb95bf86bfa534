"""RunFollower: tails the events of the followed run and of the runs overlaid on the chart; lists checkpoints/.

Training never runs in the TUI's process: runs are detached processes that write RUN/events.jsonl. This
(invisible) widget's one async worker reads those files every POLL_S into tui.run_history.RunHistory
buffers and re-lists checkpoints/ now and then; the Train tab draws from the buffers at its own pace and
hears of a run starting, stopping or failing through FollowChanged.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import work
from textual.message import Message
from textual.widget import Widget

from engine.errors import SmallGPTError
from engine.events import Error, EventReader, parse_event
from tui.messages import RunAttached, RunStates
from tui.run_history import RunHistory
from tui.workers import ReportsWorkerErrors

# The UI shares the CPU with the trainer (a watched run keeps >= 95% of its speed), so it reads at a fixed
# pace however fast the run logs, and lists checkpoints/ (which reads every run's events) rarely, plus at
# once when a followed run starts or ends.
POLL_S = 0.5  # how often events.jsonl files are read
RUNS_EVERY = 20  # list checkpoints/ every RUNS_EVERY polls (10 s)


def pid_alive(pid: int) -> bool:
    """Whether a process we launched still runs (reaping it if it has exited: it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child (another launcher): ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def reap_when_done(pid: int) -> None:
    """Wait for a trainer we launched in a thread of its own: a run that stops while this TUI follows
    another would otherwise stay our zombie child until the TUI exits."""
    def wait() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # pid_alive reaped it first
            pass

    threading.Thread(target=wait, name=f"reap-{pid}", daemon=True).start()


@dataclass
class Watch:
    """A run whose events are read: the followed one, or one overlaid on the chart."""
    path: Path
    reader: EventReader
    history: RunHistory
    running: bool = False
    pid: int | None = None  # set when this TUI launched it: alive before the trainer takes its lock
    stopping: bool = False

    @property
    def live(self) -> bool:
        return self.running or bool(self.pid)


@dataclass
class FollowChanged(Message):
    """The runs list, or whether a followed or overlaid run is live, changed: redraw now."""
    force: bool = False  # the user chose another run: draw even the paced parts, even while hidden


class RunFollower(ReportsWorkerErrors, Widget):
    DEFAULT_CSS = "RunFollower { display: none; }"

    def __init__(self) -> None:
        super().__init__()
        self.watches: dict[str, Watch] = {}
        self.attached = ""  # the followed run's path
        self.overlay: set[str] = set()
        self.runs: list[Any] = []  # engine.runs.RunInfo of checkpoints/, as last listed
        self._launched: dict[str, int] = {}  # every run this TUI started: asked about when quitting
        self._errors_seen: set[str] = set()

    def on_mount(self) -> None:
        self._follow()

    @property
    def followed(self) -> Watch | None:
        return self.watches.get(self.attached)

    def overlaid(self) -> list[Watch]:
        return [self.watches[k] for k in sorted(self.overlay) if k in self.watches]

    def attach(self, run_dir: Path, pid: int | None = None) -> None:
        """Follow run_dir: its whole history first (the reader starts at offset 0), then live."""
        key = str(run_dir)
        old = self.watches.get(key)
        if old is not None and pid is None and key == self.attached:
            return
        if self.attached and self.attached != key and self.attached not in self.overlay:
            self.watches.pop(self.attached, None)
        self.overlay.discard(key)
        self.attached = key
        # A resumed run appends to the same events file: keep the history, only note the new process.
        w = old or Watch(run_dir, EventReader(run_dir), RunHistory(run_dir.name))
        w.pid, w.stopping = pid, False
        if pid is not None:
            w.history.ended = ""
            self._launched[key] = pid
            reap_when_done(pid)
        self.watches[key] = w
        # Straight to the app: a message stops bubbling at the widget whose handler made it, so posted here
        # while the Train tab handles RunLaunched it never got past the tab (Generate kept the old run).
        self.app.post_message(RunAttached(key))
        self.post_message(FollowChanged(force=True))

    def toggle_overlay(self, path: str) -> None:
        if path == self.attached:
            return
        if path in self.overlay:
            self.overlay.discard(path)
            self.watches.pop(path, None)
        else:
            self.overlay.add(path)
            self.watches[path] = Watch(Path(path), EventReader(Path(path)), RunHistory(Path(path).name))
        self.post_message(FollowChanged(force=True))

    def is_live(self, path: str) -> bool:
        w = self.watches.get(path)
        return w is not None and (w.running or bool(w.pid and pid_alive(w.pid)))

    def live_runs(self) -> list[Path]:
        """Runs this TUI follows or launched that are still training."""
        from engine.runs import is_running

        live = {w.path for w in self.watches.values() if self.is_live(str(w.path))}
        live |= {Path(p) for p, pid in self._launched.items() if is_running(Path(p)) or pid_alive(pid)}
        return sorted(live)

    @staticmethod
    def _poll(w: Watch) -> tuple[list[dict[str, Any]], bool]:
        from engine.runs import is_running

        return w.reader.poll(), is_running(w.path)

    # An async worker, not a thread: it sleeps between polls without holding one of the few executor threads,
    # and each poll's file reads go to a thread for as long as they take.
    @work(group="follow", exclusive=True, exit_on_error=False)
    async def _follow(self) -> None:
        from engine.runs import list_runs

        tick, refresh_runs = 0, True
        while True:
            try:
                changed = False
                if refresh_runs or tick % RUNS_EVERY == 0:
                    self.runs = await asyncio.to_thread(list_runs)
                    self.app.post_message(RunStates(tuple((str(r.path), r.status) for r in self.runs)))
                    changed = True
                    if not self.attached:  # a run started before this TUI (or from the CLI): follow it
                        self._reattach()
                refresh_runs = False
                for w in list(self.watches.values()):
                    events, running = await asyncio.to_thread(self._poll, w)
                    w.history.feed(events)
                    if w.live and any(isinstance(parse_event(e), Error) for e in events):  # news, not history
                        self.notify(f"Run {w.history.name} failed: {w.history.error}", severity="error",
                                    timeout=30, markup=False)
                    now_live = running != w.running
                    if w.pid and not running and not pid_alive(w.pid):
                        w.pid = None  # the process is gone (it has said why in its events, if it could)
                        now_live = True
                    if now_live:
                        w.running, w.stopping = running, w.stopping and running
                        w.history.dirty = refresh_runs = changed = True
                if changed:
                    self.post_message(FollowChanged())
            except SmallGPTError as e:  # e.g. a damaged run directory: say so once, keep following
                if str(e) not in self._errors_seen:
                    self._errors_seen.add(str(e))
                    self.app.report_error(e)  # type: ignore[attr-defined]
            tick += 1
            await asyncio.sleep(POLL_S)

    def _reattach(self) -> None:
        live = [r for r in self.runs if r.status == "running"]
        if live:
            newest = max(live, key=lambda r: r.started or 0)
            self.attach(Path(newest.path))
            names = ", ".join(r.name for r in live)
            self.notify(f"Re-attached to live run {newest.name}" + (f" (live: {names})" if len(live) > 1 else ""),
                        markup=False)
