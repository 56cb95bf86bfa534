"""The Generate tab (placeholder until its issue lands)."""

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class GenerateTab(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("Generate")
