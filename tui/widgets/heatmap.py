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
    """One matrix (or several of one shape side by side: A | B | A - B) with row labels on the left and
    column labels on top; the selected row is marked."""

    DEFAULT_CSS = """
    Heatmap { height: 1fr; width: 1fr; }
    Heatmap:focus { background: $boost; }
    """

    selected_row: reactive[int] = reactive(0)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._panels: list[tuple[str, np.ndarray, str]] = []  # (title, values 0..1, palette)
        self._row_labels: Sequence[str] = ()
        self._col_labels: Sequence[str] = ()
        self._caption = ""

    def show(self, values: np.ndarray | None, row_labels: Sequence[str], col_labels: Sequence[str], *,
             caption: str = "", palette: str = "sequential") -> None:
        """Draw `values` (already mapped to 0..1, see display_values)."""
        self.show_panels([] if values is None else [("", values, palette)], row_labels, col_labels, caption=caption)

    def show_panels(self, panels: Sequence[tuple[str, np.ndarray, str]], row_labels: Sequence[str],
                    col_labels: Sequence[str], *, caption: str = "") -> None:
        """Matrices of one shape side by side, each (title, values 0..1, palette), sharing the row labels
        and the window of rows and columns shown."""
        self._panels, self._row_labels, self._col_labels = list(panels), row_labels, col_labels
        self._caption = caption
        self.refresh()

    @property
    def values(self) -> np.ndarray | None:
        """The first panel's values."""
        return self._panels[0][1] if self._panels else None

    @property
    def panel_values(self) -> list[np.ndarray]:
        return [values for _, values, _ in self._panels]

    def render(self) -> RenderableType:
        if not self._panels:
            return Text(self._caption or "nothing to show yet", style="dim")
        n_rows, n_cols = self._panels[0][1].shape
        titled = any(title for title, _, _ in self._panels)
        label_w = min(8, max((len(token_label(t, 8)) for t in self._row_labels), default=1)) + 1
        # Each panel gets an equal share of the width, one column apart.
        avail_w = max(1, (self.size.width - label_w - 1 - (len(self._panels) - 1)) // len(self._panels))
        cell_w = max(1, min(3, avail_w // max(1, n_cols)))
        vis_cols = min(n_cols, avail_w // cell_w)
        vis_rows = min(n_rows, max(2, (self.size.height - 2 - titled) * 2))
        r0 = window(self.selected_row, n_rows, vis_rows)
        r0 -= r0 % 2  # keep character rows on matrix row pairs so the selection mark lands on its pair
        if self.selected_row >= r0 + vis_rows:  # ...without pushing the selected row off the bottom
            r0 += 2
        c0 = window(self.selected_row, n_cols, vis_cols)
        mono = bool(getattr(self.app, "no_color", False))
        panels = [half_block_lines(values[r0:r0 + vis_rows, c0:c0 + vis_cols], cell_width=cell_w, palette=palette,
                                   mono=mono) for _, values, palette in self._panels]
        panel_w = vis_cols * cell_w
        out = Text(no_wrap=True, overflow="crop")
        out.append(self._caption[: self.size.width] + "\n", style="bold")
        if titled:
            out.append(" " * (label_w + 1) + " ".join(title[:panel_w].ljust(panel_w)
                                                      for title, _, _ in self._panels) + "\n", style="bold")
        axis = "".join(token_label(t, cell_w).ljust(cell_w) for t in self._col_labels[c0:c0 + vis_cols])
        out.append(" " * (label_w + 1) + " ".join([axis] * len(panels)) + "\n", style="dim")
        for k in range(len(panels[0])):
            rows = range(r0 + 2 * k, min(r0 + 2 * k + 2, n_rows))
            marked = self.selected_row in rows
            # Two matrix rows share a character row: label it with the selected one when it is there.
            row = self.selected_row if marked else rows[0]
            label = token_label(self._row_labels[row], label_w - 1) if row < len(self._row_labels) else ""
            out.append(("▶" if marked else " ") + label.rjust(label_w - 1) + " ",
                       style="bold reverse" if marked else "dim")
            for p, lines in enumerate(panels):
                if p:
                    out.append(" ")
                out.append_text(lines[k])
            if k < len(panels[0]) - 1:
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
        """badges: a short label per head after its name (its badge, or in compare mode its change)."""
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
