"""TokenStream shows streamed text exactly as if it had been wrapped in one piece.

The widget wraps incrementally (lines before the last are frozen as they come); the oracle is Rich's wrap of
the whole text at the same width, for batches of awkward tokens (runs of spaces, newlines, words longer than
the pane, wide characters) arriving in random sizes, across the moment the scrollbar appears (the pane
narrows), and again after a resize re-wraps everything.
"""

from __future__ import annotations

import random

from rich.text import Text
from textual.app import App, ComposeResult

from tui.widgets.token_stream import TokenStream

# No tabs: a tab's width depends on its column in the unwrapped line, which the tail does not know.
TOKENS = ["the", " ", "cat", "  ", "sat", "\n", "on", " the", " mat.", "\n\n", "a" * 37, " 日本語", "x", ". "]


class StreamApp(App):
    def compose(self) -> ComposeResult:
        yield TokenStream("output")


def shown_lines(stream: TokenStream) -> list[str]:
    """Every line of the pane's text, top to bottom, as drawn (trailing padding stripped)."""
    stream.scroll_home(animate=False, immediate=True)
    return [stream.render_line(y).text.rstrip() for y in range(stream.virtual_size.height)]


def wrapped(stream: TokenStream, app: App, prompt: str) -> list[str]:
    width = stream.scrollable_content_region.width
    return [line.plain.rstrip() for line in Text(prompt + stream.text).wrap(app.console, width, overflow="fold")]


async def test_streamed_batches_wrap_like_the_whole_text():
    rng = random.Random(0)
    app = StreamApp()
    async with app.run_test(size=(30, 12)) as pilot:
        stream = app.query_one(TokenStream)
        stream.reset("the prompt ")
        for _ in range(60):
            stream.append([(rng.choice(TOKENS), rng.random()) for _ in range(rng.randint(1, 12))])
            await pilot.pause()
        assert stream.token_count > 300
        assert len(shown_lines(stream)) > stream.scrollable_content_region.height  # it scrolled
        assert shown_lines(stream) == wrapped(stream, app, "the prompt ")
        await pilot.resize_terminal(23, 10)  # a new width: the whole text is wrapped again
        await pilot.pause()
        assert shown_lines(stream) == wrapped(stream, app, "the prompt ")
