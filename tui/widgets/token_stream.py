"""TokenStream: generated text that grows token by token, optionally coloured by each token's probability.

The widget only displays: tokens arrive in batches (the Generate tab coalesces them to ~30 updates a
second), so one append re-renders once however many tokens came. The title shows what produced the
text (run, checkpoint), the subtitle the live count and speed.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

# Low-probability tokens red, confident ones green: the reader sees at a glance where the model guessed.
_PROB_COLOURS = ("#d7005f", "#d75f00", "#d7af00", "#87af00", "#00af5f")


def prob_style(prob: float) -> str:
    """The foreground colour for a token drawn with probability `prob` (0..1)."""
    bucket = min(len(_PROB_COLOURS) - 1, max(0, int(prob * len(_PROB_COLOURS))))
    return _PROB_COLOURS[bucket]


class TokenStream(VerticalScroll, can_focus=True):
    """A scrolling pane of streamed text; follows the end unless the user has scrolled up."""

    DEFAULT_CSS = """
    TokenStream {
        border: round $primary 50%;
        height: 1fr;
        padding: 0 1;
    }
    TokenStream:focus { border: round $primary; }
    TokenStream > Static { width: 1fr; }
    """

    color_by_prob: reactive[bool] = reactive(True)

    def __init__(self, title: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = title
        self._prompt = ""
        self._tokens: list[tuple[str, float]] = []

    def compose(self) -> ComposeResult:
        yield Static(id="body")

    @property
    def text(self) -> str:
        """The generated text (prompt excluded)."""
        return "".join(t for t, _ in self._tokens)

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def reset(self, prompt: str = "", title: str | None = None) -> None:
        self._prompt = prompt
        self._tokens = []
        if title is not None:
            self.border_title = title
        self.border_subtitle = ""
        self._refresh_body()

    def append(self, tokens: Iterable[tuple[str, float]]) -> None:
        """Add a batch of (text, probability) tokens and redraw once."""
        follow = self.scroll_y >= self.max_scroll_y - 1
        self._tokens.extend(tokens)
        self._refresh_body()
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)

    def set_stats(self, line: str) -> None:
        self.border_subtitle = line

    def watch_color_by_prob(self) -> None:
        self._refresh_body()

    def _refresh_body(self) -> None:
        if not self.is_mounted:
            return
        text = Text(self._prompt, style="bold")
        for piece, prob in self._tokens:
            text.append(piece, style=prob_style(prob) if self.color_by_prob else "")
        self.query_one("#body", Static).update(text)
