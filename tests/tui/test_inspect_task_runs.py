"""The Inspect tab on fine-tuned runs: an empty prompt inspects what the run's model reads (a task run's data
is no corpus), and an inspection that fails says so in the status line, not 'inspecting…' forever."""

from __future__ import annotations

import pytest
from textual.widgets import Select

from benchmarks.finetune_runs import make_finetuned_run, write_chat_data
from benchmarks.tiny_run import make_tiny_run
from tests.tui.pilot_helpers import notes, wait_for
from tui.app import SmallGPTApp
from tui.tabs.inspect import InspectTab
from tui.widgets.run_picker import RunPicker

pytestmark = pytest.mark.slow  # the app loads two models in its workers


async def test_an_empty_prompt_inspects_a_chat_runs_prompt_and_a_failure_is_in_the_status(home, monkeypatch):
    monkeypatch.chdir(home)
    base = make_tiny_run(home, model={"block_size": 96})
    chat = make_finetuned_run(base, "instruct", write_chat_data(home), "chat")
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        tab = app.query_one(InspectTab)
        picker = tab.query_one("#insp-run", RunPicker)
        await wait_for(pilot, lambda: picker.run_dir is not None, what="the run list")
        picker.query_one("#run", Select).value = str(chat)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: tab.result is not None, what="the inspection")
        # The end of the first held-out record as the chat template gives it to the model (the tiny run's
        # vocabulary has 18 characters: the others decode as unknowns).
        assert "sat on the" in tab.result.prompt and tab.result.prompt.endswith("\n")
        assert not [n for n in notes(app) if n.severity == "error"]

        (home / "chat.jsonl").unlink()  # the run's task data is gone: its default prompt cannot be read
        tab.result = None
        await pilot.press("ctrl+s")
        status = tab.query_one("#insp-status")
        await wait_for(pilot, lambda: "not inspected: " in str(status.render()), what="the failure in the status")
        assert "chat.jsonl" in str(status.render()) and tab.result is None
