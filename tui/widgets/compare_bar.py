"""CompareBar: the Inspect tab's compare mode, on or off, and its 'vs B' row with the picker of checkpoint
B; shown while compare mode is on. It posts CompareChanged when the mode is switched, or B is picked while
it is on; what a comparison shows is drawn by AttentionView and InspectSide."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Label

from tui.widgets.run_picker import RunPicked, RunPicker


@dataclass
class CompareChanged(Message):
    """Compare mode was switched, or checkpoint B changed while it is on (switched False)."""
    active: bool
    switched: bool = True


class CompareBar(Horizontal):
    active: reactive[bool] = reactive(False, init=False)

    def compose(self) -> ComposeResult:
        yield Label("vs B", classes="ab")
        yield RunPicker(checkpoint="best", id="insp-run-b")

    def against(self) -> tuple[Path, str] | None:
        """Checkpoint B as (run, checkpoint) in compare mode, else None."""
        b = self.query_one(RunPicker)
        return (b.run_dir, b.checkpoint) if self.active and b.run_dir is not None else None

    def watch_active(self, active: bool) -> None:
        self.display = active
        self.post_message(CompareChanged(active))

    def on_run_picked(self, event: RunPicked) -> None:
        event.stop()  # the tab's own RunPicked handler is for A
        if self.active:
            self.post_message(CompareChanged(True, switched=False))
