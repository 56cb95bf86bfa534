"""Heatmap widgets for the Inspect tab: one matrix zoomed with token labels, and a layers x heads grid.

Cells are half blocks (two matrix rows per character) drawn by tui.render.heatmap; these widgets choose
which window of the matrix fits the space they have (long prompts pan to keep the selected token in
view rather than overflow) and apply the display options: hide the first column (the attention sink
drowns every other key), scale each row to its own maximum, and a linear, sqrt or log colour scale.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# The pure rendering (colours, half blocks, labels, windows) is shared with the CLI's `smallgpt inspect`;
# SCALES and display_values are re-exported for the Inspect tab.
from tui.render.heatmap import SCALES, display_values, half_block_lines, pool, token_label, window  # noqa: F401


class Heatmap(Widget, can_focus=True):
    """One matrix with row labels on the left and column labels on top; the selected row is marked."""

    DEFAULT_CSS = """
    Heatmap { height: 1fr; width: 1fr; }
    Heatmap:focus { background: $boost; }
    """

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

    The cell size follows the widget's size; when even the smallest cells do not fit (GPT-2's 12 x 12 at
    80x24), the grid pans to keep the selected cell in view and its last line says which part is shown.
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
        if vis_layers < n_layers or vis_heads < n_heads:
            last_l, last_h = min(n_layers, l0 + vis_layers) - 1, min(n_heads, h0 + vis_heads) - 1
            out.append(f"layers {l0}-{last_l} of {n_layers}, heads {h0}-{last_h} of {n_heads}: arrows pan",
                       style="dim")
        out.rstrip()
        return out
