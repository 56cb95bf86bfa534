"""The Inspect tab: every attention head of a run at a glance, one head in full, and what the model predicts.

InspectBody draws: left, AttentionView, the layers x heads grid of mini heatmaps with their badges, or
(Enter) one head zoomed with token labels on both axes; right, InspectSide, head metrics, the top-k next
tokens at the selected position, the logit lens, and the head metrics over training; below, PromptStrip,
the prompt with each token shaded by how much the selected query token attends to it. LSTM runs show
hidden activations (units x time) instead of attention.

Compare mode (b, CompareBar): the same prompt through a second checkpoint B of the same shape (another
checkpoint of the run, int8, or the run it was fine-tuned from); engine.compare measures each head's
change, the grid shows |A - B| per head, the zoom A | B | A - B, and the Heads pane ranks heads by their
change. Every other key works as without it, on A.

Inspector runs the inspection in a thread worker; this tab holds the selection and view options (a View)
and wires keys, pickers and results together. Live mode (LivePoller) re-inspects when a new `latest`
checkpoint appears; export (s) writes the screen and the arrays (tui.export).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual import on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import DataTable, Label

from tui.export import export_inspection
from tui.tabs.base import EngineTab
from tui.widgets.attention_view import AttentionView, View, dims, is_lstm
from tui.widgets.compare_bar import CompareBar, CompareChanged
from tui.widgets.inspect_body import InspectBody
from tui.widgets.inspect_side import InspectSide
from tui.widgets.inspector import InspectionReady, InspectResult, Inspector, label
from tui.widgets.live_poller import LivePoller, LiveUpdate
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicked, RunPicker
from tui.workers import WorkFailed


class InspectTab(EngineTab, can_focus=True):
    BINDINGS = [
        Binding("ctrl+s,ctrl+g", "inspect", "Inspect"),  # ctrl+s: every tab's main action
        Binding("enter", "zoom", "Zoom head"),
        Binding("escape", "unzoom", "Grid", show=False),
        Binding("up,k", "move(-1, 0)", "Up", show=False),
        Binding("down,j", "move(1, 0)", "Down", show=False),
        Binding("left,h", "move(0, -1)", "Left", show=False),
        Binding("right,l", "move(0, 1)", "Right", show=False),
        Binding("left_square_bracket", "step(-1, 0, 0)", "Layer-", show=False),
        Binding("right_square_bracket", "step(1, 0, 0)", "Layer+", key_display="[ ]"),
        Binding("comma", "step(0, -1, 0)", "Head-", show=False),
        Binding("full_stop", "step(0, 1, 0)", "Head+", key_display=", ."),
        Binding("p", "step(0, 0, -1)", "Prev token", show=False),
        Binding("n", "step(0, 0, 1)", "Next token", key_display="p n"),
        Binding("a", "option('aggregate')", "Single/mean/max"),
        Binding("f", "option('hide_first')", "Hide sink"),
        Binding("r", "option('row_normalize')", "Row norm"),
        Binding("c", "option('scale')", "Scale"),
        Binding("t", "side_panel", "Heads/Next/Lens/Trend"),
        Binding("v", "toggle('live')", "Live"),
        Binding("b", "compare", "Compare A/B"),
        Binding("s", "export", "Export"),
    ]

    view: reactive[View] = reactive(View, init=False)  # the selection and the display options
    live: reactive[bool] = reactive(False, init=False)

    def __init__(self) -> None:
        super().__init__()
        self.result: InspectResult | None = None

    def compose(self) -> ComposeResult:
        # The prompt first: Tab from the tab lands in it (the run is usually chosen once).
        yield PromptInput(placeholder="prompt (empty: the start of the run's corpus) · Enter inspects",
                          id="insp-prompt", compact=True)
        with Horizontal(id="insp-top"):
            yield Label("A", id="insp-a", classes="ab")
            yield RunPicker(checkpoint="latest", id="insp-run")
            yield Label("live: off", id="insp-live")
        yield CompareBar(id="insp-top-b")
        yield InspectBody(id="insp-body")
        yield LivePoller()
        yield Inspector()

    @property
    def compare(self) -> bool:
        return self.query_one(CompareBar).active

    @property
    def inspection(self) -> Any:
        return self.result.inspection if self.result else None

    @property
    def is_lstm(self) -> bool:
        return self.inspection is not None and is_lstm(self.inspection)

    def _dims(self) -> tuple[int, int, int]:
        return dims(self.inspection) if self.inspection is not None else (0, 0, 0)

    # -- actions ----------------------------------------------------------------------------------------

    def on_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.action_inspect()

    @on(DataTable.RowSelected, "#metrics")
    def select_head(self, event: DataTable.RowSelected) -> None:
        """Enter on a row of the Heads pane (in compare mode: ranked by change) zooms into that head."""
        layer, head = map(int, str(event.row_key.value).split("-"))
        self.view = replace(self.view, layer=layer, head=head, aggregate="single", zoomed=True)

    def on_run_picked(self, event: RunPicked) -> None:
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
        against = self.query_one(CompareBar).against()
        if self.compare and against is None:
            self.notify("No run selected as B: pick one beside 'vs B'.", severity="warning")
            return
        what = f" against {label(*against)}" if against else ""
        self._set_status(f"inspecting {label(picker.run_dir, picker.checkpoint)}{what}…")
        self.query_one(Inspector).inspect(picker.run_dir, picker.checkpoint, prompt.value, against=against)

    def action_zoom(self) -> None:
        if self.inspection is None:
            raise SkipAction()
        self.view = replace(self.view, zoomed=not self.view.zoomed)

    def action_unzoom(self) -> None:
        if not self.view.zoomed:
            raise SkipAction()  # Escape keeps its app-wide meaning
        self.view = replace(self.view, zoomed=False)

    def action_move(self, rows: int, cols: int) -> None:
        """Arrows: up/down move between layers in the grid, between query tokens when zoomed."""
        if self.inspection is None:
            raise SkipAction()
        zoomed = self.view.zoomed
        self.action_step(0 if zoomed else rows, cols, rows if zoomed else 0)

    def action_step(self, layer: int, head: int, position: int) -> None:
        self.view = self.view.step(self._dims(), layer, head, position)

    def action_option(self, name: str) -> None:
        self.view = self.view.next_option(name)

    def action_side_panel(self) -> None:
        self.query_one(InspectSide).next_pane()

    def action_compare(self) -> None:
        bar = self.query_one(CompareBar)
        bar.active = not bar.active

    def action_export(self) -> None:
        if self.result is None:
            self.notify("Nothing to export yet: run an inspection first (Enter in the prompt).", severity="warning")
            return
        svg, npz = export_inspection(self.app, self.result, self.view.layer, self.view.head)
        self.notify(f"Exported {svg.name} and {npz.name} to {svg.parent}.")

    def watch_view(self, view: View) -> None:
        if self.result is not None:  # nothing is recomputed: the body re-slices the result's arrays
            self.query_one(InspectBody).draw(self.result, view)

    def watch_live(self, live: bool) -> None:
        self.query_one("#insp-live", Label).update(f"live: {'on' if live else 'off'}")
        self.query_one(LivePoller).switch(live, self.query_one("#insp-run", RunPicker).run_dir)

    def on_compare_changed(self, message: CompareChanged) -> None:
        self.query_one("#insp-a").display = message.active
        if message.active and self.result is not None:
            self.action_inspect()
        elif message.active and message.switched:
            self._set_status("compare: pick B beside 'vs B', then Enter in the prompt (or ctrl+s)")
        elif self.result is not None and self.result.comparison is not None:
            self._show(replace(self.result, comparison=None))  # A is already there: nothing to recompute

    # -- the inspection ---------------------------------------------------------------------------------

    def on_live_update(self, message: LiveUpdate) -> None:
        side = self.query_one(InspectSide)
        if message.heads:
            side.heads_events.extend(message.heads)
            side.draw_trend(self.view.layer, self.view.head)
        run_dir = self.query_one("#insp-run", RunPicker).run_dir
        if message.new_checkpoint and self.live and run_dir is not None:
            # Live mode follows the checkpoint the trainer rewrites as it goes.
            prompt = self.result.prompt if self.result else self.query_one(PromptInput).value
            self.query_one(Inspector).inspect(run_dir, "latest", prompt, requested=False,
                                              against=self.query_one(CompareBar).against())

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group == "inspect":  # the status must not read 'inspecting…' still
            self._set_status(f"not inspected: {message.message}")

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
        self.query_one(InspectBody).fill(result)
        n_layers, n_heads, n_tokens = self._dims()
        v = self.view
        # The last token when the prompt is new: what the model is about to predict.
        position = n_tokens - 1 if first or v.position >= n_tokens else v.position
        # An LSTM has no heads: the activations are the view.
        self.view = replace(v, layer=min(v.layer, n_layers - 1), head=min(v.head, n_heads - 1), position=position,
                            zoomed=v.zoomed or self.is_lstm)
        self.query_one(InspectBody).draw(result, self.view, now=True)

    def _set_status(self, text: str) -> None:
        self.query_one(InspectBody).status(text)
