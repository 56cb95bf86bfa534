"""InspectBody: what the Inspect tab draws of an inspection through a View: the grid or zoom
(AttentionView) beside the side panel (InspectSide), the prompt strip and the status line. Drawing only
re-slices arrays already computed, at most MAX_REDRAWS times a second."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from tui.widgets.attention_view import AttentionView, PromptStrip, View, caption
from tui.widgets.inspect_side import InspectSide
from tui.widgets.inspector import InspectResult
from tui.workers import Throttle

MAX_REDRAWS = 10  # a second: holding an arrow key must not queue more frames than anyone can see


class InspectBody(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[InspectResult, View] | None = None
        self.request_redraw = Throttle(self, 1 / MAX_REDRAWS, self._redraw)

    def compose(self) -> ComposeResult:
        with Horizontal(id="insp-main"):
            yield AttentionView(id="insp-view")
            yield InspectSide(id="insp-side")
        yield PromptStrip(id="insp-text")
        yield Static("Enter in the prompt (or ctrl+s) inspects the selected run", id="insp-status")

    def fill(self, result: InspectResult) -> None:
        """Once per result: the Heads pane's rows (in compare mode: the heads ranked by change)."""
        side = self.query_one(InspectSide)
        if result.comparison is not None:
            side.fill_ranking(result.comparison)
        else:
            side.fill_metrics(result.inspection)

    def draw(self, result: InspectResult, view: View, now: bool = False) -> None:
        attention = self.query_one(AttentionView)
        if view.zoomed != (attention.current == "zoom"):  # at once, not throttled: the keys follow the focus
            had_focus = attention.has_focus_within
            attention.current = "zoom" if view.zoomed else "grid"
            if had_focus:  # the hidden view loses focus: give it to the one now shown so keys keep working
                attention.focus_shown()
        self._shown = (result, view)
        self.request_redraw(now)

    def _redraw(self) -> None:
        if self._shown is None:
            return
        result, view = self._shown
        ins, cmp = result.inspection, result.comparison
        self.query_one(AttentionView).draw(ins, view, cmp)
        self.query_one(PromptStrip).draw(ins, view)
        self.query_one(InspectSide).draw(ins, view)
        self.status(caption(ins, view, cmp))

    def status(self, text: str) -> None:
        self.query_one("#insp-status", Static).update(text)
