"""How the fine-tuning views look at 120x40 and 80x24 (pytest-textual-snapshot): the Train tab's Task section
(classify, LoRA, with the data preview), the Generate tab's classify view and its chat view after a turn.

Deterministic content: fine-tuned runs made without a training process from the seed-initialised tiny run
(benchmarks/finetune_runs.py), sampling with a fixed seed, the task data in the test's working directory (a relative
path in the form), the measured speed replaced by a fixed text. Update the pictures with
`pytest tests/tui/test_snapshots_finetune.py --snapshot-update` after an intended change.
"""

from __future__ import annotations

import pytest

from benchmarks.finetune_runs import make_finetuned_run, write_chat_data, write_classify_data
from tests.tui.pilot_helpers import settle, wait_for
from benchmarks.tiny_run import make_tiny_run
from tui.app import SmallGPTApp
from tui.tabs.generate import GenerateTab
from tui.widgets.class_bars import ClassBars
from tui.widgets import stream_view
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicker
from tui.widgets.train_form import KNOB, TrainForm, field_id

SIZES = [(120, 40), (80, 24)]
pytestmark = pytest.mark.slow  # each picture loads torch and a model in the app's workers


@pytest.fixture
def base(home, monkeypatch):
    monkeypatch.chdir(home)
    monkeypatch.setattr(stream_view, "speed_line", lambda count, elapsed: f"{count} tok · speed hidden")
    return make_tiny_run(home, model={"block_size": 96})


async def _generate_tab(pilot, mode: str) -> GenerateTab:
    await settle(pilot)
    await pilot.press("4")
    tab = pilot.app.query_one(GenerateTab)
    await wait_for(pilot, lambda: tab.query_one(RunPicker).run_dir is not None and tab.mode == mode,
                   what=f"the {mode} view")
    return tab


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_train_tab_classify_with_lora(snap_compare, base, home, size):
    write_classify_data(home)

    async def filled(pilot):
        await settle(pilot)
        await pilot.press("3")
        form = pilot.app.query_one(TrainForm)
        form.query_one(f"#{field_id(KNOB['task.kind'])}").value = "classify"
        from_select = form.query_one(f"#{field_id(KNOB['task.init_from'])}")
        await wait_for(pilot, lambda: len(from_select._options) > 1, what="the base runs")
        from_select.value = f"{base}:best"
        await pilot.pause()
        form.query_one(f"#{field_id(KNOB['data.corpus'])}").value = "animals.csv"
        form.query_one(f"#{field_id(KNOB['task.train'])}").value = "lora"
        # The preview of animals.csv itself: the built-in set the task choice put first has "records" too, and
        # its preview can land while the form waits for the base runs.
        await wait_for(pilot, lambda: "40 records" in str(form.query_one("#data-preview").render()),
                       what="the preview of animals.csv")
        await settle(pilot)

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=filled)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_generate_classify_view(snap_compare, base, home, size):
    make_finetuned_run(base, "classify", write_classify_data(home), "animals")

    async def classified(pilot):
        tab = await _generate_tab(pilot, "classify")
        tab.query_one(PromptInput).value = "the dog sat on the rug"
        await wait_for(pilot, lambda: tab.query_one("#bars-a", ClassBars).probs, what="the class bars")
        tab.focus()  # off the prompt: no blinking cursor in the picture
        await pilot.pause(0.2)

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=classified)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_generate_chat_view_after_a_turn(snap_compare, base, home, size):
    make_finetuned_run(base, "instruct", write_chat_data(home), "chat")

    async def chatted(pilot):
        tab = await _generate_tab(pilot, "instruct")
        tab.query_one("#gen-max_new_tokens").value = "40"
        prompt = tab.query_one(PromptInput)
        prompt.value = "who sat on the mat"
        prompt.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not tab.running and tab.streams.chats[0][-1]["role"] == "assistant",
                       what="the reply")
        tab.query_one("#out-a").focus()
        await pilot.pause(0.2)

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=chatted)
