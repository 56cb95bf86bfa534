"""Messages the tabs exchange. A tab posts one; it bubbles to the app, which records the choice in its
shared reactive state (SmallGPTApp.corpus, .tokenizer_path, .val_ratio, .active_run) and the settings file.
Other tabs watch that state instead of listening to each other.
"""

from __future__ import annotations

import time
from typing import Callable

from textual.message import Message
from textual.message_pump import MessagePump


class CorpusSelected(Message):
    """The Data tab loaded a corpus: `source` is what load_corpus accepts (name, path, glob or URL)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()


class SplitChanged(Message):
    """The validation share of the corpus changed (a valid value between 0 and 0.5)."""

    def __init__(self, val_ratio: float) -> None:
        self.val_ratio = val_ratio
        super().__init__()


class TokenizerReady(Message):
    """A tokenizer was trained or loaded: `path` is its tokenizer.json."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__()


class RunAttached(Message):
    """The Train tab now follows this run directory (the Generate and Inspect tabs default to it)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        super().__init__()


class Progress(Message):
    """Progress of a long engine call running in a thread worker: fraction 0..1 and a phase label."""

    def __init__(self, key: str, fraction: float, label: str) -> None:
        self.key = key
        self.fraction = fraction
        self.label = label
        super().__init__()


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
