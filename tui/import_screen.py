"""ImportScreen (command palette: "Import a model folder"): a GPT-2 folder in Hugging Face format becomes
a run, as `smallgpt import` does. engine.interop.import_model runs in a thread worker; a mistake (no
config.json, a pickle file, ...) is shown in the dialog, which stays open to fix the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, ProgressBar, Static

from engine.errors import SmallGPTError


class ImportScreen(ModalScreen[dict | None]):
    """Dismissed with import_model's summary, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="import-dialog"):
            yield Static("Import a model folder", id="import-title")
            yield Static("A GPT-2 folder in Hugging Face format (config.json, model.safetensors, tokenizer.json "
                         "or vocab.json + merges.txt), e.g. copied from `huggingface-cli download gpt2`.",
                         id="import-help")
            yield Input(placeholder="folder, e.g. ~/gpt2", id="import-src")
            yield Input(placeholder="run name (default: the folder's name)", id="import-name")
            yield ProgressBar(total=1.0, show_eta=False, id="import-progress")
            yield Static(id="import-status")
            with Horizontal(id="import-buttons"):
                yield Button("Import", id="import", variant="primary")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#import-progress").display = False
        self.query_one("#import-src", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._begin()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "import":
            self._begin()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        if not self.query_one("#import", Button).disabled:  # an import under way finishes first
            self.dismiss(None)

    def _begin(self) -> None:
        src = self.query_one("#import-src", Input).value.strip()
        if not src:
            self._show("Type the folder that holds config.json and model.safetensors.", error=True)
            return
        name = self.query_one("#import-name", Input).value.strip() or None
        self.query_one("#import", Button).disabled = True
        self.query_one("#import-progress").display = True
        self._show("importing...")
        self._run_import(str(Path(src).expanduser()), name)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def _run_import(self, src: str, name: str | None) -> None:
        from engine.interop import import_model

        bar = self.query_one("#import-progress", ProgressBar)

        def progress(fraction: float, label: str) -> None:
            self.app.call_from_thread(bar.update, progress=fraction)
            self.app.call_from_thread(self._show, f"importing: {label}")

        try:
            summary = import_model(src, name, progress=progress)
        except SmallGPTError as e:
            self.app.call_from_thread(self._import_failed, str(e))
            return
        except Exception as e:  # a bug: the app reports it (traceback to the log); the dialog stays usable
            self.app.call_from_thread(self._import_failed, "The import failed unexpectedly: see logs/smallgpt.log.")
            self.app.call_from_thread(self.app.report_error, e)  # type: ignore[attr-defined]
            return
        self.app.call_from_thread(self.dismiss, summary)

    def _import_failed(self, message: str) -> None:
        self.query_one("#import", Button).disabled = False
        self.query_one("#import-progress").display = False
        self._show(message, error=True)

    def _show(self, message: str, error: bool = False) -> None:
        self.query_one("#import-status", Static).update(Text(message, style="bold red" if error else ""))


def describe(summary: dict[str, Any]) -> str:
    """One line for the notification after an import."""
    m = summary["model"]
    return (f"Imported {summary['run']}: {summary['params']:,} parameters, {m['n_layer']} layers x {m['n_head']} "
            f"heads. Pick it in Generate or Inspect.")
