"""The Tokenizer tab: train a char, word or BPE tokenizer on the chosen corpus, try it, browse its vocabulary.

Training and loading run in thread workers (engine.tokenizer pulls the `tokenizers` library); encoding
the few words typed in "try it" is fast enough to do as the user types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState

from engine.config import TOKENIZER_KINDS
from engine.paths import cache_dir
from tui.messages import Progress, TokenizerReady, progress_poster
from tui.tabs.base import EngineTab
from tui.workers import engine_work

VOCAB_ROWS = 500  # rows shown at once in the vocabulary table; the filter finds the rest
TRY_SHOWN = 2000  # tokens drawn for "try it"; the counts cover the whole text (a 1 MB paste froze the UI for minutes)
TOKEN_COLORS = ("#2e4a62", "#5a3d2b", "#2f5233", "#523157", "#5b5120", "#1f5656")


def visible(token: str) -> str:
    """A token's text with whitespace made visible, for one-line display."""
    return token.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")


def tokenizer_file(corpus_name: str, kind: str, vocab_size: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", corpus_name).strip("-") or "corpus"
    suffix = "" if kind == "char" else f"-{vocab_size}"
    return cache_dir() / "tokenizers" / f"{slug}-{kind}{suffix}.json"


@dataclass
class TokenizerLoaded(Message):
    path: str  # its tokenizer.json
    tokenizer: Any  # engine.tokenizer.Tokenizer
    report: dict | None  # Tokenizer.training_report when it was just trained


class TokenizerTab(EngineTab):
    BINDINGS = [
        Binding("ctrl+s", "train", "Train tokenizer"),
        Binding("ctrl+t", "try_it", "Try text"),
        Binding("ctrl+g", "search", "Search vocabulary"),
    ]
    can_focus = True

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer: Any = None  # engine.tokenizer.Tokenizer
        self.loaded_path = ""
        self.vocab: list[tuple[int, str]] = []

    def compose(self) -> ComposeResult:
        saved = self.app.settings.table("tokenizer")  # type: ignore[attr-defined]
        kind = saved.get("kind", "char")
        with Horizontal(id="tok-body"):
            with Vertical(id="tok-left"):
                yield Static(id="tok-corpus")
                with Horizontal(classes="field"):
                    yield Label("kind", classes="field-label")
                    yield Select([(k, k) for k in TOKENIZER_KINDS], value=kind if kind in TOKENIZER_KINDS else "char",
                                 allow_blank=False, compact=True, id="tok-kind")
                with Horizontal(classes="field"):
                    yield Label("vocab size", classes="field-label")
                    yield Input(str(saved.get("vocab_size", "")), placeholder="default", compact=True,
                                id="tok-vocab")
                yield Static(id="tok-vocab-error", classes="field-error")
                yield Static("special tokens <|endoftext|> <|pad|> are always added", id="tok-special")
                yield Button("Train ^s", id="tok-train", variant="primary", compact=True)
                yield ProgressBar(id="tok-progress", show_eta=False)
                yield Static(id="tok-status")
            with Vertical(id="tok-right"):
                yield Label("Try it", classes="section")
                yield Input(placeholder="type text to see its tokens", id="tok-try", compact=True)
                yield Static(id="tok-pieces")
                yield Static(id="tok-try-stats")
                yield Label("Vocabulary", classes="section")
                yield Input(placeholder="filter tokens", id="vocab-filter", compact=True)
                yield Static(id="vocab-count")
                yield DataTable(id="vocab-table", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#tok-progress").display = False
        self.query_one("#vocab-table", DataTable).add_columns("id", "token")
        self._check_vocab()
        self.watch(self.app, "corpus", lambda c: self.query_one("#tok-corpus", Static).update(Text(f"corpus: {c}")))
        self.watch(self.app, "tokenizer_path", self._load_if_new)

    # ----- the form ---------------------------------------------------------------------------------
    def _vocab_size(self) -> int | None:
        """None: the kind's default. Raises ValueError with the message to show."""
        raw = self.query_one("#tok-vocab", Input).value.strip()
        if not raw:
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"vocab size must be a positive whole number (got '{raw}'), or empty for the default")
        return int(raw)

    def _check_vocab(self) -> bool:
        error = self.query_one("#tok-vocab-error", Static)
        char = self.query_one("#tok-kind", Select).value == "char"
        self.query_one("#tok-vocab", Input).disabled = char  # a char vocabulary is what the corpus has
        try:
            self._vocab_size()
            message = ""
        except ValueError as e:
            message = "" if char else str(e)
        error.update(message)
        error.display = bool(message)
        self.query_one("#tok-train", Button).disabled = bool(message)
        return not message

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "tok-kind":
            self._check_vocab()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "tok-vocab":
            self._check_vocab()
        elif event.input.id == "tok-try":
            self._show_try(event.value)
        elif event.input.id == "vocab-filter":
            self._show_vocab(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "tok-train":
            self.action_train()

    def action_try_it(self) -> None:
        self.query_one("#tok-try", Input).focus()

    def action_search(self) -> None:
        self.query_one("#vocab-filter", Input).focus()

    # ----- training and loading ---------------------------------------------------------------------
    def action_train(self) -> None:
        if not self._check_vocab():
            self.notify("Fix the vocab size first.", severity="warning")
            return
        kind = str(self.query_one("#tok-kind", Select).value)
        vocab = None if kind == "char" else self._vocab_size()
        self.app.settings.update("tokenizer", kind=kind, vocab_size=vocab)  # type: ignore[attr-defined]
        self.query_one("#tok-status", Static).update("Training…")
        self._train(self.app.corpus, kind, vocab)  # type: ignore[attr-defined]

    @engine_work("train")
    def _train(self, source: str, kind: str, vocab_size: int | None) -> None:
        from engine.corpora import load_corpus
        from engine.tokenizer import train_tokenizer

        progress = progress_poster(self, "train")
        corpus = load_corpus(source, progress=progress)
        tokenizer = train_tokenizer(corpus, kind, vocab_size, progress=progress)
        path = tokenizer_file(corpus.name, kind, tokenizer.vocab_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
        self.post_message(TokenizerLoaded(str(path), tokenizer, tokenizer.training_report))

    def _load_if_new(self, path: str) -> None:
        if path and path != self.loaded_path:
            self._load(path)

    @engine_work("load")
    def _load(self, path: str) -> None:
        from engine.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(Path(path))
        self.post_message(TokenizerLoaded(path, tokenizer, None))

    def on_tokenizer_loaded(self, message: TokenizerLoaded) -> None:
        path, tokenizer, report = message.path, message.tokenizer, message.report
        self.tokenizer, self.loaded_path = tokenizer, path
        self.query_one("#tok-progress").display = False
        status = Text.assemble(("tokenizer ", "bold"), Path(path).name,
                               f"\n{tokenizer.kind}, {tokenizer.vocab_size:,} tokens")
        if report:
            status.append(f"\n{report['chars_per_token']:.2f} chars/token, unknown {report['unk_rate']:.2%}"
                          " on held-out text")
        self.query_one("#tok-status", Static).update(status)
        special = [(tokenizer.id_to_token(i), i) for i in (tokenizer.eos_id, tokenizer.pad_id) if i is not None]
        self.query_one("#tok-special", Static).update(
            Text("special: " + "  ".join(f"{t} = {i}" for t, i in special)))
        self.vocab = [(i, tokenizer.id_to_token(i)) for i in range(tokenizer.vocab_size)]
        self._show_vocab(self.query_one("#vocab-filter", Input).value)
        self._show_try(self.query_one("#tok-try", Input).value)
        if path != self.app.tokenizer_path:  # type: ignore[attr-defined]
            self.post_message(TokenizerReady(path))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state in (WorkerState.ERROR, WorkerState.CANCELLED) and event.worker.name in ("train", "load"):
            self.query_one("#tok-progress").display = False
            self.query_one("#tok-status", Static).update("Failed (see the notification).")

    def on_progress(self, message: Progress) -> None:
        bar = self.query_one("#tok-progress", ProgressBar)
        bar.display = True
        bar.update(total=1.0, progress=message.fraction)
        if message.label:
            self.query_one("#tok-status", Static).update(Text(message.label))

    # ----- try it and the vocabulary ----------------------------------------------------------------
    def _show_try(self, text: str) -> None:
        pieces, stats = self.query_one("#tok-pieces", Static), self.query_one("#tok-try-stats", Static)
        if self.tokenizer is None or not text:
            pieces.update("" if self.tokenizer else Text("Train or load a tokenizer to try it.", style="dim"))
            stats.update("")
            return
        ids = self.tokenizer.encode(text)
        shown, id_line = Text(), Text()
        for n, i in enumerate(ids[:TRY_SHOWN]):
            color = TOKEN_COLORS[n % len(TOKEN_COLORS)]
            # Underlining every other token keeps the boundaries visible where colour is off (NO_COLOR).
            shown.append(visible(self.tokenizer.id_to_token(i)), style=f"on {color}" + (" underline" if n % 2 else ""))
            id_line.append(str(i), style=f"on {color}" + (" underline" if n % 2 else ""))
            id_line.append(" ")
        if len(ids) > TRY_SHOWN:
            shown.append(f" … {len(ids) - TRY_SHOWN:,} more tokens", style="dim")
        report = self.tokenizer.report(text)
        pieces.update(shown + Text("\n") + id_line)
        stats.update(f"{len(text)} chars → {len(ids)} tokens, {report['chars_per_token']:.2f} chars/token, "
                     f"unknown {report['unk_rate']:.1%}")

    def _show_vocab(self, query: str) -> None:
        table = self.query_one("#vocab-table", DataTable)
        table.clear()
        matches = [(i, t) for i, t in self.vocab if query in t] if query else self.vocab
        for i, t in matches[:VOCAB_ROWS]:
            table.add_row(str(i), Text(visible(t)))
        more = f", showing the first {VOCAB_ROWS}" if len(matches) > VOCAB_ROWS else ""
        self.query_one("#vocab-count", Static).update(
            f"{len(matches):,} of {len(self.vocab):,} tokens{more}" if self.vocab else "")
