"""LivePoller: while the Inspect tab's live mode is on, reads the run's new `heads` events and notices a
new `latest` checkpoint, once a second, in a thread worker; posts LiveUpdate when either changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.widget import Widget

from tui.workers import ReportsWorkerErrors, engine_work

LIVE_POLL_S = 1.0


@dataclass
class LiveUpdate(Message):
    heads: list[Any]  # new engine.events.Heads (for the trend sparklines)
    new_checkpoint: bool  # ckpt/latest changed since the last poll (always true at the first)


class LivePoller(ReportsWorkerErrors, Widget):
    DEFAULT_CSS = "LivePoller { display: none; }"

    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None
        self._timer: Any = None
        self._reader: Any = None  # engine.events.EventReader of run_dir
        self._stamp: Any = None

    def switch(self, on: bool, run_dir: Path | None) -> None:
        if on:
            self.follow(run_dir)
            self.start()
        else:
            self.stop()

    def follow(self, run_dir: Path | None) -> None:
        """Poll this run from now on; its events are read from the top."""
        if run_dir != self.run_dir:
            self.run_dir, self._reader = run_dir, None

    def start(self) -> None:
        self._stamp = None  # the first poll after switching on always reports the checkpoint
        self._timer = self.set_interval(LIVE_POLL_S, self._tick)
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _tick(self) -> None:
        if self.run_dir is not None:
            self._poll(self.run_dir)

    @engine_work("live-poll")
    def _poll(self, run_dir: Path) -> None:
        from engine.checkpoint import checkpoint_stamp
        from engine.events import EventReader, Heads, typed

        if self._reader is None:  # follow() drops it when the run changes
            self._reader = EventReader(run_dir)
        heads = [e for e in typed(self._reader.poll()) if isinstance(e, Heads)]
        stamp = checkpoint_stamp(run_dir, "latest")
        new_checkpoint = stamp is not None and stamp != self._stamp
        self._stamp = stamp
        if heads or new_checkpoint:
            self.post_message(LiveUpdate(heads, new_checkpoint))
