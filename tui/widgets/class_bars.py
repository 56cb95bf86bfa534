"""ClassBars: a classifier's answer for a text, one bar per class with its probability, most likely first.

The Generate tab's classify view sets `probs` (label -> probability) as the user types; a render, never a
re-layout: the widget's height is fixed by the number of classes, set once with `set_labels`.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BAR = "█"
_PARTS = " ▏▎▍▌▋▊▉"  # eighths of a cell, so a bar's end is as precise as the terminal allows


def bar_text(width: int, share: float) -> str:
    """A bar `share` (0..1) of `width` cells long, with a partial last cell."""
    eighths = round(max(0.0, min(1.0, share)) * width * 8)
    full, part = divmod(eighths, 8)
    return (BAR * full + (_PARTS[part] if part else "")).ljust(width)


class ClassBars(Widget):
    DEFAULT_CSS = """
    ClassBars { border: round $primary 50%; padding: 0 1; height: auto; }
    """

    probs: reactive[dict[str, float]] = reactive(dict, layout=False, always_update=True)

    def __init__(self, title: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title
        self._labels: list[str] = []

    def set_labels(self, labels: list[str]) -> None:
        """The classes (in the run's order); the height follows them, so this one call lays out."""
        self._labels = list(labels)
        self.styles.height = max(1, len(labels)) + 2
        self.probs = {}

    def render(self) -> Text:
        width = self.content_region.width or 40
        label_w = min(max((len(lab) for lab in self._labels), default=5), max(5, width // 3))
        bar_w = max(1, width - label_w - 9)
        ranked = sorted(self._labels, key=lambda lab: -self.probs.get(lab, 0.0)) if self.probs else self._labels
        text = Text(no_wrap=True, overflow="ellipsis")
        top = ranked[0] if self.probs else None
        for i, label in enumerate(ranked):
            p = self.probs.get(label)
            text.append(f"{label[:label_w]:<{label_w}} ", style="bold" if label == top else "")
            text.append(bar_text(bar_w, p or 0.0), style="green" if label == top else "cyan")
            text.append(f" {p:6.1%}" if p is not None else "      -")
            if i < len(ranked) - 1:
                text.append("\n")
        return text
