"""Heatmaps as Rich text: pure colour and half-block rendering shared by the CLI and the Inspect tab.

Only Rich here (no Textual), so `smallgpt inspect` and the TUI's widgets draw the same cells:
- half_block_lines: two matrix rows per character, '▀' with the upper row as foreground colour and the
  lower as background. Colours are truecolor; the Rich console (or Textual) downgrades them to 256 or
  16 colours where the terminal needs it.
- ramp_lines: for terminals without colour (NO_COLOR, a dumb terminal) one character per cell from a
  brightness ramp, one line per matrix row, so the map stays readable in plain text.
- AttentionHeatmap: a Rich renderable with token labels on both axes that fits the console's width
  (a prompt too long for it shows a window of the last tokens) and picks colour or ramp by itself.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.style import Style
from rich.text import Text

SCALES = ("linear", "sqrt", "log")
LOG_FLOOR = 1e-3  # the log scale spans three decades: weaker attention than 0.1% draws as nothing
RAMP = " .:-=+*#%@"  # no-colour cells, dark to bright
UPPER_HALF = "▀"


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


def signed_display_values(matrix: np.ndarray, *, hide_first: bool = False, row_normalize: bool = False,
                          scale: str = "linear") -> np.ndarray:
    """A signed matrix (a difference of weights) mapped to 0..1 for the diverging palette: 0.5 is no
    difference, each side scaled by magnitude under the same options as display_values."""
    m = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0)
    return 0.5 + 0.5 * np.sign(m) * display_values(np.abs(m), hide_first=hide_first, row_normalize=row_normalize,
                                                   scale=scale)


# Stops of the colour ramps (value 0 -> 1). Sequential: dark to bright (attention). Diverging: blue, dark,
# red (signed values mapped from -1..1 to 0..1: LSTM activations, A - B attention).
_RAMPS = {
    "sequential": [(0.0, (12, 12, 30)), (0.25, (70, 20, 110)), (0.5, (180, 50, 90)), (0.75, (250, 140, 40)),
                   (1.0, (252, 250, 160))],
    "diverging": [(0.0, (40, 110, 240)), (0.5, (20, 20, 20)), (1.0, (240, 60, 40))],
}
_SHADES = " ░▒▓█"


def colour(value: float, palette: str = "sequential") -> Color:
    """The truecolor of an intensity 0..1 on a palette's ramp (linear between its stops)."""
    ramp = _RAMPS[palette]
    for (x0, c0), (x1, c1) in zip(ramp, ramp[1:]):
        if value <= x1:
            t = 0.0 if x1 == x0 else (value - x0) / (x1 - x0)
            return Color.from_rgb(*(round(a + (b - a) * t) for a, b in zip(c0, c1)))
    return Color.from_rgb(*ramp[-1][1])


def half_block_lines(values: np.ndarray, *, cell_width: int = 1, palette: str = "sequential",
                     mono: bool = False) -> list[Text]:
    """One Text per pair of matrix rows: '▀' with the upper row as foreground, the lower as background.

    mono: one shade character per cell from the brighter of the two rows (for compact no-colour views;
    ramp_lines keeps every row).
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
                bg = colour(float(bottom[c]), palette) if bottom is not None else None
                line.append(UPPER_HALF * cell_width, Style(color=colour(float(top[c]), palette), bgcolor=bg))
        lines.append(line)
    return lines


def ramp_lines(values: np.ndarray, *, cell_width: int = 1) -> list[Text]:
    """One Text per matrix row, one RAMP character per cell: exactly 0 -> ' ', then '.' up to '@' for 1.
    Rounding up keeps weak but real weights visible (a diffuse row over 50 tokens still reads as dots)."""
    idx = np.clip(np.ceil(np.asarray(values) * (len(RAMP) - 1)).astype(int), 0, len(RAMP) - 1)
    return [Text("".join(RAMP[i] * cell_width for i in row), no_wrap=True) for row in idx]


def token_label(token: str, width: int) -> str:
    """A token made printable in at most `width` terminal cells: whitespace shown (· ⏎ ⇥), other control
    characters as their Unicode control pictures, long or wide tokens cut."""
    shown = "".join(_printable(ch) for ch in token) or "∅"
    if cell_len(shown) <= width:
        return shown
    return set_cell_size(shown, width).rstrip() if width > 0 else ""


def _printable(ch: str) -> str:
    if ch == " ":
        return "·"
    if ch == "\n":
        return "⏎"
    if ch == "\t":
        return "⇥"
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ .. ␟
    if code == 0x7F:
        return "␡"
    if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Mn"):  # invisible, or would merge with a neighbour
        return "�"
    return ch


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


def is_mono(console: Console) -> bool:
    """True where colours will not show: NO_COLOR, or a terminal without a colour system."""
    return console.no_color or console.color_system is None


class AttentionHeatmap:
    """A square attention matrix (queries down, keys across) with token labels on both axes.

    Fits options.max_width: when the prompt has more tokens than columns, the last ones are shown (those
    a continuation would attend from), and the title says which. Colour terminals get half-block cells
    (two query rows per line, labelled "upper/lower"); no-colour ones get one RAMP character per cell and
    one line per query.
    """

    MAX_LABEL = 6  # cells of a token label on the rows; the columns show up to COL_LABEL_LINES characters
    COL_LABEL_LINES = 3

    def __init__(self, matrix: np.ndarray, tokens: Sequence[str], *, title: str = "", palette: str = "sequential"):
        self.matrix = np.asarray(matrix)
        self.tokens = list(tokens)
        self.title = title
        self.palette = palette

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        mono = is_mono(console)
        total = len(self.tokens)
        labels = [token_label(t, self.MAX_LABEL) for t in self.tokens]
        lw = max((cell_len(s) for s in labels), default=1)
        gutter = lw + 1 if mono else 2 * lw + 2  # "label " or "upper/lower "
        visible = max(1, min(total, options.max_width - gutter))
        start = total - visible
        title = self.title + (f" (tokens {start}..{total - 1} of {total}: the last {visible} fit)" if start else "")
        yield Text(title, style="bold", no_wrap=True, overflow="ellipsis")
        values = display_values(self.matrix[start:, start:])
        shown = labels[start:]
        if mono:
            for label, line in zip(shown, ramp_lines(values)):
                yield _row(_pad_left(label, lw) + " ", line)
        else:
            for k, line in enumerate(half_block_lines(values, palette=self.palette)):
                upper = shown[2 * k]
                lower = shown[2 * k + 1] if 2 * k + 1 < len(shown) else ""
                yield _row(_pad_left(upper, lw) + "/" + set_cell_size(lower, lw) + " ", line)
        for line in _column_labels(shown, self.COL_LABEL_LINES):
            yield Text(" " * gutter + line, style="dim", no_wrap=True, overflow="crop")
        yield self._legend(mono, gutter)

    def _legend(self, mono: bool, gutter: int) -> Text:
        text = Text(" " * gutter + "0 ", style="dim", no_wrap=True)
        if mono:
            text.append(RAMP)
        else:
            for i in range(len(RAMP)):
                text.append("█", Style(color=colour(i / (len(RAMP) - 1), self.palette)))
        return text.append(" max", style="dim")


def _row(label: str, line: Text) -> Text:
    return Text(no_wrap=True, overflow="crop").append(label, style="dim").append_text(line)


def _pad_left(label: str, width: int) -> str:
    return " " * max(0, width - cell_len(label)) + label


def _column_labels(labels: Sequence[str], max_lines: int) -> list[str]:
    """Key labels written downwards, one terminal cell per column (wide characters become '·')."""
    chars = [[ch if cell_len(ch) == 1 else "·" for ch in label[:max_lines]] for label in labels]
    depth = max((len(c) for c in chars), default=0)
    return ["".join(c[i] if i < len(c) else " " for c in chars).rstrip() for i in range(depth)]
