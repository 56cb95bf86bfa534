"""PromptInput: a one-line prompt with a history (Up/Down) kept across sessions in $SMALLGPT_HOME/prompt_history.

The history file holds one JSON string per line (prompts may contain newlines or be empty), newest
last, de-duplicated and capped so it never grows without bound.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from textual.binding import Binding
from textual.widgets import Input

from engine.paths import home

log = logging.getLogger(__name__)
HISTORY_LIMIT = 200
HISTORY_MAX_CHARS = 10_000  # a longer prompt (a pasted document) is not kept: 200 of them would be 200 MB


def history_path() -> Path:
    return home() / "prompt_history"


def load_history() -> list[str]:
    try:
        lines = history_path().read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out: list[str] = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # a hand-edited or torn line: skip it rather than lose the rest
        if isinstance(value, str):
            out.append(value)
    return out


def remember(prompt: str) -> list[str]:
    """Add a prompt to the saved history (moving it to the end if already there); returns the history.
    An empty prompt is not kept: recalling it would show nothing."""
    if not prompt or len(prompt) > HISTORY_MAX_CHARS:
        return load_history()
    history = [p for p in load_history() if p != prompt] + [prompt]
    history = history[-HISTORY_LIMIT:]
    try:
        history_path().parent.mkdir(parents=True, exist_ok=True)
        history_path().write_text("".join(json.dumps(p) + "\n" for p in history), encoding="utf-8")
    except OSError:
        log.exception("could not save the prompt history")  # history is a convenience: never fail a run for it
    return history


class PromptInput(Input):
    BINDINGS = [
        Binding("up", "history(-1)", "Older prompt", show=False),
        Binding("down", "history(1)", "Newer prompt", show=False),
    ]

    def __init__(self, value: str = "", **kwargs) -> None:
        super().__init__(value, **kwargs)
        self._history: list[str] = load_history()
        self._pos = len(self._history)

    def commit(self) -> None:
        """Record the current value in the history (called when the prompt is used)."""
        self._history = remember(self.value)
        self._pos = len(self._history)

    def action_history(self, delta: int) -> None:
        if not self._history:
            return
        self._pos = max(0, min(len(self._history), self._pos + delta))
        self.value = self._history[self._pos] if self._pos < len(self._history) else ""
        self.cursor_position = len(self.value)
