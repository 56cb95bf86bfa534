"""The Data tab: pick a corpus, see its statistics, histograms and first lines, encode it for training.

Loading, statistics and encoding run in thread workers (engine.corpora and engine.dataset may be slow on
a large corpus and pull numpy); the tab only draws what they return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, DirectoryTree, Input, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from engine.paths import home
from tui.messages import CorpusSelected, Progress, SplitChanged, progress_poster
from tui.tabs.base import EngineTab
from tui.widgets.histogram import Histogram
from tui.workers import engine_work

PREVIEW_LINES = 200
CHAR_BARS = 16
# Invisible characters get a visible stand-in in the histogram.
CHAR_NAMES = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def char_label(ch: str) -> str:
    if ch in CHAR_NAMES:
        return CHAR_NAMES[ch]
    return ch if ch.isprintable() else f"U+{ord(ch):04X}"


@dataclass
class CorporaListed(Message):
    corpora: list[Any]  # engine.corpora.CorpusInfo


@dataclass
class CorpusLoaded(Message):
    source: str
    corpus: Any  # engine.corpora.Corpus
    stats: Any  # engine.corpora.CorpusStats
    preview: str  # its first PREVIEW_LINES lines


@dataclass
class Encoded(Message):
    out: Path  # the encoded dataset's directory


class DataTab(EngineTab):
    BINDINGS = [
        Binding("ctrl+s", "encode", "Encode"),
        Binding("ctrl+o", "open_source", "Open path/URL"),
        Binding("ctrl+b", "browse", "Browse folders"),
    ]
    can_focus = True

    def __init__(self) -> None:
        super().__init__()
        self.corpus: Any = None  # engine.corpora.Corpus of what is shown

    def compose(self) -> ComposeResult:
        with Horizontal(id="data-body"):
            with Vertical(id="data-left"):
                yield Label("Corpus", classes="section")
                yield OptionList(id="corpus-list")
                yield DirectoryTree(home(), id="corpus-tree")
                yield Input(placeholder="path, glob or URL, then Enter", compact=True, id="corpus-source")
                yield Button("Browse folders ^b", id="browse", compact=True)
                with Horizontal(classes="field"):
                    yield Label("val share", classes="field-label")
                    yield Input(str(self.app.val_ratio), compact=True, id="val-ratio")  # type: ignore[attr-defined]
                yield Static(id="val-ratio-error", classes="field-error")
                yield Button("Encode ^s", id="encode", variant="primary", compact=True)
                yield ProgressBar(id="data-progress", show_eta=False)
                yield Static(id="data-status")
            with VerticalScroll(id="data-view"):
                yield Static(id="corpus-title")
                yield DataTable(id="corpus-stats", show_cursor=False)
                yield Histogram("Most frequent characters", id="char-hist")
                yield Histogram("Line lengths (chars)", id="line-hist")
                yield Label("Preview", classes="section")
                yield Static(id="corpus-preview")

    def on_mount(self) -> None:
        self.query_one("#corpus-tree").display = False
        self.query_one("#data-progress").display = False
        self.query_one("#val-ratio-error").display = False
        table = self.query_one("#corpus-stats", DataTable)
        table.add_columns("statistic", "value")
        self._list_corpora()
        self.load(self.app.corpus)  # type: ignore[attr-defined]

    # ----- choosing -------------------------------------------------------------------------------
    @engine_work("list")
    def _list_corpora(self) -> None:
        from engine.corpora import list_corpora

        self.post_message(CorporaListed(list_corpora()))

    def on_corpora_listed(self, message: CorporaListed) -> None:
        options = self.query_one("#corpus-list", OptionList)
        options.clear_options()
        for c in message.corpora:
            label = Text.assemble((c.name, "bold"), (f"  {c.kind}", "dim"))
            options.add_option(Option(label, id=c.name))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.load(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "corpus-source" and event.value.strip():
            self.load(event.value.strip())

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.load(str(event.path))

    def action_open_source(self) -> None:
        self.query_one("#corpus-source", Input).focus()

    def action_browse(self) -> None:
        tree = self.query_one("#corpus-tree", DirectoryTree)
        tree.display = not tree.display
        self.query_one("#corpus-list").display = not tree.display
        (tree if tree.display else self.query_one("#corpus-list")).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "browse":
            self.action_browse()
        elif event.button.id == "encode":
            self.action_encode()

    # ----- loading --------------------------------------------------------------------------------
    def load(self, source: str) -> None:
        """Load `source` (name, path, glob or URL) and compute its statistics in a worker."""
        self.query_one("#data-status", Static).update(Text(f"Loading {source}…"))
        self._load(source)

    @engine_work("load")
    def _load(self, source: str) -> None:
        from engine.corpora import corpus_stats, load_corpus

        progress = progress_poster(self, "load")
        corpus = load_corpus(source, progress=progress)
        stats = corpus_stats(corpus, progress=progress)
        preview = "\n".join(corpus.head(PREVIEW_LINES))
        self.post_message(CorpusLoaded(source, corpus, stats, preview))

    def on_corpus_loaded(self, message: CorpusLoaded) -> None:
        source, corpus, stats, preview = message.source, message.corpus, message.stats, message.preview
        self.corpus = corpus
        self.query_one("#data-progress").display = False
        title = Text.assemble((corpus.name, "bold"), f"  {source}" if source != corpus.name else "")
        self.query_one("#corpus-title", Static).update(title)
        self.query_one("#data-status", Static).update(Text(f"Loaded {corpus.name}."))
        table = self.query_one("#corpus-stats", DataTable)
        table.clear()
        rows = [("characters", f"{stats.chars:,}"), ("distinct characters", f"{stats.distinct_chars:,}"),
                ("words", f"{stats.words:,}"), ("unique words", f"{stats.unique_words:,}"),
                ("lines", f"{stats.lines:,}"), ("longest line", f"{stats.max_line_length:,}"),
                ("non-ASCII", f"{stats.non_ascii_share:.2%}")]
        if stats.replaced_bytes:
            rows.append(("bad UTF-8 bytes", f"{stats.replaced_bytes:,}"))
        rows += [(f"top word {i}", Text(f"{w} ({n:,})")) for i, (w, n) in enumerate(stats.top_words[:5], 1)]
        for name, value in rows:
            table.add_row(name, value)
        self.query_one("#char-hist", Histogram).items = [(char_label(c), n) for c, n in stats.char_hist[:CHAR_BARS]]
        self.query_one("#line-hist", Histogram).items = [(f"≤{edge}", n) for edge, n in stats.line_length_hist if n]
        self.query_one("#corpus-preview", Static).update(Text(preview))
        self.post_message(CorpusSelected(source))

    # ----- split and encoding ---------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "val-ratio":
            return
        error = self.query_one("#val-ratio-error", Static)
        try:
            ratio = float(event.value)
            ok = 0.0 < ratio < 0.5
        except ValueError:
            ok = False
        error.update("" if ok else "val share must be a number between 0 and 0.5 (e.g. 0.1)")
        error.display = not ok
        self.query_one("#encode", Button).disabled = not ok
        if ok and ratio != self.app.val_ratio:  # type: ignore[attr-defined]
            self.post_message(SplitChanged(ratio))

    def action_encode(self) -> None:
        tokenizer = self.app.tokenizer_path  # type: ignore[attr-defined]
        if self.corpus is None:
            self.notify("Load a corpus first: pick one from the list or type a path.", severity="warning")
        elif not tokenizer:
            self.notify("Train a tokenizer first in the Tokenizer tab (key 2).", severity="warning")
        elif not self.query_one("#encode", Button).disabled:
            self.query_one("#data-status", Static).update("Encoding…")
            self._encode(self.corpus, Path(tokenizer), self.app.val_ratio)  # type: ignore[attr-defined]

    @engine_work("encode")
    def _encode(self, corpus: Any, tokenizer_path: Path, val_ratio: float) -> None:
        from engine.dataset import prepare_dataset
        from engine.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(tokenizer_path)
        out = prepare_dataset(corpus, tokenizer, val_ratio=val_ratio, progress=progress_poster(self, "encode"))
        self.post_message(Encoded(Path(out)))

    def on_encoded(self, message: Encoded) -> None:
        out = message.out
        self.query_one("#data-progress").display = False
        try:
            where = out.relative_to(home())
        except ValueError:
            where = out
        meta = json.loads((out / "meta.json").read_text())
        self.query_one("#data-status", Static).update(Text(
            f"Encoded: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
            f"{meta['chars_per_token']:.2f} chars/token, in {where}"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # EngineTab's handler reports the error (Textual calls both); here the tab only stops looking busy.
        if event.state in (WorkerState.ERROR, WorkerState.CANCELLED) and event.worker.name in ("load", "encode"):
            self.query_one("#data-progress").display = False
            what = "Loading" if event.worker.name == "load" else "Encoding"
            self.query_one("#data-status", Static).update(f"{what} failed (see the notification).")

    def on_progress(self, message: Progress) -> None:
        bar = self.query_one("#data-progress", ProgressBar)
        bar.display = True
        bar.update(total=1.0, progress=message.fraction)
        if message.label:
            self.query_one("#data-status", Static).update(Text(message.label))
