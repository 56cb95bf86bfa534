"""Messages the tabs exchange. A tab posts one; it bubbles to the app, which records the choice in its
shared reactive state (SmallGPTApp.corpus, .tokenizer_path, .val_ratio, .active_run, .run_states) and the
settings file. Other tabs watch that state instead of listening to each other.

Every message in tui/ is a dataclass subclass of Message (Message.__post_init__ initializes it), declared
at module level beside the widget that posts it, or here when the app handles it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from textual.message import Message
from textual.message_pump import MessagePump


@dataclass
class CorpusSelected(Message):
    """The Data tab loaded a corpus: `source` is what load_corpus accepts (name, path, glob or URL)."""
    source: str


@dataclass
class SplitChanged(Message):
    """The validation share of the corpus changed (a valid value between 0 and 0.5)."""
    val_ratio: float


@dataclass
class TokenizerReady(Message):
    """A tokenizer was trained or loaded: `path` is its tokenizer.json."""
    path: str


@dataclass
class RunAttached(Message):
    """The Train tab now follows this run directory (the Generate and Inspect tabs default to it)."""
    run_dir: str


@dataclass
class RunStates(Message):
    """The runs under checkpoints/ as last listed, as (path, status) pairs (pickers re-list when they change)."""
    states: tuple[tuple[str, str], ...]


@dataclass
class Progress(Message):
    """Progress of a long engine call running in a thread worker: fraction 0..1 and a phase label."""
    key: str
    fraction: float
    label: str


def progress_poster(target: MessagePump, key: str, max_rate: float = 10.0) -> Callable[[float, str], None]:
    """An engine `progress` callback, safe to call from a thread, that posts Progress to `target`.

    Engines may report thousands of times a second; posting each would flood the UI's queue, so messages
    go out at most `max_rate` times a second, plus always the first and the final (fraction >= 1) report.
    """
    interval = 1.0 / max_rate
    last = [float("-inf")]

    def report(fraction: float, label: str = "") -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= interval:
            last[0] = now
            target.post_message(Progress(key, min(max(fraction, 0.0), 1.0), label))

    return report
