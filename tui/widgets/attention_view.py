"""The Inspect tab's main view: every head as a mini heatmap in a layers x heads grid, or one head (or the
mean/max of a layer's heads) zoomed with token labels; for an LSTM the hidden activations (units x time).
In compare mode (an engine.compare.Comparison of checkpoints A and B) the grid shows where each head's
attention changed, |A - B|, labelled with its JS distance, and the zoom shows A | B | A - B.
PromptStrip shows the prompt with each token shaded by the attention the selected query gives it (in A).

Both draw an engine.inspection.Inspection through a View (the selection and the display options); they
only re-slice its arrays, never recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import ContentSwitcher, Static

from tui.render.heatmap import signed_display_values
from tui.widgets.heatmap import SCALES, HeadGrid, Heatmap, display_values, token_label

AGGREGATES = ("single", "mean", "max")


@dataclass(frozen=True)
class View:
    layer: int = 0
    head: int = 0
    position: int = 0  # the query token
    zoomed: bool = False
    aggregate: str = "single"  # single | mean | max (of the layer's heads, zoomed)
    hide_first: bool = False
    row_normalize: bool = False
    scale: str = "linear"

    def step(self, dims: tuple[int, int, int], layer: int = 0, head: int = 0, position: int = 0) -> View:
        """Moved by the given deltas: layers and heads wrap around, the query token stops at the ends."""
        n_layers, n_heads, n_tokens = dims
        return replace(self, layer=(self.layer + layer) % max(1, n_layers), head=(self.head + head) % max(1, n_heads),
                       position=max(0, min(n_tokens - 1, self.position + position)))

    def next_option(self, name: str) -> View:
        """The next value of a display option: aggregate and scale cycle, the others toggle."""
        value = getattr(self, name)
        cycle = {"aggregate": AGGREGATES, "scale": SCALES}.get(name)
        return replace(self, **{name: cycle[(cycle.index(value) + 1) % len(cycle)] if cycle else not value})

    def values(self, matrix: np.ndarray) -> np.ndarray:
        return display_values(matrix, hide_first=self.hide_first, row_normalize=self.row_normalize, scale=self.scale)

    def signed_values(self, matrix: np.ndarray) -> np.ndarray:
        return signed_display_values(matrix, hide_first=self.hide_first, row_normalize=self.row_normalize,
                                     scale=self.scale)


def is_lstm(ins: Any) -> bool:
    return getattr(ins, "attn", None) is None


def dims(ins: Any) -> tuple[int, int, int]:
    """(layers, heads, tokens); heads is 1 for an LSTM."""
    if is_lstm(ins):
        return (len(ins.hidden), 1, len(ins.tokens))
    return (*ins.attn.shape[:2], len(ins.tokens))


def selected_matrix(ins: Any, v: View) -> np.ndarray:
    """The raw matrix the zoomed view shows: one head, or the mean/max over the layer's heads; for an LSTM
    the layer's hidden activations as units x time."""
    if is_lstm(ins):
        return np.asarray(ins.hidden[v.layer]).T
    heads = ins.attn[v.layer]
    if v.aggregate == "mean":
        return heads.mean(axis=0)
    if v.aggregate == "max":
        return heads.max(axis=0)
    return heads[v.head]


def change_text(distance: float) -> str:
    """A head's JS distance in at most 5 characters: ".490"; int8 against fp32 moves heads by ~1e-4, so
    small values keep a digit ("9e-05") rather than reading 0."""
    d = float(distance)
    return "0" if d == 0 else f"{d:.3f}".lstrip("0") if d >= 0.001 else f"{d:.0e}"


def caption(ins: Any, v: View, cmp: Any = None) -> str:
    tok = token_label(ins.tokens[v.position], 12) if ins.tokens else ""
    if is_lstm(ins):
        return f"layer {v.layer} · pos {v.position} {tok!r} · {v.scale}"
    which = "all heads" if v.aggregate != "single" else f"head {v.head}"
    badge = ins.badges[v.layer][v.head]
    opts = [v.scale] + (["sink hidden"] if v.hide_first else []) + (["row-norm"] if v.row_normalize else [])
    if cmp is not None:  # the change first: what compare mode is for
        which = (f"{which} · JS {change_text(cmp.distance[v.layer, v.head])} "
                 f"#{cmp.rank_of(v.layer, v.head) + 1}/{len(cmp.ranking)}")
    return (f"L{v.layer} {which}{' ' + badge if badge and v.aggregate == 'single' else ''}"
            f" · {v.aggregate} · query {v.position} {tok!r} · {' · '.join(opts)}")


class AttentionView(ContentSwitcher):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(initial="grid", id=id)

    def compose(self) -> ComposeResult:
        yield HeadGrid(id="grid")
        yield Heatmap(id="zoom")

    def draw(self, ins: Any, v: View, cmp: Any = None) -> None:
        """cmp: an engine.compare.Comparison whose `a` is `ins` (compare mode), or None."""
        self.current = "zoom" if v.zoomed else "grid"
        tokens = list(ins.tokens)
        zoom = self.query_one(Heatmap)
        if is_lstm(ins):
            values = np.clip((np.tanh(selected_matrix(ins, v)) + 1) / 2, 0, 1)
            zoom.selected_row = 0
            units = [str(u) for u in range(values.shape[0])]
            zoom.show(values, units, tokens, palette="diverging",
                      caption=f"layer {v.layer} hidden units x time (blue -, red +)")
            return
        grid = self.query_one(HeadGrid)
        grid.sel_layer, grid.sel_head = v.layer, v.head
        if v.zoomed and cmp is not None:
            zoom.selected_row = v.position
            a, b = selected_matrix(ins, v), selected_matrix(cmp.b, v)
            zoom.show_panels([(f"A {cmp.label_a}", v.values(a), "sequential"),
                              (f"B {cmp.label_b}", v.values(b), "sequential"),
                              ("A-B red: A>B", v.signed_values(a - b), "diverging")],
                             tokens, tokens, caption=caption(ins, v, cmp))
        elif v.zoomed:
            zoom.selected_row = v.position
            zoom.show(v.values(selected_matrix(ins, v)), tokens, tokens, caption=caption(ins, v))
        elif cmp is not None:
            n_layers, n_heads = ins.attn.shape[:2]
            change = np.abs(cmp.diff)
            grid.show(np.stack([[v.values(change[l, h]) for h in range(n_heads)] for l in range(n_layers)]),
                      [[change_text(d) for d in row] for row in cmp.distance])
        else:
            n_layers, n_heads = ins.attn.shape[:2]
            grid.show(np.stack([[v.values(ins.attn[l, h]) for h in range(n_heads)] for l in range(n_layers)]),
                      ins.badges)

    def focus_shown(self) -> None:
        self.query_one(f"#{self.current}").focus()

    @property
    def has_focus_within(self) -> bool:
        return self.query_one(HeadGrid).has_focus or self.query_one(Heatmap).has_focus


class PromptStrip(Static):
    def draw(self, ins: Any, v: View) -> None:
        """The prompt with each key token's background showing the selected query's attention to it."""
        tokens = list(ins.tokens)
        if is_lstm(ins):
            weights = np.zeros(len(tokens))
        else:
            weights = v.values(selected_matrix(ins, v)[v.position: v.position + 1])[0]
        budget = max(20, self.size.width * 3 - 4)
        # Long prompts pan: show the window of tokens that ends at the selected query.
        start = v.position
        used = 0
        while start > 0 and used + len(token_label(tokens[start - 1], 16)) < budget:
            start -= 1
            used += len(token_label(tokens[start], 16))
        text = Text(no_wrap=False)
        for i in range(start, len(tokens)):
            level = int(round(float(weights[i]) * 255))
            style = f"on rgb({level // 2},{level // 3},{level})" if level and not self.app.no_color else ""
            if i == v.position:
                style += " bold reverse"
            text.append(tokens[i].replace("\n", "⏎"), style=style.strip())
        self.update(text)
