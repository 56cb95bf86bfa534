"""The Generate and Inspect tabs driven end to end through Pilot, with the real engine on a tiny run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from textual import events

from tests.engine.test_decode_process import alive, wait_gone
from tests.tui.pilot_helpers import notes, wait_for, zoom_shows
from benchmarks.tiny_run import make_tiny_run
from engine.decode_process import FLUSH_INTERVAL
from tui.app import SmallGPTApp
from tui.tabs.generate import GenerateTab
from tui.tabs.inspect import InspectTab
from tui.widgets.heatmap import Heatmap
from tui.widgets.prompt_input import PromptInput, load_history
from tui.widgets.sampling_form import parse_sampling
from tui.widgets.stream_view import StreamView
from tui.widgets.token_stream import TokenStream


async def open_tab(app, pilot, key: str, tab_cls):
    await pilot.press(key)
    tab = app.query_one(tab_cls)
    from tui.widgets.run_picker import RunPicker

    await wait_for(pilot, lambda: tab.query_one(RunPicker).run_dir is not None, what="the run list")
    return tab


def set_field(tab, field: str, value: str) -> None:
    tab.query_one(f"#gen-{field}").value = value


@pytest.fixture
def run(home) -> Path:
    return make_tiny_run(home)


# ---- Generate --------------------------------------------------------------------------------------


async def test_generation_streams_text_and_escape_stops_it(run):
    """Also: the decode process serves the next generation after a stop, and ends with the app."""
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        set_field(tab, "max_new_tokens", "100000")  # far more than the test waits for
        tab.query_one(PromptInput).value = "the cat"
        tab.query_one(PromptInput).focus()
        await pilot.press("ctrl+s")
        stream = tab.query_one("#out-a", TokenStream)
        await wait_for(pilot, lambda: stream.token_count > 20, what="tokens to stream")
        assert stream.text  # text appears token by token while the worker runs
        assert tab.running
        await pilot.press("escape")
        await wait_for(pilot, lambda: not tab.running, timeout=30, what="the stop")
        # The worker posts its last batch before it ends: nothing may arrive after the stop.
        stopped_at = stream.token_count
        await pilot.pause(0.3)
        assert stream.token_count == stopped_at < 100000
        assert "stopped" in str(tab.query_one("#gen-status").render())
        assert "tok/s" in stream.border_subtitle
        pid = tab.streams.decoder.pid
        set_field(tab, "max_new_tokens", "30")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not tab.running and stream.token_count == 30, what="the next generation")
        assert tab.streams.decoder.pid == pid and alive(pid)
    wait_gone(pid)


async def test_typing_on_the_tab_starts_the_prompt_and_digits_still_switch_tabs(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        prompt = tab.query_one(PromptInput)
        assert tab.has_focus and prompt.value == ""
        await pilot.press("t", "h", "e", "space", "c")
        assert prompt.has_focus and prompt.value == "the c"
        await pilot.press("enter")  # the prompt now takes Enter: it generates
        await wait_for(pilot, lambda: not tab.running and tab.query_one("#out-a", TokenStream).token_count > 0,
                       what="generation to finish")
        await pilot.press("escape")  # nothing to stop: Escape leaves the field for the tab
        assert tab.has_focus
        # Keys that arrive in one read (over SSH): once the typing started, '?' and digits are text too.
        for key, character in [("x", "x"), ("question_mark", "?"), ("1", "1")]:
            app.post_message(events.Key(key, character))
        await pilot.pause()
        assert prompt.value == "the cx?1" and app.query_one("TabbedContent").active == "generate"
        await pilot.press("escape", "5")
        assert app.query_one("TabbedContent").active == "inspect"


async def test_same_seed_gives_the_same_text_as_the_engine(run):
    from engine.checkpoint import load_model
    from engine.sampler import SamplingConfig, generate_text

    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        for field, value in [("max_new_tokens", "60"), ("seed", "7"), ("temperature", "0.9"), ("top_k", "5")]:
            set_field(tab, field, value)
        tab.query_one(PromptInput).value = "the dog"
        tab.query_one(PromptInput).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not tab.running and tab.query_one("#out-a", TokenStream).token_count > 0,
                       what="generation to finish")
        shown = tab.query_one("#out-a", TokenStream).text
    model, _, tokenizer = load_model(run, "best")
    expected = generate_text(model, tokenizer, "the dog",
                             SamplingConfig(max_new_tokens=60, seed=7, temperature=0.9, top_k=5))
    assert shown == expected
    assert load_history()[-1] == "the dog"  # the prompt was remembered


async def test_tokens_reach_the_ui_in_coalesced_batches(run, monkeypatch):
    batches: list[int] = []
    original = StreamView.on_tokens_arrived

    def counting(self, message):
        batches.append(len(message.tokens))
        original(self, message)

    monkeypatch.setattr(StreamView, "on_tokens_arrived", counting)
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        set_field(tab, "max_new_tokens", "400")
        tab.query_one(PromptInput).focus()
        started = time.monotonic()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not tab.running and sum(batches) == 400, what="400 tokens")
        elapsed = time.monotonic() - started
    # At most one message per FLUSH_INTERVAL (plus the final flush), never one per token.
    assert len(batches) <= elapsed / FLUSH_INTERVAL + 3
    assert len(batches) < 400


async def test_bad_sampling_value_is_one_clear_notification(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        set_field(tab, "temperature", "hot")
        tab.query_one(PromptInput).focus()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: notes(app), what="the notification")
        assert not tab.running
        assert [n.message for n in notes(app)] == ["temp must be a number (got 'hot')."]


def test_parse_sampling_reads_empty_top_k_and_top_p_as_off():
    values = {"temperature": "0", "top_k": "", "top_p": " ", "repetition_penalty": "1.1",
              "max_new_tokens": "5", "seed": "3"}
    assert parse_sampling(values) == {"temperature": 0.0, "top_k": None, "top_p": None,
                                      "repetition_penalty": 1.1, "max_new_tokens": 5, "seed": 3}


async def test_quantize_then_ab_compares_fp32_and_int8(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        set_field(tab, "max_new_tokens", "30")
        tab.query_one(PromptInput).focus()
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: (run / "ckpt" / "int8").is_dir() and
                       "int8 checkpoint written" in str(tab.query_one("#gen-status").render()), what="quantize")
        await pilot.press("ctrl+b")
        await pilot.press("ctrl+s")
        a, b = tab.query_one("#out-a", TokenStream), tab.query_one("#out-b", TokenStream)
        await wait_for(pilot, lambda: not tab.running and b.token_count == 30, what="A/B generation")
        assert a.token_count == 30 and b.display
        assert "int8" in b.border_title and "best" in a.border_title
        assert "tok/s" in a.border_subtitle and "tok/s" in b.border_subtitle


# ---- Inspect ---------------------------------------------------------------------------------------


async def inspect(app, pilot, prompt: str = "the cat sat on the mat") -> InspectTab:
    tab = await open_tab(app, pilot, "5", InspectTab)
    tab.query_one(PromptInput).value = prompt
    tab.query_one(PromptInput).focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: tab.result is not None, what="the inspection")
    return tab


async def test_inspect_navigation_changes_layer_head_and_the_drawn_matrix(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await inspect(app, pilot)
        assert (tab.view.layer, tab.view.head) == (0, 0)
        await pilot.press("enter")  # zoom into L0 H0
        assert tab.view.zoomed
        await zoom_shows(pilot, tab, tab.inspection.attn[0, 0])
        zoom = tab.query_one(Heatmap)
        before = zoom.values.copy()
        await pilot.press("right_square_bracket", "full_stop")
        assert (tab.view.layer, tab.view.head) == (1, 1)
        await zoom_shows(pilot, tab, tab.inspection.attn[1, 1])
        assert not np.allclose(zoom.values, before)
        await pilot.press("comma", "left_square_bracket")
        assert (tab.view.layer, tab.view.head) == (0, 0)
        # Up moves the query token in the zoomed view; `a` averages the layer's heads.
        last = tab.view.position
        await pilot.press("up")
        assert tab.view.position == last - 1
        await pilot.press("a")
        await zoom_shows(pilot, tab, tab.inspection.attn[0].mean(axis=0))
        await pilot.press("escape")  # back to the grid, where arrows move between layers and heads
        assert not tab.view.zoomed
        await pilot.press("down", "right")
        assert (tab.view.layer, tab.view.head) == (1, 1)


async def test_holding_a_key_redraws_at_most_ten_times_a_second(run, monkeypatch):
    from tui.widgets.attention_view import AttentionView

    draws: list[float] = []
    original = AttentionView.draw
    monkeypatch.setattr(AttentionView, "draw", lambda self, *a: (draws.append(time.monotonic()), original(self, *a)))
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await inspect(app, pilot)
        await pilot.press("enter")
        await zoom_shows(pilot, tab, tab.inspection.attn[0, 0])
        before, started = len(draws), time.monotonic()
        for _ in range(15):  # a held arrow key: 15 moves faster than any frame (the prompt has 22 tokens)
            tab.action_move(-1, 0)
        assert tab.view.position == len(tab.inspection.tokens) - 1 - 15
        # The last state is drawn in the end...
        await wait_for(pilot, lambda: tab.query_one(Heatmap).selected_row == tab.view.position, what="the last move")
        # ...by at most one redraw per tenth of a second since the first move (however slow the machine).
        assert 1 <= len(draws) - before <= (time.monotonic() - started) * 10 + 1


async def test_view_toggles_hide_the_sink_and_change_the_scale(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await inspect(app, pilot)
        await pilot.press("enter", "f", "c")
        assert tab.view.hide_first and tab.view.scale == "sqrt"
        await zoom_shows(pilot, tab, tab.inspection.attn[0, 0], hide_first=True, scale="sqrt")
        assert np.all(tab.query_one(Heatmap).values[:, 0] == 0)  # the first key column is hidden


async def test_live_mode_follows_heads_events_and_new_checkpoints(run):
    import torch

    from engine import checkpoint
    from engine.config import RunConfig
    from engine.models import build_model

    from textual.widgets import Sparkline

    from engine.events import EventWriter

    def head(entropy: float) -> dict:
        return {"entropy": entropy, "prev_token": 0.1, "sink": 0.2, "induction": 0.0, "distance": 2.0, "badge": ""}

    writer = EventWriter(run)  # what the trainer writes at each eval
    for step, entropy in [(10, 0.9), (20, 0.7)]:
        writer.emit("heads", step, layers=[[head(entropy), head(0.5)], [head(0.4), head(0.3)]], probe_tokens=32)
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await inspect(app, pilot)
        tab.query_one("#grid").focus()
        await pilot.press("v")
        assert tab.live
        trend = tab.query_one("#trend-entropy", Sparkline)
        await wait_for(pilot, lambda: list(trend.data or []) == [0.9, 0.7], timeout=10, what="the heads trend")
        writer.emit("heads", 30, layers=[[head(0.6), head(0.5)], [head(0.4), head(0.3)]], probe_tokens=32)
        await wait_for(pilot, lambda: list(trend.data or []) == [0.9, 0.7, 0.6], timeout=10, what="a new eval")
        before = tab.inspection.attn.copy()
        cfg = RunConfig.load(run / "config.toml")
        torch.manual_seed(123)  # different weights: a "newer" checkpoint from the trainer
        checkpoint.save_checkpoint(run, "latest", build_model(cfg.model), None, {"step": 5})
        await wait_for(pilot, lambda: not np.allclose(tab.inspection.attn, before), timeout=10,
                       what="the live redraw")
        assert tab.result.checkpoint == "latest"
    writer.close()


async def test_export_writes_svg_and_npz(run, home):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await inspect(app, pilot)
        tab.query_one("#grid").focus()
        await pilot.press("s")
        await wait_for(pilot, lambda: any("Exported" in n.message for n in notes(app)), what="the export")
    svgs = list((home / "exports").glob("*.svg"))
    npzs = list((home / "exports").glob("*.npz"))
    assert len(svgs) == 1 and len(npzs) == 1
    assert svgs[0].read_text().startswith("<svg")
    data = np.load(npzs[0])
    assert data["attn"].shape[:2] == (2, 2)
    assert list(data["tokens"]) == list(tab.inspection.tokens)


async def test_lstm_runs_show_hidden_activations(home):
    make_tiny_run(home, name="lstm", kind="lstm")
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await inspect(app, pilot, "the dog")
        heatmap = tab.query_one(Heatmap)
        await wait_for(pilot, lambda: heatmap.values is not None, what="the activations")
        assert tab.is_lstm and tab.view.zoomed
        assert heatmap.values.shape == (24, len(tab.inspection.tokens))  # units x time


async def test_prompt_history_survives_a_restart(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        set_field(tab, "max_new_tokens", "3")
        for prompt in ("first", "second", ""):  # an empty prompt generates but is not remembered
            tab.query_one(PromptInput).value = prompt
            tab.query_one(PromptInput).focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: not tab.running, what="generation")
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        prompt = tab.query_one(PromptInput)
        prompt.focus()
        await pilot.press("up")
        assert prompt.value == "second"
        await pilot.press("up")
        assert prompt.value == "first"


async def test_a_failed_generation_is_reported_once(run):
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        tab = await open_tab(app, pilot, "4", GenerateTab)
        tab.query_one("#checkpoint").value = "int8"  # not written yet: loading it fails
        tab.query_one(PromptInput).focus()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not tab.running, what="the failure")
        await pilot.pause(0.3)
        errors = [n.message for n in notes(app) if n.severity == "error"]
        assert len(errors) == 1 and "int8" in errors[0]
        assert "generate failed" in str(tab.query_one("#gen-status").render())
