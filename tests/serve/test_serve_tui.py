"""The TUI's "Serve this run" (ctrl+r in Generate, also in the palette): a detached server that outlives the
app, shown with its address in the runs listing and stopped with `runs stop`."""

from __future__ import annotations

import openai

from benchmarks.tiny_run import make_tiny_run
from engine import runs
from tests.tui.pilot_helpers import wait_for
from tui.app import SmallGPTApp
from tui.tabs.generate import GenerateTab
from tui.widgets.run_picker import RunPicker


async def test_serve_this_run_starts_a_server_that_outlives_the_app(home):
    run_dir = make_tiny_run(home)
    try:
        app = SmallGPTApp()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            tab = app.query_one(GenerateTab)
            await wait_for(pilot, lambda: tab.query_one(RunPicker).run_dir is not None, what="the run list")
            tab.focus()
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: runs.server_info(run_dir) is not None and "served at" in
                           str(tab.query_one("#gen-status").render()), timeout=120, what="the server")
        info = runs.server_info(run_dir)  # the app has exited: the server goes on
        assert info is not None and runs.run_info(run_dir).serving == info["url"]
        client = openai.OpenAI(base_url=info["url"], api_key="none", max_retries=0, timeout=60)
        assert client.completions.create(model="tiny", prompt="the", max_tokens=5, seed=1).usage.completion_tokens == 5
    finally:
        if runs.server_info(run_dir) is not None:
            assert runs.stop_server(run_dir)
    assert runs.run_info(run_dir).serving == ""
