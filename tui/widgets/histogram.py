"""Horizontal bar histograms drawn with block characters (character frequencies, line lengths)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Eighth blocks give a bar eight steps of resolution per cell.
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int) -> str:
    """A bar `fraction` (0..1) of `width` cells long, in eighth-cell steps."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


class Histogram(Widget):
    """Labelled bars: one row per (label, count), longest bar = the largest count."""

    DEFAULT_CSS = """
    Histogram { height: auto; }
    """

    items: reactive[list[tuple[str, int]]] = reactive(list, layout=True)

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title

    def render(self) -> Text:
        text = Text(self.title + "\n", style="bold")
        if not self.items:
            text.append("(no data)", style="dim")
            return text
        label_w = max(len(label) for label, _ in self.items)
        count_w = max(len(f"{count:,}") for _, count in self.items)
        peak = max(count for _, count in self.items) or 1
        bar_w = max(1, self.size.width - label_w - count_w - 3)
        for i, (label, count) in enumerate(self.items):
            text.append(f"{label:>{label_w}} ", style="bold")
            text.append(f"{bar(count / peak, bar_w):<{bar_w}}", style="cyan")
            text.append(f" {count:>{count_w},}")
            if i < len(self.items) - 1:
                text.append("\n")
        return text

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001 (Textual API)
        return 1 + max(1, len(self.items))
