"""smallgpt-tui: the Textual app. (Minimal shell; the TUI issue fills in the tabs.)"""

from __future__ import annotations

import argparse

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Placeholder, TabbedContent, TabPane

TABS = ("Data", "Tokenizer", "Train", "Generate", "Inspect")


class SmallGPTApp(App):
    TITLE = "smallgpt"
    BINDINGS = [("ctrl+q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent():
            for name in TABS:
                with TabPane(name, id=name.lower()):
                    yield Placeholder(name)
        yield Footer()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="smallgpt-tui")
    parser.add_argument("--corpus", default="python-docs")
    parser.parse_args(argv)
    SmallGPTApp().run()
