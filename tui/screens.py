"""Modal screens of the app shell: the key help and the quit question."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class HelpScreen(ModalScreen[None]):
    """Every key, section by section, collected from the bindings of the app and of each tab."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, sections: Iterable[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        text = Text()
        for title, keys in self.sections:
            text.append(f"{title}\n", style="bold underline")
            for key, description in keys:
                text.append(f"  {key:<16}", style="bold")
                text.append(f"{description}\n")
            text.append("\n")
        text.append("Tab / Shift+Tab move between fields; Escape leaves a field so the number keys switch tabs.",
                    style="italic")
        with Vertical(id="help-dialog"):
            yield Static("Keys", id="help-title")
            with VerticalScroll():
                yield Static(text, id="help-text")
            yield Static("Escape closes", id="help-hint")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


class QuitScreen(ModalScreen[str | None]):
    """Asked when runs are live: stop them, leave them running (they survive the app), or cancel."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop runs and quit"),
        Binding("l", "choose('leave')", "Leave running and quit"),
        Binding("escape,c", "choose(None)", "Cancel"),
    ]

    def __init__(self, run_names: list[str]) -> None:
        super().__init__()
        self.run_names = run_names

    def compose(self) -> ComposeResult:
        names = ", ".join(self.run_names)
        with Vertical(id="quit-dialog"):
            yield Static(Text(f"Training is still running: {names}."), id="quit-question")
            yield Static("Stop it (a checkpoint is saved) or leave it running? You can re-attach later.",
                         id="quit-detail")
            with Horizontal(id="quit-buttons"):
                yield Button("Stop (s)", id="stop", variant="error")
                yield Button("Leave running (l)", id="leave", variant="primary")
                yield Button("Cancel (Esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
