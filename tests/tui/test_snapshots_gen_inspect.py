"""How the Generate and Inspect tabs look at 120x40 and 80x24 (pytest-textual-snapshot).

Deterministic content: the tiny seed-initialised run of benchmarks/tiny_run.py, greedy decoding with a
fixed seed, fixed prompts, and the measured speed (the one thing that differs run to run) replaced by a
fixed text. Update the pictures with `pytest tests/tui/test_snapshots_gen_inspect.py --snapshot-update`
after an intended change.
"""

from __future__ import annotations

import pytest

from tests.tui.pilot_helpers import settle, wait_for, zoom_shows
from benchmarks.tiny_run import make_tiny_run
from tui.app import SmallGPTApp
from tui.tabs.generate import GenerateTab
from tui.tabs.inspect import InspectTab
from tui.widgets.heatmap import HeadGrid
from tui.widgets import stream_view
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicker

SIZES = [(120, 40), (80, 24)]
# Each picture loads torch and a model in the app's workers: ~20 s apiece on a loaded 2-core machine.
pytestmark = pytest.mark.slow


@pytest.fixture
def run(home, monkeypatch):
    monkeypatch.setattr(stream_view, "speed_line", lambda count, elapsed: f"{count} tok · speed hidden")
    return make_tiny_run(home)


async def _open(pilot, key: str, tab_cls):
    await settle(pilot)
    await pilot.press(key)
    tab = pilot.app.query_one(tab_cls)
    await wait_for(pilot, lambda: tab.query_one(RunPicker).run_dir is not None, what="the run list")
    return tab


async def _inspect(pilot, prompt: str) -> InspectTab:
    tab = await _open(pilot, "5", InspectTab)
    tab.query_one(PromptInput).value = prompt
    tab.query_one(PromptInput).focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: tab.result is not None, what="the inspection")
    return tab


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_generate_tab_after_a_greedy_run(snap_compare, run, size):
    async def generated(pilot):
        tab = await _open(pilot, "4", GenerateTab)
        for field, value in [("temperature", "0"), ("max_new_tokens", "150"), ("seed", "1")]:
            tab.query_one(f"#gen-{field}").value = value
        tab.query_one(PromptInput).value = "the cat"
        tab.query_one(PromptInput).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not tab.running and tab.query_one("#out-a").token_count == 150,
                       what="150 tokens")
        tab.query_one("#out-a").focus()  # off the prompt: no blinking cursor in the picture
        await wait_for(pilot, lambda: tab.query_one("#out-a").has_focus, what="the focus")

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=generated)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_inspect_tab_head_grid(snap_compare, run, size):
    async def inspected(pilot):
        tab = await _inspect(pilot, "the cat sat on the mat")
        await pilot.press("down", "right")  # select L1 H1
        grid = tab.query_one(HeadGrid)  # the redraw is throttled: wait for it to mark L1 H1
        await wait_for(pilot, lambda: (grid.sel_layer, grid.sel_head) == (1, 1), what="the redraw")

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=inspected)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_inspect_tab_zoomed_head_with_sink_hidden(snap_compare, run, size):
    async def zoomed(pilot):
        tab = await _inspect(pilot, "the dog sat on the log. the cat")
        await pilot.press("enter", "up", "up", "f", "c", "t")  # zoom, query 2 tokens back, hide sink, sqrt, Next
        await zoom_shows(pilot, tab, tab.inspection.attn[0, 0], hide_first=True, scale="sqrt")

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=zoomed)
