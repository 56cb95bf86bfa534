"""Heatmap widgets for the Inspect tab: one matrix zoomed with token labels, and a layers x heads grid.

Cells are half blocks (two matrix rows per character) drawn by tui.render.heatmap; these widgets choose
which window of the matrix fits the space they have (long prompts pan to keep the selected token in
view rather than overflow) and apply the display options: hide the first column (the attention sink
drowns every other key), scale each row to its own maximum, and a linear, sqrt or log colour scale.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rich.color import Color
from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

SCALES = ("linear", "sqrt", "log")
LOG_FLOOR = 1e-3  # the log scale spans three decades: weaker attention than 0.1% draws as nothing


def display_values(matrix: np.ndarray, *, hide_first: bool = False, row_normalize: bool = False,
                   scale: str = "linear") -> np.ndarray:
    """A matrix of weights mapped to 0..1 colour intensities under the view's options."""
    m = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0)
    if hide_first and m.shape[1] > 1:
        m = m.copy()
        m[:, 0] = 0.0
    if row_normalize:
        peak = np.abs(m).max(axis=1, keepdims=True)
        m = np.divide(m, peak, out=np.zeros_like(m), where=peak > 0)
    else:
        peak = np.abs(m).max() if m.size else 0.0
        m = m / peak if peak > 0 else m
    m = np.clip(m, 0.0, 1.0)
    if scale == "sqrt":
        return np.sqrt(m)
    if scale == "log":
        return np.clip(np.log10(np.maximum(m, LOG_FLOOR)) / -np.log10(LOG_FLOOR) + 1.0, 0.0, 1.0)
    return m


# Stops of the colour ramps (value 0 -> 1). Sequential: dark to bright (attention). Diverging: blue, dark,
# red (signed LSTM activations mapped from -1..1 to 0..1).
_RAMPS = {
    "sequential": [(0.0, (12, 12, 30)), (0.25, (70, 20, 110)), (0.5, (180, 50, 90)), (0.75, (250, 140, 40)),
                   (1.0, (252, 250, 160))],
    "diverging": [(0.0, (40, 110, 240)), (0.5, (20, 20, 20)), (1.0, (240, 60, 40))],
}
_SHADES = " ░▒▓█"


def _colour(value: float, palette: str) -> Color:
    ramp = _RAMPS[palette]
    for (x0, c0), (x1, c1) in zip(ramp, ramp[1:]):
        if value <= x1:
            t = 0.0 if x1 == x0 else (value - x0) / (x1 - x0)
            return Color.from_rgb(*(round(a + (b - a) * t) for a, b in zip(c0, c1)))
    return Color.from_rgb(*ramp[-1][1])


def half_block_lines(values: np.ndarray, *, cell_width: int = 1, palette: str = "sequential",
                     mono: bool = False) -> list[Text]:
    """One Text per pair of matrix rows: '▀' with the upper row as foreground, the lower as background.

    Mono terminals (NO_COLOR) get one shade character per cell from the brighter of the two rows.
    Textual downgrades the truecolour to 256 or 16 colours itself where the terminal needs it.
    """
    lines = []
    for r in range(0, values.shape[0], 2):
        top = values[r]
        bottom = values[r + 1] if r + 1 < values.shape[0] else None
        line = Text(no_wrap=True)
        for c in range(values.shape[1]):
            if mono:
                v = top[c] if bottom is None else max(top[c], bottom[c])
                line.append(_SHADES[min(len(_SHADES) - 1, int(v * len(_SHADES)))] * cell_width)
            else:
                bg = _colour(float(bottom[c]), palette) if bottom is not None else None
                line.append("▀" * cell_width, Style(color=_colour(float(top[c]), palette), bgcolor=bg))
        lines.append(line)
    return lines


def token_label(token: str, width: int) -> str:
    """A token made printable in `width` cells (whitespace shown, long tokens cut)."""
    shown = token.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "·") or "∅"
    return shown[:width]


def window(selected: int, total: int, visible: int) -> int:
    """First index of a `visible`-long window over `total` items that keeps `selected` in view, right-aligned."""
    if total <= visible:
        return 0
    return max(0, min(selected - visible + 1, total - visible)) if selected >= visible else 0


def pool(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Shrink a matrix to rows x cols by block maxima, so a single sharp attention spike stays visible."""
    r_edges = np.linspace(0, matrix.shape[0], rows + 1).astype(int)
    c_edges = np.linspace(0, matrix.shape[1], cols + 1).astype(int)
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            block = matrix[r_edges[i]:max(r_edges[i + 1], r_edges[i] + 1), c_edges[j]:max(c_edges[j + 1], c_edges[j] + 1)]
            out[i, j] = block.max() if block.size else 0.0
    return out


class Heatmap(Widget, can_focus=False):
    """One matrix with row labels on the left and column labels on top; the selected row is marked."""

    DEFAULT_CSS = "Heatmap { height: 1fr; width: 1fr; }"

    selected_row: reactive[int] = reactive(0)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._values: np.ndarray | None = None
        self._row_labels: Sequence[str] = ()
        self._col_labels: Sequence[str] = ()
        self._caption = ""
        self._palette = "sequential"

    def show(self, values: np.ndarray | None, row_labels: Sequence[str], col_labels: Sequence[str], *,
             caption: str = "", palette: str = "sequential") -> None:
        """Draw `values` (already mapped to 0..1, see display_values)."""
        self._values, self._row_labels, self._col_labels = values, row_labels, col_labels
        self._caption, self._palette = caption, palette
        self.refresh()

    @property
    def values(self) -> np.ndarray | None:
        return self._values

    def render(self) -> RenderableType:
        if self._values is None:
            return Text(self._caption or "nothing to show yet", style="dim")
        values = self._values
        n_rows, n_cols = values.shape
        label_w = min(8, max((len(token_label(t, 8)) for t in self._row_labels), default=1)) + 1
        avail_w = max(1, self.size.width - label_w - 1)
        cell_w = max(1, min(3, avail_w // max(1, n_cols)))
        vis_cols = min(n_cols, avail_w // cell_w)
        vis_rows = min(n_rows, max(2, (self.size.height - 2) * 2))
        r0 = window(self.selected_row, n_rows, vis_rows)
        r0 -= r0 % 2  # keep character rows on matrix row pairs so the selection mark lands on its pair
        c0 = window(self.selected_row, n_cols, vis_cols)
        sub = values[r0:r0 + vis_rows, c0:c0 + vis_cols]
        lines = half_block_lines(sub, cell_width=cell_w, palette=self._palette,
                                        mono=bool(getattr(self.app, "no_color", False)))
        out = Text(no_wrap=True, overflow="crop")
        out.append(self._caption[: self.size.width] + "\n", style="bold")
        axis = "".join(token_label(t, cell_w).ljust(cell_w) for t in self._col_labels[c0:c0 + vis_cols])
        out.append(" " * (label_w + 1) + axis + "\n", style="dim")
        for k, line in enumerate(lines):
            rows = range(r0 + 2 * k, min(r0 + 2 * k + 2, n_rows))
            marked = self.selected_row in rows
            # Two matrix rows share a character row: label it with the selected one when it is there.
            row = self.selected_row if marked else rows[0]
            label = token_label(self._row_labels[row], label_w - 1) if row < len(self._row_labels) else ""
            out.append(("▶" if marked else " ") + label.rjust(label_w - 1) + " ",
                       style="bold reverse" if marked else "dim")
            out.append_text(line)
            if k < len(lines) - 1:
                out.append("\n")
        return out


class HeadGrid(Widget, can_focus=True):
    """The overview: every layer x head as a mini heatmap labelled with its badge; one cell is selected.

    The cell size follows the widget's size; when even the smallest cells do not fit, the grid pans to
    keep the selected cell in view.
    """

    DEFAULT_CSS = """
    HeadGrid { height: 1fr; width: 1fr; }
    HeadGrid:focus { background: $boost; }
    """

    sel_layer: reactive[int] = reactive(0)
    sel_head: reactive[int] = reactive(0)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._maps: np.ndarray | None = None  # [L, H, T, T], 0..1
        self._badges: Sequence[Sequence[str]] = ()

    def show(self, maps: np.ndarray | None, badges: Sequence[Sequence[str]]) -> None:
        self._maps, self._badges = maps, badges
        self.refresh()

    @property
    def shape(self) -> tuple[int, int]:
        return (0, 0) if self._maps is None else self._maps.shape[:2]

    def render(self) -> RenderableType:
        if self._maps is None:
            return Text("run an inspection to see every head", style="dim")
        n_layers, n_heads = self._maps.shape[:2]
        row_label_w = 3
        cell_w = max(4, min(16, (self.size.width - row_label_w) // n_heads - 1))
        cell_h = max(1, min(8, (self.size.height - 1) // n_layers - 1))  # character rows of the mini map
        vis_heads = max(1, (self.size.width - row_label_w) // (cell_w + 1))
        vis_layers = max(1, (self.size.height - 1) // (cell_h + 1))
        h0 = window(self.sel_head, n_heads, vis_heads)
        l0 = window(self.sel_layer, n_layers, vis_layers)
        mono = bool(getattr(self.app, "no_color", False))
        out = Text(no_wrap=True, overflow="crop")
        for layer in range(l0, min(n_layers, l0 + vis_layers)):
            # Label line: head names with badges, the selected cell reversed.
            out.append(f"L{layer}".ljust(row_label_w), style="bold")
            for head in range(h0, min(n_heads, h0 + vis_heads)):
                badge = self._badges[layer][head] if layer < len(self._badges) and head < len(self._badges[layer]) else ""
                label = f"h{head} {badge}".strip()[:cell_w].ljust(cell_w)
                selected = (layer, head) == (self.sel_layer, self.sel_head)
                out.append(label, style="bold reverse" if selected else ("bold" if badge else "dim"))
                out.append(" ")
            out.append("\n")
            minis = [half_block_lines(pool(self._maps[layer, head], 2 * cell_h, cell_w), mono=mono)
                     for head in range(h0, min(n_heads, h0 + vis_heads))]
            for k in range(cell_h):
                out.append(" " * row_label_w)
                for mini in minis:
                    out.append_text(mini[k])
                    out.append(" ")
                out.append("\n")
        out.rstrip()
        return out
