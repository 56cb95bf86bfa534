"""ClassifyView: a classify run's answer for the typed text, one ClassBars per checkpoint (two in A/B).

The text is classified as the user types: after CLASSIFY_DEBOUNCE seconds without a key, in a thread
worker (an exclusive one: a newer text cancels the older request), and an answer for a text that is no
longer the typed one is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.worker import get_current_worker

from tui import model_cache
from tui.widgets.class_bars import ClassBars
from tui.workers import ReportsWorkerErrors, engine_work

CLASSIFY_DEBOUNCE = 0.25  # seconds of no typing before the model is asked


@dataclass
class ClassProbs(Message, bubble=False):
    side: int
    run_dir: Path
    checkpoint: str
    text: str  # the text classified
    probs: dict[str, float]


class ClassifyView(ReportsWorkerErrors, Horizontal):
    DEFAULT_CSS = """
    ClassifyView ClassBars { width: 1fr; }
    ClassifyView #bars-b { margin-left: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._labels: list[str] = []
        self._text = ""  # the text the bars are for
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield ClassBars("classes", id="bars-a")
        yield ClassBars("int8", id="bars-b")

    def set_labels(self, labels: list[str]) -> None:
        self._labels = list(labels)
        for bars in self.query(ClassBars):
            bars.set_labels(labels)

    def typed(self, run_dir: Path, checkpoints: list[str], text: str) -> None:
        """The text changed: classify it once the typing pauses."""
        self._text = text
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(CLASSIFY_DEBOUNCE, lambda: self.classify(run_dir, checkpoints, text))

    def classify(self, run_dir: Path, checkpoints: list[str], text: str) -> None:
        """Classify now with each checkpoint (fp32, int8 in A/B); an empty text empties the bars."""
        self._text = text
        if not text.strip():
            for bars in self.query(ClassBars):
                bars.probs = {}
            return
        self._classify(run_dir, checkpoints, text)

    @engine_work("classify")
    def _classify(self, run_dir: Path, checkpoints: list[str], text: str) -> None:
        from engine.tasks.classify import classify_texts

        for side, which in enumerate(checkpoints):
            model, _, tokenizer = model_cache.load(run_dir, which)
            if get_current_worker().is_cancelled:  # a newer text was typed meanwhile
                return
            probs = classify_texts(model, tokenizer, self._labels, [text])[0]
            self.post_message(ClassProbs(side, run_dir, which, text, probs))

    def on_class_probs(self, message: ClassProbs) -> None:
        if message.text == self._text:
            bars = self.query_one("#bars-a" if message.side == 0 else "#bars-b", ClassBars)
            bars.border_title = f"{message.checkpoint} · {message.run_dir.name}"
            bars.probs = message.probs
