"""The Train tab (placeholder until its issue lands)."""

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class TrainTab(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("Train")
