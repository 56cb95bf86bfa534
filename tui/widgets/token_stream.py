"""TokenStream: generated text that grows token by token, optionally coloured by each token's probability.

Tokens arrive in batches (StreamView coalesces them to ~10 updates a second). Re-wrapping the whole
text on every batch costs O(length) and, measured at 2,500 tokens, starved the UI thread for seconds; so
the widget wraps incrementally: appending text can only change the last wrapped line, so every line
before it is frozen as a Strip and only the tail is re-wrapped. The whole text is re-wrapped only when
the width or the colouring changes. The title shows what produced the text, the subtitle count and speed.

A new wrapped line grows the scrollable height, but never this widget's own size (its height is set by
its container), so the screen is not laid out again for it: Textual's virtual_size reactive would do
that on every new line, which held the Generate tab to 0.56x of the CLI's tokens/s.
When the text first overflows, the scrollbar appears and narrows the pane without resizing the widget: the
lines wrapped so far are wrapped again at the new width (they were cut at the right edge before).
The chat view writes its user turns with `append_text` (a fixed style, not a token).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

# Low-probability tokens red, confident ones green: the reader sees at a glance where the model guessed.
_PROB_COLOURS = ("#d7005f", "#d75f00", "#d7af00", "#87af00", "#00af5f")
# The prompt is shown up to this many characters, its end (what the output continues): wrapping a 1 MB
# pasted prompt on the UI thread froze it for a minute.
PROMPT_SHOWN = 2000


def prob_style(prob: float) -> str:
    """The foreground colour for a token drawn with probability `prob` (0..1)."""
    bucket = min(len(_PROB_COLOURS) - 1, max(0, int(prob * len(_PROB_COLOURS))))
    return _PROB_COLOURS[bucket]


class TokenStream(ScrollView, can_focus=True):
    """A scrolling pane of streamed text; follows the end unless the user has scrolled up."""

    DEFAULT_CSS = """
    TokenStream {
        border: round $primary 50%;
        height: 1fr;
        padding: 0 1;
    }
    TokenStream:focus { border: round $primary; }
    """

    color_by_prob: reactive[bool] = reactive(True)

    def __init__(self, title: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = title
        self._prompt = ""
        # (text, probability) for a generated token, (text, style) for text written with append_text
        self._pieces: list[tuple[str, float | str]] = []
        self._token_count = 0
        self._frozen: list[Strip] = []  # wrapped lines that appending can no longer change
        self._tail = Text()  # the text after the last frozen line, not yet wrapped for good
        self._tail_lines: list[Strip] = []
        self._wrap_width = 0
        self._line_style = Style()

    @property
    def text(self) -> str:
        """The generated text (prompt and append_text's text excluded)."""
        return "".join(t for t, p in self._pieces if not isinstance(p, str))

    @property
    def token_count(self) -> int:
        return self._token_count

    def reset(self, prompt: str = "", title: str | None = None) -> None:
        self._prompt = prompt if len(prompt) <= PROMPT_SHOWN else "…" + prompt[-PROMPT_SHOWN:]
        self._pieces = []
        self._token_count = 0
        if title is not None:
            self.border_title = title
        self.border_subtitle = ""
        self._rewrap()

    def append(self, tokens: Iterable[tuple[str, float]]) -> None:
        """Add a batch of (text, probability) tokens; only the last wrapped line is redone."""
        batch = list(tokens)
        if not batch:
            return
        self._token_count += len(batch)
        self._add(batch)

    def append_text(self, text: str, style: str = "bold") -> None:
        """Add text that is not a token (a chat's user turn), in a fixed style."""
        self._add([(text, style)])

    def _add(self, pieces: list[tuple[str, float | str]]) -> None:
        follow = self.scroll_y >= self.max_scroll_y - 1
        self._pieces.extend(pieces)
        for piece, how in pieces:
            self._tail.append(piece, style=self._style(how))
        if self._wrap_tail() and follow:
            # Only a new line moves the end: scrolling (even to where it is) repaints the whole screen.
            self.scroll_end(animate=False, immediate=True)

    def set_stats(self, line: str) -> None:
        self.border_subtitle = line

    def watch_color_by_prob(self) -> None:
        self._rewrap()

    def on_resize(self) -> None:
        if self._content_width() != self._wrap_width:
            self._rewrap()

    def _style(self, how: float | str) -> str:
        if isinstance(how, str):
            return how
        return prob_style(how) if self.color_by_prob else ""

    def _content_width(self) -> int:
        return max(1, self.scrollable_content_region.width)

    def _rewrap(self) -> None:
        self._frozen = []
        self._tail_lines = []
        self._tail = Text(self._prompt, style="bold")
        for piece, how in self._pieces:
            self._tail.append(piece, style=self._style(how))
        self._wrap_tail()

    def _wrap_tail(self) -> bool:
        """Re-wrap the tail; True when the text gained a line."""
        if not self.is_mounted:
            return False
        self._wrap_width = width = self._content_width()
        console = self.app.console
        lines_before = len(self._frozen) + len(self._tail_lines)
        lines = self._tail.wrap(console, width, overflow="fold")
        if len(lines) > 1:
            # Every line but the last is final: what comes next can only extend the last one.
            self._frozen.extend(Strip(list(line.render(console)), line.cell_len) for line in lines[:-1])
            # The last wrapped line is a suffix of the tail (wrap drops only the newlines and the spaces it
            # broke at, between lines): keep that suffix, with its styles, as the new tail.
            self._tail = self._tail[len(self._tail.plain) - len(lines[-1].plain):]
            lines = lines[-1:]
        self._tail_lines = [Strip(list(line.render(console)), line.cell_len) for line in lines]
        total = len(self._frozen) + len(self._tail_lines)
        if self.virtual_size != (size := Size(width, total)):
            # Not `self.virtual_size = size`: that reactive lays the whole screen out again (see the module
            # docstring); the scrollbars and scroll limits are all a new line changes.
            self.set_reactive(TokenStream.virtual_size, size)
            self._scroll_update(size)
            if self._content_width() != width:
                # The scrollbar came (or went) and the lines are now wider than the pane: wrap them all again.
                self._rewrap()
                return True
        if total == lines_before:
            # Most batches only lengthen the last line: repaint that line, not the whole pane.
            self.refresh_lines(total - 1)
            return False
        self.refresh()
        return True

    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's style, computed from the ancestors' styles, is the same for every line of a render:
        # once per render, not once per line (it was most of this widget's painting time).
        self._line_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        if index < len(self._frozen):
            strip = self._frozen[index]
        elif index - len(self._frozen) < len(self._tail_lines):
            strip = self._tail_lines[index - len(self._frozen)]
        else:
            strip = Strip.blank(0)
        width = self.scrollable_content_region.width
        style = self._line_style
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_style(style)
