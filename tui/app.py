"""smallgpt-tui: the Textual app. Header, five tabs, Footer."""

from __future__ import annotations

import argparse

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, TabbedContent, TabPane

from tui.tabs.data import DataTab
from tui.tabs.generate import GenerateTab
from tui.tabs.inspect import InspectTab
from tui.tabs.tokenizer import TokenizerTab
from tui.tabs.train import TrainTab


class SmallGPTApp(App):
    TITLE = "smallgpt"
    BINDINGS = [("ctrl+q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent():
            with TabPane("Data", id="data"):
                yield DataTab()
            with TabPane("Tokenizer", id="tokenizer"):
                yield TokenizerTab()
            with TabPane("Train", id="train"):
                yield TrainTab()
            with TabPane("Generate", id="generate"):
                yield GenerateTab()
            with TabPane("Inspect", id="inspect"):
                yield InspectTab()
        yield Footer()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="smallgpt-tui")
    parser.add_argument("--corpus", default="python-docs")
    parser.parse_args(argv)
    SmallGPTApp().run()
