"""The Inspect tab: every attention head of a run at a glance, one head in full, and what the model predicts.

Left: the layers x heads grid of mini heatmaps with their badges, or (Enter) one head zoomed with token
labels on both axes. Right: head metrics, the top-k next tokens at the selected position, the logit
lens, and the head metrics over training (from the run's `heads` events). Bottom: the prompt, each token
shaded by how much the selected query token attends to it. LSTM runs show hidden activations (units x
time) instead of attention.

The inspection runs in a thread worker; navigation only re-slices arrays already computed, and redraws
are throttled to MAX_REDRAWS a second. Live mode polls the run and re-inspects when a new `latest`
checkpoint appears.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text
from textual import work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import ContentSwitcher, DataTable, Label, Sparkline, Static, TabbedContent, TabPane

from engine.paths import home
from tui import model_cache
from tui.tabs.base import EngineTab
from tui.widgets.heatmap import SCALES, HeadGrid, Heatmap, display_values, token_label
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicker

log = logging.getLogger(__name__)
MAX_REDRAWS = 10  # a second: holding an arrow key must not queue more frames than anyone can see
LIVE_POLL_S = 1.0
DEFAULT_PROMPT_TOKENS = 48
AGGREGATES = ("single", "mean", "max")
# The head metrics, as (attribute of engine.inspection.HeadMetrics, column title). The first four are
# shares in [0, 1]; the distance is in tokens.
METRICS = [("entropy", "ent"), ("prev_token", "prev"), ("sink", "sink"), ("induction", "ind"),
           ("distance", "dist")]


@dataclass
class InspectResult:
    run_dir: Path
    checkpoint: str
    prompt: str
    inspection: Any  # engine.inspection.Inspection
    requested: bool = True  # by the user (False: a live-mode refresh)


class InspectionReady(Message):
    def __init__(self, result: InspectResult) -> None:
        super().__init__()
        self.result = result


class LiveUpdate(Message):
    """New `heads` events (for the trend sparklines) and whether the latest checkpoint changed."""

    def __init__(self, heads: list[dict], new_checkpoint: bool) -> None:
        super().__init__()
        self.heads, self.new_checkpoint = heads, new_checkpoint


class InspectTab(EngineTab, can_focus=True):
    TITLE = "Inspect"
    BINDINGS = [
        Binding("ctrl+s,ctrl+g", "inspect", "Inspect"),  # ctrl+s: every tab's main action
        Binding("enter", "zoom", "Zoom head"),
        Binding("escape", "unzoom", "Grid", show=False),
        Binding("up,k", "move(-1, 0)", "Up", show=False),
        Binding("down,j", "move(1, 0)", "Down", show=False),
        Binding("left,h", "move(0, -1)", "Left", show=False),
        Binding("right,l", "move(0, 1)", "Right", show=False),
        Binding("left_square_bracket", "layer(-1)", "Layer-", show=False),
        Binding("right_square_bracket", "layer(1)", "Layer+", key_display="[ ]"),
        Binding("comma", "head(-1)", "Head-", show=False),
        Binding("full_stop", "head(1)", "Head+", key_display=", ."),
        Binding("p", "position(-1)", "Prev token", show=False),
        Binding("n", "position(1)", "Next token", key_display="p n"),
        Binding("a", "aggregate", "Single/mean/max"),
        Binding("f", "toggle_first", "Hide sink"),
        Binding("r", "toggle_normalize", "Row norm"),
        Binding("c", "scale", "Scale"),
        Binding("t", "side_panel", "Heads/Next/Lens/Trend"),
        Binding("v", "live", "Live"),
        Binding("s", "export", "Export"),
    ]
    DEFAULT_CSS = """
    InspectTab { padding: 0 1; }
    InspectTab #insp-top { height: 1; }
    InspectTab #insp-live { width: auto; margin-left: 2; color: $text-muted; }
    InspectTab #insp-prompt { margin: 1 0; }
    InspectTab #insp-main { height: 1fr; margin-top: 1; }
    InspectTab #insp-view { width: 1fr; }
    InspectTab #insp-side { width: 40%; min-width: 34; max-width: 56; margin-left: 1; }
    InspectTab #insp-side DataTable { height: 1fr; }
    InspectTab #trend Label { color: $text-muted; }
    InspectTab #trend Sparkline { height: 2; margin-bottom: 1; }
    InspectTab #insp-text { height: 3; border-top: solid $primary 30%; }
    InspectTab #insp-status { height: 1; color: $text-muted; }
    """

    # Not `layer`: that name is Widget.layer, the compositor's layer of the widget.
    sel_layer: reactive[int] = reactive(0, init=False)
    sel_head: reactive[int] = reactive(0, init=False)
    position: reactive[int] = reactive(0, init=False)
    zoomed: reactive[bool] = reactive(False, init=False)
    aggregate: reactive[str] = reactive("single", init=False)
    hide_first: reactive[bool] = reactive(False, init=False)
    row_normalize: reactive[bool] = reactive(False, init=False)
    scale: reactive[str] = reactive("linear", init=False)
    live: reactive[bool] = reactive(False, init=False)

    def __init__(self) -> None:
        super().__init__()
        self.result: InspectResult | None = None
        self.redraws = 0  # how many times the view was drawn (the throttle's test counts them)
        self._last_draw = 0.0
        self._draw_pending = False
        self._live_timer = None
        self._live_reader = None
        self._live_stamp = None
        self._heads_events: list[dict] = []

    def compose(self) -> ComposeResult:
        # The prompt first: Tab from the tab lands in it (the run is usually chosen once).
        yield PromptInput(placeholder="prompt (empty: the start of the run's corpus) · Enter inspects",
                          id="insp-prompt", compact=True)
        with Horizontal(id="insp-top"):
            yield RunPicker(checkpoint="latest", id="insp-run")
            yield Label("live: off", id="insp-live")
        with Horizontal(id="insp-main"):
            with ContentSwitcher(initial="grid", id="insp-view"):
                yield HeadGrid(id="grid")
                yield Heatmap(id="zoom")
            with TabbedContent(id="insp-side"):
                with TabPane("Heads", id="side-heads"):
                    # No cell padding: six columns must fit the 34 columns the side panel gets at 80x24.
                    yield DataTable(id="metrics", cursor_type="row", zebra_stripes=True, cell_padding=0)
                with TabPane("Next", id="side-next"):
                    yield DataTable(id="topk", cursor_type="none")
                with TabPane("Lens", id="side-lens"):
                    yield DataTable(id="lens", cursor_type="none")
                with TabPane("Trend", id="side-trend"):
                    with Vertical(id="trend"):
                        for key, title in METRICS[:4]:
                            yield Label(title, id=f"trend-label-{key}")
                            yield Sparkline([], id=f"trend-{key}")
        yield Static(id="insp-text")
        yield Static("Enter in the prompt (or ctrl+s) inspects the selected run", id="insp-status")

    # -- state helpers ----------------------------------------------------------------------------------

    @property
    def inspection(self) -> Any:
        return self.result.inspection if self.result else None

    @property
    def is_lstm(self) -> bool:
        return self.inspection is not None and getattr(self.inspection, "attn", None) is None

    def _dims(self) -> tuple[int, int, int]:
        """(layers, heads, tokens) of the current inspection; heads is 1 for an LSTM."""
        ins = self.inspection
        if ins is None:
            return (0, 0, 0)
        if self.is_lstm:
            return (len(ins.hidden), 1, len(ins.tokens))
        n_layers, n_heads = ins.attn.shape[:2]
        return (n_layers, n_heads, len(ins.tokens))

    def selected_matrix(self) -> np.ndarray | None:
        """The raw matrix the zoomed view shows: one head, or the mean/max over the layer's heads;
        for an LSTM the layer's hidden activations as units x time."""
        ins = self.inspection
        if ins is None:
            return None
        if self.is_lstm:
            return np.asarray(ins.hidden[self.sel_layer]).T
        heads = ins.attn[self.sel_layer]
        if self.aggregate == "mean":
            return heads.mean(axis=0)
        if self.aggregate == "max":
            return heads.max(axis=0)
        return heads[self.sel_head]

    def _view_values(self, matrix: np.ndarray) -> np.ndarray:
        return display_values(matrix, hide_first=self.hide_first, row_normalize=self.row_normalize,
                              scale=self.scale)

    # -- actions ----------------------------------------------------------------------------------------

    def on_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.action_inspect()

    def on_run_picker_changed(self, event: RunPicker.Changed) -> None:
        self._live_reader = None  # a different run: its events start from the top
        self._heads_events = []
        if self.result is not None or self.live:
            self.action_inspect()

    def action_inspect(self) -> None:
        picker = self.query_one(RunPicker)
        if picker.run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return
        prompt = self.query_one(PromptInput)
        if prompt.value:
            prompt.commit()
        self._set_status(f"inspecting {picker.run_dir.name} ({picker.checkpoint})…")
        self._inspect(picker.run_dir, picker.checkpoint, prompt.value)

    def action_zoom(self) -> None:
        if self.inspection is None:
            raise SkipAction()
        self.zoomed = not self.zoomed

    def action_unzoom(self) -> None:
        if not self.zoomed:
            raise SkipAction()  # Escape keeps its app-wide meaning
        self.zoomed = False

    def action_move(self, rows: int, cols: int) -> None:
        if self.inspection is None:
            raise SkipAction()
        if rows and self.zoomed:
            self.action_position(rows)
        elif rows:
            self.action_layer(rows)
        if cols:
            self.action_head(cols)

    def action_layer(self, delta: int) -> None:
        n_layers, _, _ = self._dims()
        if n_layers:
            self.sel_layer = (self.sel_layer + delta) % n_layers

    def action_head(self, delta: int) -> None:
        _, n_heads, _ = self._dims()
        if n_heads:
            self.sel_head = (self.sel_head + delta) % n_heads

    def action_position(self, delta: int) -> None:
        _, _, n_tokens = self._dims()
        if n_tokens:
            self.position = max(0, min(n_tokens - 1, self.position + delta))

    def action_aggregate(self) -> None:
        self.aggregate = AGGREGATES[(AGGREGATES.index(self.aggregate) + 1) % len(AGGREGATES)]

    def action_toggle_first(self) -> None:
        self.hide_first = not self.hide_first

    def action_toggle_normalize(self) -> None:
        self.row_normalize = not self.row_normalize

    def action_scale(self) -> None:
        self.scale = SCALES[(SCALES.index(self.scale) + 1) % len(SCALES)]

    def action_side_panel(self) -> None:
        side = self.query_one("#insp-side", TabbedContent)
        panes = [pane.id for pane in side.query(TabPane)]
        side.active = panes[(panes.index(side.active) + 1) % len(panes)]

    def action_live(self) -> None:
        self.live = not self.live

    # Every view option redraws (throttled); none recomputes the inspection.
    def _watch_view(self) -> None:
        self.request_redraw()

    watch_sel_layer = watch_sel_head = watch_position = watch_aggregate = _watch_view
    watch_hide_first = watch_row_normalize = watch_scale = _watch_view

    def watch_zoomed(self, zoomed: bool) -> None:
        had_focus = self.query_one(HeadGrid).has_focus or self.query_one(Heatmap).has_focus
        self.query_one("#insp-view", ContentSwitcher).current = "zoom" if zoomed else "grid"
        if had_focus:  # the hidden view loses focus: give it to the one now shown so keys keep working
            self.query_one(Heatmap if zoomed else HeadGrid).focus()
        self.request_redraw()

    def watch_live(self, live: bool) -> None:
        self.query_one("#insp-live", Label).update(f"live: {'on' if live else 'off'}")
        if live:
            self._live_stamp = None  # the first poll after switching on always redraws from the latest
            self._live_timer = self.set_interval(LIVE_POLL_S, self._poll_live)
            self._poll_live()
        elif self._live_timer is not None:
            self._live_timer.stop()
            self._live_timer = None

    # -- workers ----------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="inspect", exit_on_error=False)
    def _inspect(self, run_dir: Path, checkpoint: str, prompt: str, requested: bool = True) -> None:
        from engine.inspection import inspect_prompt

        model, cfg, tokenizer = model_cache.load(run_dir, checkpoint)
        if not prompt:
            prompt = default_prompt(cfg, tokenizer)
        inspection = inspect_prompt(model, tokenizer, prompt)
        self.post_message(InspectionReady(InspectResult(run_dir, checkpoint, prompt, inspection, requested)))

    def _poll_live(self) -> None:
        run_dir = self.query_one(RunPicker).run_dir
        if run_dir is not None:
            self._live_poll(run_dir)

    @work(thread=True, exclusive=True, group="live-poll", exit_on_error=False)
    def _live_poll(self, run_dir: Path) -> None:
        from engine.events import EventReader

        if self._live_reader is None or self._live_reader.path.parent != run_dir:
            self._live_reader = EventReader(run_dir)
        heads = [e for e in self._live_reader.poll() if e.get("event") == "heads"]
        stamp = model_cache.checkpoint_stamp(run_dir, "latest")
        new_checkpoint = stamp is not None and stamp != self._live_stamp
        self._live_stamp = stamp
        if heads or new_checkpoint:
            self.post_message(LiveUpdate(heads, new_checkpoint))

    def on_live_update(self, message: LiveUpdate) -> None:
        if message.heads:
            self._heads_events.extend(message.heads)
            self._draw_trend()
        if message.new_checkpoint and self.live:
            run_dir = self.query_one(RunPicker).run_dir
            if run_dir is not None:
                # Live mode follows the checkpoint the trainer rewrites as it goes.
                self._inspect(run_dir, "latest", self.result.prompt if self.result else
                              self.query_one(PromptInput).value, requested=False)

    def on_inspection_ready(self, message: InspectionReady) -> None:
        first = self.result is None or self.result.prompt != message.result.prompt
        self.result = message.result
        n_layers, n_heads, n_tokens = self._dims()
        self.sel_layer = min(self.sel_layer, n_layers - 1)
        self.sel_head = min(self.sel_head, n_heads - 1)
        if first or self.position >= n_tokens:
            self.position = n_tokens - 1  # the last token: what the model is about to predict
        self._fill_metrics()
        self.request_redraw(now=True)
        if message.result.requested:
            # The user asked for this view: hand the keys to it (live refreshes never steal focus).
            self.query_one(Heatmap if self.zoomed else HeadGrid).focus()

    # -- drawing ----------------------------------------------------------------------------------------

    def request_redraw(self, now: bool = False) -> None:
        """Redraw at most MAX_REDRAWS times a second; a request inside the window is drawn at its end."""
        wait = self._last_draw + 1 / MAX_REDRAWS - time.monotonic()
        if now or wait <= 0:
            self._redraw()
        elif not self._draw_pending:
            self._draw_pending = True
            self.set_timer(wait, self._redraw)

    def _redraw(self) -> None:
        self._draw_pending = False
        self._last_draw = time.monotonic()
        ins = self.inspection
        if ins is None:
            return
        self.redraws += 1
        n_layers, n_heads, n_tokens = self._dims()
        tokens = list(ins.tokens)
        grid = self.query_one(HeadGrid)
        zoom = self.query_one(Heatmap)
        if self.is_lstm:
            self.zoomed = True  # an LSTM has no heads: the activations are the view
            values = np.clip((np.tanh(self.selected_matrix()) + 1) / 2, 0, 1)
            zoom.selected_row = 0
            units = [str(u) for u in range(values.shape[0])]
            zoom.show(values, units, tokens, palette="diverging",
                      caption=f"layer {self.sel_layer} hidden units x time (blue -, red +)")
        else:
            grid.sel_layer, grid.sel_head = self.sel_layer, self.sel_head
            if not self.zoomed:
                maps = np.stack([[self._view_values(ins.attn[l, h]) for h in range(n_heads)]
                                 for l in range(n_layers)])
                grid.show(maps, ins.badges)
            else:
                zoom.selected_row = self.position
                zoom.show(self._view_values(self.selected_matrix()), tokens, tokens, caption=self._caption())
        self._draw_text()
        self._draw_side()
        self._set_status(self._caption())

    def _caption(self) -> str:
        ins = self.inspection
        which = "all heads" if self.aggregate != "single" else f"head {self.sel_head}"
        tok = token_label(ins.tokens[self.position], 12) if ins is not None and ins.tokens else ""
        if self.is_lstm:
            return f"layer {self.sel_layer} · pos {self.position} {tok!r} · {self.scale}"
        badge = ins.badges[self.sel_layer][self.sel_head] if ins is not None else ""
        opts = [self.scale] + (["sink hidden"] if self.hide_first else []) + (["row-norm"] if self.row_normalize else [])
        return (f"L{self.sel_layer} {which}{' ' + badge if badge and self.aggregate == 'single' else ''}"
                f" · {self.aggregate} · query {self.position} {tok!r} · {' · '.join(opts)}")

    def _draw_text(self) -> None:
        """The prompt with each key token's background showing the selected query's attention to it."""
        ins = self.inspection
        widget = self.query_one("#insp-text", Static)
        tokens = list(ins.tokens)
        if self.is_lstm:
            weights = np.zeros(len(tokens))
        else:
            weights = self._view_values(self.selected_matrix()[self.position: self.position + 1])[0]
        budget = max(20, widget.size.width * 3 - 4)
        # Long prompts pan: show the window of tokens that ends at the selected query.
        start = self.position
        used = 0
        while start > 0 and used + len(token_label(tokens[start - 1], 16)) < budget:
            start -= 1
            used += len(token_label(tokens[start], 16))
        text = Text(no_wrap=False)
        for i in range(start, len(tokens)):
            shown = tokens[i].replace("\n", "⏎")
            level = int(round(float(weights[i]) * 255))
            style = f"on rgb({level // 2},{level // 3},{level})" if level and not self.app.no_color else ""
            if i == self.position:
                style += " bold reverse"
            text.append(shown, style=style.strip())
        widget.update(text)

    def _fill_metrics(self) -> None:
        table = self.query_one("#metrics", DataTable)
        table.clear(columns=True)
        ins = self.inspection
        if self.is_lstm:
            table.add_columns("LSTM runs have no attention heads")
            return
        table.add_columns("head  ", *[title.rjust(5) for _, title in METRICS])
        for l, row in enumerate(ins.metrics):
            for h, m in enumerate(row):
                # Right-aligned, each with a leading space: the table has no cell padding to keep them apart.
                cells = [Text(f" {float(getattr(m, key)):.{1 if key == 'distance' else 2}f}", justify="right")
                         for key, _ in METRICS]
                table.add_row(f"L{l}H{h} {ins.badges[l][h]}".ljust(6), *cells, key=f"{l}-{h}")

    def _draw_side(self) -> None:
        ins = self.inspection
        p = self.position
        if not self.is_lstm:
            _, n_heads, _ = self._dims()
            self.query_one("#metrics", DataTable).move_cursor(row=self.sel_layer * n_heads + self.sel_head)
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
        self._draw_trend()

    def _draw_trend(self) -> None:
        """The selected head's metrics over the run's evals (from its `heads` events)."""
        steps = []
        for event in self._heads_events:
            try:
                steps.append((event["step"], event["layers"][self.sel_layer][self.sel_head]))
            except (KeyError, IndexError, TypeError):
                continue  # an event from another shape of model (or a newer schema): not plottable here
        for key, title in METRICS[:4]:
            values = [float(m.get(key) or 0.0) for _, m in steps]
            self.query_one(f"#trend-{key}", Sparkline).data = values
            last = f" {values[-1]:.2f}" if values else ""
            span = f" · steps {steps[0][0]}..{steps[-1][0]}" if steps else " · no heads events yet"
            self.query_one(f"#trend-label-{key}", Label).update(f"L{self.sel_layer}H{self.sel_head} {title}{last}{span}")

    def _set_status(self, text: str) -> None:
        self.query_one("#insp-status", Static).update(text)

    # -- export -----------------------------------------------------------------------------------------

    def action_export(self) -> None:
        """The view as SVG and the raw matrices as .npz, into $SMALLGPT_HOME/exports/."""
        ins = self.inspection
        if ins is None:
            self.notify("Nothing to export yet: run an inspection first (Enter in the prompt).", severity="warning")
            return
        paths = export_view(self.app, self.result, self.sel_layer, self.sel_head)
        self.notify(f"Exported {paths[0].name} and {paths[1].name} to {paths[0].parent}.")


def export_view(app, result: InspectResult, layer: int, head: int) -> tuple[Path, Path]:
    """Write the current screen as SVG and the inspection's arrays as .npz; returns (svg, npz)."""
    out = home() / "exports"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"inspect-{result.run_dir.name}-{result.checkpoint}-L{layer}H{head}-{time.strftime('%Y%m%d-%H%M%S')}"
    svg = Path(app.save_screenshot(filename=f"{stem}.svg", path=str(out)))
    ins = result.inspection
    arrays: dict[str, Any] = {"tokens": np.array(list(ins.tokens)), "prompt": np.array(result.prompt)}
    for name in ("token_ids", "attn", "hidden", "entropy", "topk_ids", "topk_probs", "lens_probs"):
        value = getattr(ins, name, None)
        if value is not None:
            arrays[name] = np.asarray(value)
    npz = out / f"{stem}.npz"
    np.savez(npz, **arrays)
    return svg, npz


def default_prompt(cfg, tokenizer) -> str:
    """The first DEFAULT_PROMPT_TOKENS tokens of the run's corpus (capped at its block size)."""
    from engine.corpora import load_corpus

    n = min(DEFAULT_PROMPT_TOKENS, cfg.model.block_size)
    text = next(iter(load_corpus(cfg.data.corpus).iter_text(chunk_chars=4096)), "")
    return tokenizer.decode(tokenizer.encode(text)[:n])
