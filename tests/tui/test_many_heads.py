"""A GPT-2-shaped head count (12 layers x 12 heads) in the Inspect tab at 80x24: the overview pans to the
selected head and says which part it shows; Generate streams from the same model. (The 124M model itself
is checked by benchmarks/bench.py's gpt2 rows and by hand: too slow for the suite on 2 cores.)"""

from __future__ import annotations

from textual.widgets import TabbedContent

from tests.tui.pilot_helpers import wait_for
from tests.tui.test_generate_inspect import inspect, open_tab
from benchmarks.tiny_run import make_tiny_run
from tui.app import SmallGPTApp
from tui.tabs.generate import GenerateTab
from tui.widgets.heatmap import HeadGrid
from tui.widgets.prompt_input import PromptInput
from tui.widgets.token_stream import TokenStream


async def test_twelve_by_twelve_heads_pan_at_80x24_and_generate_streams(home):
    make_tiny_run(home, model=dict(n_layer=12, n_head=12, n_embd=48))
    app = SmallGPTApp()
    async with app.run_test(size=(80, 24)) as pilot:
        tab = await inspect(app, pilot)
        grid = tab.query_one(HeadGrid)
        grid.focus()
        first = str(grid.render())
        assert "L0" in first and "h0" in first and "of 12" in first and "L11" not in first
        await pilot.press(*["down"] * 11, *["right"] * 11)
        await pilot.pause(0.2)  # redraws are throttled to 10 a second
        assert (grid.sel_layer, grid.sel_head) == (11, 11)
        last = str(grid.render())
        assert "L11" in last and "h11" in last and "-11 of 12, heads" in last and "L0 " not in last

        gen = await open_tab(app, pilot, "4", GenerateTab)
        gen.query_one(PromptInput).value = "the cat"
        gen.query_one(PromptInput).focus()
        await pilot.press("enter")
        stream = gen.query_one("#out-a", TokenStream)
        await wait_for(pilot, lambda: stream.token_count > 20, what="tokens to stream")
        assert app.query_one(TabbedContent).active == "generate"
