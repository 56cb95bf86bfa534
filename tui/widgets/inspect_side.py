"""The Inspect tab's side panel: every head's metrics (the selected one under the cursor), or in compare
mode the heads ranked by how much their attention changed between A and B; the model's top-k next tokens
after the selected position, the logit lens, and the selected head's metrics over training (from the
run's `heads` events)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Label, Sparkline, TabbedContent, TabPane

from tui.widgets.attention_view import View, change_text, is_lstm
from tui.widgets.heatmap import token_label

# The head metrics, as (attribute of engine.inspection.HeadMetrics, column title). The first four are
# shares in [0, 1]; the distance is in tokens.
METRICS = [("entropy", "ent"), ("prev_token", "prev"), ("sink", "sink"), ("induction", "ind"),
           ("distance", "dist")]


class InspectSide(TabbedContent):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.heads_events: list[Any] = []  # the run's engine.events.Heads read so far (live mode adds to them)

    def compose(self) -> ComposeResult:
        trend: list[Widget] = []
        for key, title in METRICS[:4]:
            trend += [Label(title, id=f"trend-label-{key}"), Sparkline([], id=f"trend-{key}")]
        for pane in [
            # No cell padding: six columns must fit the 34 columns the side panel gets at 80x24.
            TabPane("Heads", DataTable(id="metrics", cursor_type="row", zebra_stripes=True, cell_padding=0),
                    id="side-heads"),
            TabPane("Next", DataTable(id="topk", cursor_type="none"), id="side-next"),
            TabPane("Lens", DataTable(id="lens", cursor_type="none"), id="side-lens"),
            TabPane("Trend", Vertical(*trend, id="trend"), id="side-trend"),
        ]:
            self.compose_add_child(pane)  # what `with TabbedContent(): with TabPane(...)` does
        yield from super().compose()

    def next_pane(self) -> None:
        panes = [pane.id for pane in self.query(TabPane)]
        self.active = panes[(panes.index(self.active) + 1) % len(panes)]

    def fill_metrics(self, ins: Any) -> None:
        """Once per inspection: a row per head."""
        table = self.query_one("#metrics", DataTable)
        table.clear(columns=True)
        if is_lstm(ins):
            table.add_columns("LSTM runs have no attention heads")
            return
        table.add_columns("head  ", *[title.rjust(5) for _, title in METRICS])
        for l, row in enumerate(ins.metrics):
            for h, m in enumerate(row):
                # Right-aligned, each with a leading space: the table has no cell padding to keep them apart.
                cells = [Text(f" {float(getattr(m, key)):.{1 if key == 'distance' else 2}f}", justify="right")
                         for key, _ in METRICS]
                table.add_row(f"L{l}H{h} {ins.badges[l][h]}".ljust(6), *cells, key=f"{l}-{h}")

    def fill_ranking(self, cmp: Any) -> None:
        """Once per comparison (engine.compare.Comparison): a row per head, the most changed first, with its
        JS distance, badges in A and B, and entropy and previous-token share as A - B."""
        table = self.query_one("#metrics", DataTable)
        table.clear(columns=True)
        table.add_columns("#  ", "head ", *[title.rjust(6) for title in ("JS", "A>B", "Δent", "Δprev")])
        badges_a, badges_b = cmp.a.badges, cmp.b.badges
        for rank, (l, h) in enumerate(cmp.ranking, 1):
            a, b = cmp.a.metrics[l][h], cmp.b.metrics[l][h]
            cells = [f" {change_text(cmp.distance[l, h])}", f" {badges_a[l][h] or '-'}>{badges_b[l][h] or '-'}",
                     f" {a.entropy - b.entropy:+.2f}", f" {a.prev_token - b.prev_token:+.2f}"]
            table.add_row(str(rank).ljust(3), f"L{l}H{h}".ljust(5), *[Text(c, justify="right") for c in cells],
                          key=f"{l}-{h}")

    def draw(self, ins: Any, v: View) -> None:
        p = v.position
        if not is_lstm(ins):
            table, key = self.query_one("#metrics", DataTable), f"{v.layer}-{v.head}"
            if key in table.rows:  # a selection from a model of another shape is clamped right after
                table.move_cursor(row=table.get_row_index(key))
        topk = self.query_one("#topk", DataTable)
        topk.clear(columns=True)
        topk.add_columns("next", "prob")
        for token, prob in zip(ins.topk_tokens[p], ins.topk_probs[p]):
            topk.add_row(token_label(token, 16), f"{float(prob):.3f}")
        topk.border_title = f"after {token_label(ins.tokens[p], 12)!r} · entropy {float(ins.entropy[p]):.2f}"
        lens = self.query_one("#lens", DataTable)
        lens.clear(columns=True)
        lens.add_columns("layer", "top-1", "prob")
        # Row 0 is the embedding alone, then the residual after each block.
        for l, (tokens, probs) in enumerate(zip(ins.lens_tokens, ins.lens_probs)):
            lens.add_row("emb" if l == 0 else f"L{l - 1}", token_label(tokens[p], 16), f"{float(probs[p]):.3f}")
        self.draw_trend(v.layer, v.head)

    def draw_trend(self, layer: int, head: int) -> None:
        """The selected head's metrics over the run's evals."""
        steps = []
        for event in self.heads_events:
            try:
                steps.append((event.step, event.layers[layer][head]))
            except (IndexError, TypeError):
                continue  # an event from another shape of model (or a newer schema): not plottable here
        for key, title in METRICS[:4]:
            values = [float(m.get(key) or 0.0) for _, m in steps]
            self.query_one(f"#trend-{key}", Sparkline).data = values
            last = f" {values[-1]:.2f}" if values else ""
            span = f" · steps {steps[0][0]}..{steps[-1][0]}" if steps else " · no heads events yet"
            self.query_one(f"#trend-label-{key}", Label).update(f"L{layer}H{head} {title}{last}{span}")
