"""Fine-tuning in the TUI, end to end with the real engine on tiny models (issue 19): a classify fine-tune
with LoRA started from the Train tab, its accuracy in the monitor, a text classified in the Generate tab;
an instruct fine-tune, then a two-turn chat. Oracles: the engine's own classify_texts and generate on the
same checkpoint and conversation."""

from __future__ import annotations

import time

import pytest
from textual.widgets import Input, Select

from benchmarks.finetune_runs import write_chat_data, write_classify_data
from tests.tui.pilot_helpers import notes, settle, wait_for
from benchmarks.tiny_run import make_tiny_run
from engine.decode_process import Batch
from tui.app import SmallGPTApp
from tui.tabs.generate import GenerateTab
from tui.tabs.train import TrainTab
from tui.widgets.class_bars import ClassBars
from tui.widgets.prompt_input import PromptInput
from tui.widgets.token_stream import TokenStream
from tui.widgets.train_form import KNOB, TrainForm, field_id

# Each test launches a trainer process (torch import, a few dozen steps) and loads models in the app.
pytestmark = pytest.mark.slow
FORM = {"train.max_steps": "20", "train.eval_interval": "10", "train.batch_size": "8", "train.warmup_steps": "2",
        "train.device": "cpu", "train.dtype": "fp32"}


async def _fine_tune(pilot, kind: str, base, data, extra: dict[str, str]):
    """Fill the Train tab's task fields and training fields, start, and wait for the run to finish."""
    await settle(pilot)
    await pilot.press("3")
    tab = pilot.app.query_one(TrainTab)
    form = tab.query_one(TrainForm)
    form.query_one(f"#{field_id(KNOB['task.kind'])}", Select).value = kind
    from_select = form.query_one(f"#{field_id(KNOB['task.init_from'])}", Select)
    await wait_for(pilot, lambda: f"{base}:best" in [v for _, v in from_select._options], what="the base runs")
    from_select.value = f"{base}:best"
    await pilot.pause()
    for path, value in {"data.corpus": str(data), **extra, **FORM}.items():
        widget = form.query_one(f"#{field_id(KNOB[path])}")
        widget.value = value
        await pilot.pause()
    assert form.validate() is not None, form.config()[1]
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: tab.follower.followed is not None and tab.follower.followed.history.ended,
                   timeout=300, what="the fine-tune to finish")
    h = tab.follower.followed.history
    assert h.ended == "max_steps", h.error
    return tab, h


async def test_classify_fine_tune_with_lora_then_classify_a_text(home):
    base = make_tiny_run(home, model={"block_size": 64})
    data = write_classify_data(home)
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab, h = await _fine_tune(pilot, "classify", base, data, {"task.train": "lora", "lora.rank": "4"})
        assert h.task == "classify" and len(h.val_accuracy) == 2  # an eval at steps 10 and 20
        assert 0 < h.trainable_share < 0.5  # adapters and the head only
        tab.monitor.redraw(force=True)
        assert "acc " in str(tab.query_one("#run-status").text) and "trainable" in str(tab.query_one("#run-status").text)
        run = tab.follower.followed.path

        await pilot.press("escape", "4")
        gen = app.query_one(GenerateTab)
        await wait_for(pilot, lambda: gen.mode == "classify", what="the classify view")
        gen.query_one(PromptInput).value = "the dog sat on the rug"
        bars = gen.query_one("#bars-a", ClassBars)
        await wait_for(pilot, lambda: bars.probs, what="the class probabilities")

    from engine.checkpoint import load_model
    from engine.tasks import read_task_info
    from engine.tasks.classify import classify_texts

    model, _, tokenizer = load_model(run, "best")
    expected = classify_texts(model, tokenizer, read_task_info(run)["labels"], ["the dog sat on the rug"])[0]
    assert bars.probs.keys() == expected.keys() == {"cat", "dog"}
    assert all(abs(bars.probs[k] - expected[k]) < 1e-5 for k in expected)


async def test_instruct_fine_tune_then_a_two_turn_chat(home, monkeypatch):
    base = make_tiny_run(home, model={"block_size": 96})
    data = write_chat_data(home)
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab, h = await _fine_tune(pilot, "instruct", base, data, {})
        assert h.task == "instruct" and h.val_loss and h.sample.startswith("> who sat on the")
        run = tab.follower.followed.path

        await pilot.press("escape", "4")
        gen = app.query_one(GenerateTab)
        await wait_for(pilot, lambda: gen.mode == "instruct", what="the chat view")
        gen.query_one("#gen-temperature", Input).value = "0"
        gen.query_one("#gen-max_new_tokens", Input).value = "12"
        prompt = gen.query_one(PromptInput)
        for turn in ("who sat on the mat", "who sat on the log"):
            prompt.value = turn
            prompt.focus()
            await pilot.press("enter")
            assert prompt.value == ""  # sent: the box is ready for the next turn
            await wait_for(pilot, lambda: not gen.running, timeout=120, what="the reply")
        chat = gen.streams.chats[0]
        transcript = gen.query_one("#out-a", TokenStream)
        assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant"]
        assert transcript.text == chat[1]["content"] + chat[3]["content"]

        await pilot.press("ctrl+b")  # A/B before any int8 exists: the int8 side fails, saying how to make it
        prompt.value = "who sat on the mat"
        prompt.focus()
        await pilot.press("enter")

        def said() -> str:
            return " ".join(n.message for n in notes(app))

        await wait_for(pilot, lambda: "no int8 checkpoint" in said(), timeout=120, what="the note")
        await wait_for(pilot, lambda: not gen.running, what="the end of the A/B turn")
        assert "ctrl+t" in said()
        assert [m["role"] for m in gen.streams.chats[0]] == ["user", "assistant"]
        assert gen.streams.chats[1] == []  # the failed side's turn is not left without its reply

        def endless(request, cancelled):  # a reply that goes on until Escape, then ends as the child's does
            count = 0
            while not cancelled():
                count += 1
                yield Batch([("x", 0.5)], count, 0.01 * count, final=False)
                time.sleep(0.01)
            yield Batch([], count, 0.01 * count, final=True)

        monkeypatch.setattr(gen.streams.decoder, "stream", endless)  # Escape while the fp32 side streams
        prompt.value = "who sat on the log"
        prompt.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: gen.query_one("#out-a", TokenStream).token_count > 0, what="the fp32 side")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not gen.running, what="the stop")
        assert [m["role"] for m in gen.streams.chats[0]] == ["user", "assistant"] * 2  # as much as was shown
        assert gen.streams.chats[1] == []  # the int8 side's turn never came

    from engine.checkpoint import load_model
    from engine.sampler import SamplingConfig, generate_text
    from engine.tasks import read_task_info
    from engine.tasks.instruct import prompt_text

    model, _, tokenizer = load_model(run, "best")
    template = read_task_info(run)["template"]
    greedy = SamplingConfig(temperature=0, max_new_tokens=12)
    assert chat[1]["content"] == generate_text(model, tokenizer, prompt_text(template, chat[:1]), greedy)
    assert chat[3]["content"] == generate_text(model, tokenizer, prompt_text(template, chat[:3]), greedy)
