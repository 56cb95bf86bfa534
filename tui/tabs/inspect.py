"""The Inspect tab: every attention head of a run at a glance, one head in full, and what the model predicts.

Left: AttentionView, the layers x heads grid of mini heatmaps with their badges, or (Enter) one head
zoomed with token labels on both axes. Right: InspectSide, head metrics, the top-k next tokens at the
selected position, the logit lens, and the head metrics over training. Bottom: PromptStrip, the prompt
with each token shaded by how much the selected query token attends to it. LSTM runs show hidden
activations (units x time) instead of attention.

Compare mode (b): the same prompt through a second checkpoint B of the same shape (another checkpoint of
the run, int8, or the run it was fine-tuned from); engine.compare measures each head's change, the grid
shows |A - B| per head, the zoom A | B | A - B, and the Heads pane ranks heads by their change. Every
other key works as without it, on A.

The inspection runs in a thread worker; this tab holds the selection and view options, and navigation
only re-slices arrays already computed, redrawn at most MAX_REDRAWS a second. Live mode (LivePoller)
re-inspects when a new `latest` checkpoint appears.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from textual import on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Label, Static

from engine.paths import home
from tui import model_cache
from tui.tabs.base import EngineTab
from tui.widgets.attention_view import AttentionView, PromptStrip, View, caption, dims, is_lstm
from tui.widgets.heatmap import SCALES
from tui.widgets.inspect_side import InspectSide
from tui.widgets.live_poller import LivePoller, LiveUpdate
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicked, RunPicker
from tui.workers import Throttle, engine_work

MAX_REDRAWS = 10  # a second: holding an arrow key must not queue more frames than anyone can see
DEFAULT_PROMPT_TOKENS = 48
AGGREGATES = ("single", "mean", "max")


@dataclass
class InspectResult:
    run_dir: Path
    checkpoint: str
    prompt: str
    inspection: Any  # engine.inspection.Inspection (of A in compare mode)
    requested: bool = True  # by the user (False: a live-mode refresh)
    comparison: Any = None  # engine.compare.Comparison with checkpoint B, in compare mode


@dataclass
class InspectionReady(Message):
    result: InspectResult


class InspectTab(EngineTab, can_focus=True):
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
        Binding("f", "toggle('hide_first')", "Hide sink"),
        Binding("r", "toggle('row_normalize')", "Row norm"),
        Binding("c", "scale", "Scale"),
        Binding("t", "side_panel", "Heads/Next/Lens/Trend"),
        Binding("v", "toggle('live')", "Live"),
        Binding("b", "toggle('compare')", "Compare A/B"),
        Binding("s", "export", "Export"),
    ]

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
    compare: reactive[bool] = reactive(False, init=False)

    def __init__(self) -> None:
        super().__init__()
        self.result: InspectResult | None = None
        self.request_redraw = Throttle(self, 1 / MAX_REDRAWS, self._redraw)

    def compose(self) -> ComposeResult:
        # The prompt first: Tab from the tab lands in it (the run is usually chosen once).
        yield PromptInput(placeholder="prompt (empty: the start of the run's corpus) · Enter inspects",
                          id="insp-prompt", compact=True)
        with Horizontal(id="insp-top"):
            yield Label("A", id="insp-a", classes="ab")
            yield RunPicker(checkpoint="latest", id="insp-run")
            yield Label("live: off", id="insp-live")
        with Horizontal(id="insp-top-b"):
            yield Label("vs B", classes="ab")
            yield RunPicker(checkpoint="best", id="insp-run-b")
        with Horizontal(id="insp-main"):
            yield AttentionView(id="insp-view")
            yield InspectSide(id="insp-side")
        yield PromptStrip(id="insp-text")
        yield Static("Enter in the prompt (or ctrl+s) inspects the selected run", id="insp-status")
        yield LivePoller()

    @property
    def inspection(self) -> Any:
        return self.result.inspection if self.result else None

    @property
    def is_lstm(self) -> bool:
        return self.inspection is not None and is_lstm(self.inspection)

    @property
    def view(self) -> View:
        return View(self.sel_layer, self.sel_head, self.position, self.zoomed, self.aggregate, self.hide_first,
                    self.row_normalize, self.scale)

    def _dims(self) -> tuple[int, int, int]:
        return dims(self.inspection) if self.inspection is not None else (0, 0, 0)

    # -- actions ----------------------------------------------------------------------------------------

    def on_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.action_inspect()

    @on(DataTable.RowSelected, "#metrics")
    def select_head(self, event: DataTable.RowSelected) -> None:
        """Enter on a row of the Heads pane (in compare mode: ranked by change) zooms into that head."""
        self.sel_layer, self.sel_head = map(int, str(event.row_key.value).split("-"))
        self.aggregate = "single"
        self.zoomed = True

    def on_run_picked(self, event: RunPicked) -> None:
        if event.picker.id == "insp-run-b":
            if self.compare and self.result is not None:
                self.action_inspect()
            return
        self.query_one(LivePoller).follow(event.run_dir)  # a different run: its events start from the top
        self.query_one(InspectSide).heads_events = []
        if self.result is not None or self.live:
            self.action_inspect()

    def action_inspect(self) -> None:
        picker = self.query_one("#insp-run", RunPicker)
        if picker.run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return
        prompt = self.query_one(PromptInput)
        if prompt.value:
            prompt.commit()
        against = self._against()
        if self.compare and against is None:
            self.notify("No run selected as B: pick one beside 'vs B'.", severity="warning")
            return
        what = f" against {label(*against)}" if against else ""
        self._set_status(f"inspecting {label(picker.run_dir, picker.checkpoint)}{what}…")
        self._inspect(picker.run_dir, picker.checkpoint, prompt.value, against=against)

    def _against(self) -> tuple[Path, str] | None:
        """Checkpoint B (run, checkpoint) in compare mode, else None."""
        b = self.query_one("#insp-run-b", RunPicker)
        return (b.run_dir, b.checkpoint) if self.compare and b.run_dir is not None else None

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
        self.sel_layer = (self.sel_layer + delta) % max(1, self._dims()[0])

    def action_head(self, delta: int) -> None:
        self.sel_head = (self.sel_head + delta) % max(1, self._dims()[1])

    def action_position(self, delta: int) -> None:
        self.position = max(0, min(self._dims()[2] - 1, self.position + delta))

    def action_aggregate(self) -> None:
        self.aggregate = AGGREGATES[(AGGREGATES.index(self.aggregate) + 1) % len(AGGREGATES)]

    def action_scale(self) -> None:
        self.scale = SCALES[(SCALES.index(self.scale) + 1) % len(SCALES)]

    def action_side_panel(self) -> None:
        self.query_one(InspectSide).next_pane()

    def action_export(self) -> None:
        """The view as SVG and the raw matrices as .npz, into $SMALLGPT_HOME/exports/."""
        if self.result is None:
            self.notify("Nothing to export yet: run an inspection first (Enter in the prompt).", severity="warning")
            return
        svg, npz = export_view(self.app, self.result, self.sel_layer, self.sel_head)
        self.notify(f"Exported {svg.name} and {npz.name} to {svg.parent}.")

    # Every view option redraws (throttled); none recomputes the inspection.
    def _watch_view(self) -> None:
        self.request_redraw()

    watch_sel_layer = watch_sel_head = watch_position = watch_aggregate = _watch_view
    watch_hide_first = watch_row_normalize = watch_scale = _watch_view

    def watch_zoomed(self, zoomed: bool) -> None:
        view = self.query_one(AttentionView)
        had_focus = view.has_focus_within
        view.current = "zoom" if zoomed else "grid"
        if had_focus:  # the hidden view loses focus: give it to the one now shown so keys keep working
            view.focus_shown()
        self.request_redraw()

    def watch_live(self, live: bool) -> None:
        self.query_one("#insp-live", Label).update(f"live: {'on' if live else 'off'}")
        self.query_one(LivePoller).switch(live, self.query_one("#insp-run", RunPicker).run_dir)

    def watch_compare(self, compare: bool) -> None:
        self.query_one("#insp-top-b").display = self.query_one("#insp-a").display = compare
        if compare and self.result is not None:
            self.action_inspect()
        elif compare:
            self._set_status("compare: pick B beside 'vs B', then Enter in the prompt (or ctrl+s)")
        elif self.result is not None and self.result.comparison is not None:
            self._show(replace(self.result, comparison=None))  # A is already there: nothing to recompute

    # -- the inspection ---------------------------------------------------------------------------------

    @engine_work("inspect")
    def _inspect(self, run_dir: Path, checkpoint: str, prompt: str, requested: bool = True,
                 against: tuple[Path, str] | None = None) -> None:
        """Inspect the prompt with the run's checkpoint, or compare it with checkpoint `against`."""
        from engine.compare import compare_prompt
        from engine.inspection import inspect_prompt

        model, cfg, tokenizer = model_cache.load(run_dir, checkpoint)
        if not prompt:
            prompt = default_prompt(cfg, tokenizer)
        if against is None:
            result = InspectResult(run_dir, checkpoint, prompt, inspect_prompt(model, tokenizer, prompt), requested)
        else:
            model_b, _, tokenizer_b = model_cache.load(*against)
            cmp = compare_prompt(model, tokenizer, model_b, tokenizer_b, prompt, label(run_dir, checkpoint),
                                 label(*against))
            result = InspectResult(run_dir, checkpoint, prompt, cmp.a, requested, comparison=cmp)
        self.post_message(InspectionReady(result))

    def on_live_update(self, message: LiveUpdate) -> None:
        side = self.query_one(InspectSide)
        if message.heads:
            side.heads_events.extend(message.heads)
            side.draw_trend(self.sel_layer, self.sel_head)
        run_dir = self.query_one("#insp-run", RunPicker).run_dir
        if message.new_checkpoint and self.live and run_dir is not None:
            # Live mode follows the checkpoint the trainer rewrites as it goes.
            prompt = self.result.prompt if self.result else self.query_one(PromptInput).value
            self._inspect(run_dir, "latest", prompt, requested=False, against=self._against())

    def on_inspection_ready(self, message: InspectionReady) -> None:
        result = message.result
        if result.comparison is not None and not self.compare:
            result = replace(result, comparison=None)  # compare mode was switched off while it ran
        self._show(result)
        if result.requested:
            # The user asked for this view: hand the keys to it (live refreshes never steal focus).
            self.query_one(AttentionView).focus_shown()

    def _show(self, result: InspectResult) -> None:
        first = self.result is None or self.result.prompt != result.prompt
        self.result = result
        side = self.query_one(InspectSide)
        if result.comparison is not None:
            side.fill_ranking(result.comparison)
        else:
            side.fill_metrics(self.inspection)
        n_layers, n_heads, n_tokens = self._dims()
        self.sel_layer = min(self.sel_layer, n_layers - 1)
        self.sel_head = min(self.sel_head, n_heads - 1)
        if first or self.position >= n_tokens:
            self.position = n_tokens - 1  # the last token: what the model is about to predict
        self.request_redraw(now=True)

    # -- drawing ----------------------------------------------------------------------------------------

    def _redraw(self) -> None:
        ins = self.inspection
        if ins is None:
            return
        if self.is_lstm:
            self.zoomed = True  # an LSTM has no heads: the activations are the view
        view, cmp = self.view, self.result.comparison
        self.query_one(AttentionView).draw(ins, view, cmp)
        self.query_one(PromptStrip).draw(ins, view)
        self.query_one(InspectSide).draw(ins, view)
        self._set_status(caption(ins, view, cmp))

    def _set_status(self, text: str) -> None:
        self.query_one("#insp-status", Static).update(text)


def label(run_dir: Path, checkpoint: str) -> str:
    return f"{run_dir.name}/{checkpoint}"


def export_view(app, result: InspectResult, layer: int, head: int) -> tuple[Path, Path]:
    """Write the current screen as SVG and the inspection's arrays (with the comparison's, in compare
    mode) as .npz; returns (svg, npz)."""
    out = home() / "exports"
    out.mkdir(parents=True, exist_ok=True)
    cmp = result.comparison
    vs = f"-vs-{cmp.label_b.replace('/', '-')}" if cmp is not None else ""
    stem = f"inspect-{result.run_dir.name}-{result.checkpoint}{vs}-L{layer}H{head}-{time.strftime('%Y%m%d-%H%M%S')}"
    svg = Path(app.save_screenshot(filename=f"{stem}.svg", path=str(out)))
    ins = result.inspection
    arrays: dict[str, Any] = {"tokens": np.array(list(ins.tokens)), "prompt": np.array(result.prompt)}
    for name in ("token_ids", "attn", "hidden", "entropy", "topk_ids", "topk_probs", "lens_probs"):
        value = getattr(ins, name, None)
        if value is not None:
            arrays[name] = np.asarray(value)
    if cmp is not None:
        arrays.update(cmp.to_arrays())
    npz = out / f"{stem}.npz"
    np.savez(npz, **arrays)
    return svg, npz


def default_prompt(cfg, tokenizer) -> str:
    """The first DEFAULT_PROMPT_TOKENS tokens of the run's corpus (capped at its block size)."""
    from engine.corpora import load_corpus

    n = min(DEFAULT_PROMPT_TOKENS, cfg.model.block_size)
    text = next(iter(load_corpus(cfg.data.corpus).iter_text(chunk_chars=4096)), "")
    return tokenizer.decode(tokenizer.encode(text)[:n])
