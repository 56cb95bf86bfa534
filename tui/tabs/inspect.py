"""The Inspect tab (placeholder until its issue lands)."""

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class InspectTab(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("Inspect")
