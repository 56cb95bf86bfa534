"""The Data tab (placeholder until its issue lands)."""

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class DataTab(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("Data")
