"""smallgpt-tui: the Textual app. Header, five tabs, Footer; keys, help, command palette, settings.

Each tab is a widget class (tui/tabs/<name>.py) mounted in the TabPane of the same id. Tabs share state
through the app's reactives (corpus, tokenizer_path, val_ratio, active_run), set from the messages in
tui/messages.py and remembered in the settings file. Nothing here imports torch: the first frame must
not wait for it.
"""

from __future__ import annotations

import argparse
import logging
import os
from functools import partial
from typing import Iterable

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, TabbedContent, TabPane, Tabs

from engine.errors import SmallGPTError
from engine.paths import log_path
from tui.driver import HangUp, TerminalDriver
from tui.messages import CorpusSelected, RunAttached, RunStates, SplitChanged, TokenizerReady
from tui.screens import HelpScreen, QuitScreen
from tui.settings import Settings
from tui.tabs.data import DataTab
from tui.tabs.generate import GenerateTab
from tui.tabs.inspect import InspectTab
from tui.tabs.tokenizer import TokenizerTab
from tui.tabs.train import TrainTab

log = logging.getLogger("smallgpt.tui")

# (pane id, title, widget class): the order is the order of the tabs and of the keys 1-5.
TABS: list[tuple[str, str, type[Widget]]] = [
    ("data", "Data", DataTab),
    ("tokenizer", "Tokenizer", TokenizerTab),
    ("train", "Train", TrainTab),
    ("generate", "Generate", GenerateTab),
    ("inspect", "Inspect", InspectTab),
]


class SmallGPTApp(App):
    TITLE = "smallgpt"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        *[Binding(str(i), f"show_tab('{pane}')", f"{title} tab", show=False)
          for i, (pane, title, _) in enumerate(TABS, 1)],
        # alt+1-5 as well, from a text field too; an Escape and a digit that arrive together (SSH, tmux) are
        # alt+digit. No description: the help lists the tabs once.
        *[Binding(f"alt+{i}", f"show_tab('{pane}')", show=False) for i, (pane, _, _) in enumerate(TABS, 1)],
        Binding("question_mark,f1", "help", "Help"),
        Binding("escape", "leave_field", "Leave the field (then 1-5 switch tabs)", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    corpus: reactive[str] = reactive("python-docs", init=False)
    tokenizer_path: reactive[str] = reactive("", init=False)
    val_ratio: reactive[float] = reactive(0.1, init=False)
    active_run: reactive[str] = reactive("", init=False)
    run_states: reactive[tuple[tuple[str, str], ...]] = reactive((), init=False)

    def __init__(self, corpus: str | None = None, settings: Settings | None = None) -> None:
        super().__init__(driver_class=TerminalDriver)
        self._hung_up = False
        self.settings = settings if settings is not None else Settings.load()
        # Over SSH every animated frame costs bandwidth: no animations unless the user asks for them.
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            self.animation_level = "none"
        data = self.settings.table("data")
        self.set_reactive(SmallGPTApp.corpus, corpus or data.get("corpus") or "python-docs")
        self.set_reactive(SmallGPTApp.val_ratio, float(data.get("val_ratio", 0.1)))
        tok = self.settings.get("tokenizer", "path", "")
        self.set_reactive(SmallGPTApp.tokenizer_path, tok if tok and os.path.exists(tok) else "")

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            for pane, title, cls in TABS:
                with TabPane(title, id=pane):
                    yield cls()
        yield Footer()

    def on_mount(self) -> None:
        theme = self.settings.get("ui", "theme")
        if theme in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, lambda t: self.settings.update("ui", theme=t.name))
        self.sub_title = self.corpus
        self.call_after_refresh(self.action_leave_field)

    # ----- shared state -----------------------------------------------------------------------------
    def on_corpus_selected(self, message: CorpusSelected) -> None:
        self.corpus = message.source
        self.sub_title = message.source
        self.settings.update("data", corpus=message.source)

    def on_split_changed(self, message: SplitChanged) -> None:
        self.val_ratio = message.val_ratio
        self.settings.update("data", val_ratio=message.val_ratio)

    def on_tokenizer_ready(self, message: TokenizerReady) -> None:
        self.tokenizer_path = message.path
        self.settings.update("tokenizer", path=message.path)

    def on_run_attached(self, message: RunAttached) -> None:
        self.active_run = message.run_dir

    def on_run_states(self, message: RunStates) -> None:
        self.run_states = message.states

    # ----- errors -----------------------------------------------------------------------------------
    def report_error(self, error: BaseException) -> None:
        """A user mistake shows its one sentence; anything else is a bug: a short note, traceback in the log."""
        if isinstance(error, SmallGPTError):
            log.info("reported to the user: %s", error, exc_info=error)
            self.notify(str(error), title="Error", severity="error", markup=False, timeout=10)
        else:
            log.error("internal error in the TUI", exc_info=error)
            self.notify(f"Internal error ({type(error).__name__}), see {log_path()}", title="Error",
                        severity="error", markup=False, timeout=10)

    # ----- keys, help, palette ----------------------------------------------------------------------
    def action_show_tab(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self.action_leave_field()

    def action_leave_field(self) -> None:
        """Focus the active tab itself: its keys work, and digits reach the app (1-5) instead of a field."""
        widget = self.tab_widget(self.query_one(TabbedContent).active)
        if widget.can_focus:
            widget.focus()
        else:
            self.query_one(Tabs).focus()

    def tab_widget(self, pane: str) -> Widget:
        return self.query_one(f"TabPane#{pane}").children[0]

    def key_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(section title, [(key, description)]) for the app and each tab, from their BINDINGS."""
        def keys(bindings: Iterable[Binding]) -> list[tuple[str, str]]:
            # A binding of several keys ("question_mark,f1") arrives as one per key: one row, keys joined.
            rows: dict[tuple[str, str], list[str]] = {}
            for b in bindings:
                if b.description:
                    rows.setdefault((b.action, b.description), []).append(self.get_key_display(b))
            return [(", ".join(dict.fromkeys(k)), description) for (_, description), k in rows.items()]

        sections = [("Everywhere", keys(Binding.make_bindings(self.BINDINGS))
                     + [("ctrl+p", "Command palette: every action by name")])]
        for pane, title, _ in TABS:
            widget = self.tab_widget(pane)
            tab_keys = keys(Binding.make_bindings(getattr(type(widget), "BINDINGS", [])))
            if tab_keys:
                sections.append((f"{title} tab", tab_keys))
        return sections

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_sections()))

    def action_import_model(self) -> None:
        from tui.import_screen import ImportScreen, describe

        def done(summary: dict | None) -> None:
            if summary:
                self.active_run = summary["path"]  # Generate and Inspect default to it
                self.notify(describe(summary), title="Import")

        self.push_screen(ImportScreen(), done)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for pane, title, _ in TABS:
            yield SystemCommand(f"Go to {title}", f"Show the {title} tab", partial(self.action_show_tab, pane))
        yield SystemCommand("Keys", "List every key (? or F1)", self.action_help)
        yield SystemCommand("Import a model folder", "GPT-2 in Hugging Face format becomes a run",
                            self.action_import_model)
        # Every key a tab declares is also a command, so nothing is reachable only by a key.
        for pane, title, _ in TABS:
            widget = self.tab_widget(pane)
            for b in Binding.make_bindings(getattr(type(widget), "BINDINGS", [])):
                if b.description:
                    yield SystemCommand(f"{title}: {b.description}", f"key {self.get_key_display(b)}",
                                        partial(self._run_tab_action, pane, widget, b.action))

    async def _run_tab_action(self, pane: str, widget: Widget, action: str) -> None:
        self.query_one(TabbedContent).active = pane
        await self.run_action(action, widget)

    # ----- quitting ---------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitScreen):  # ctrl+q again while asked: the question stands
            return
        live = self.query_one(TrainTab).live_runs()
        if not live:
            self.exit()
            return

        def decide(choice: str | None) -> None:
            if choice is None:
                return
            if choice == "stop":
                self.query_one(TrainTab).stop_runs(live)
            self.exit()

        self.push_screen(QuitScreen([p.name for p in live]), decide)

    def on_hang_up(self, message: HangUp) -> None:
        """The terminal went away (or SIGTERM): quit as ctrl+q then "leave running" would."""
        if self._hung_up:  # the input and the output both fail on a dropped link: one exit, one log line
            return
        self._hung_up = True
        live = [run for tab in self.query(TrainTab) for run in tab.live_runs()]  # none before the tabs mount
        log.warning("exiting: %s; live runs left running: %s", message.reason,
                    ", ".join(p.name for p in live) or "none")
        self.exit()


def main(argv: list[str] | None = None) -> None:
    from tui.cli import setup_logging

    parser = argparse.ArgumentParser(prog="smallgpt-tui", description="Terminal workbench for small language models.")
    parser.add_argument("--corpus", help="corpus to preselect: built-in name, catalog name, path, glob or URL")
    args = parser.parse_args(argv)
    setup_logging()
    SmallGPTApp(corpus=args.corpus).run()


if __name__ == "__main__":  # python -m tui.app
    main()
