"""RunActions: what the Generate tab does to a run besides sampling it: write its int8 checkpoint (ctrl+t),
serve it over HTTP (ctrl+r). An invisible widget: each job runs in a thread worker and its outcome goes
up as an ActionDone for the tab's status line and a notification.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message
from textual.widget import Widget

from tui.workers import ReportsWorkerErrors, engine_work


@dataclass
class ActionDone(Message):
    status: str  # for the status line
    note: str  # for the notification


class RunActions(ReportsWorkerErrors, Widget):
    DEFAULT_CSS = "RunActions { display: none; }"

    @engine_work("quantize")
    def quantize(self, run_dir: Path) -> None:
        from engine.int8 import save_int8

        report = save_int8(run_dir)
        fp32, int8 = report.get("fp32_bytes"), report.get("int8_bytes")
        sizes = f": {int8 / 1e6:.2f} MB vs {fp32 / 1e6:.2f} MB fp32" if fp32 and int8 else ""
        self.post_message(ActionDone(f"int8 checkpoint written{sizes}; ctrl+b compares it with fp32",
                                     f"int8 checkpoint written{sizes}."))

    @engine_work("serve")
    def serve(self, run_dir: Path, checkpoint: str) -> None:
        from serve.server import serve_in_background  # its own process: it outlives the TUI

        info = serve_in_background(run_dir, checkpoint)
        run = run_dir.name
        text = f"{run} ({info['checkpoint']}) is served at {info['url']}; `smallgpt runs stop {run}` stops it"
        self.post_message(ActionDone(text, text + "."))
