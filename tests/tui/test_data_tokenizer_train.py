"""The Data, Tokenizer and Train tabs driven end to end with the real engine (tiny corpus, tiny GPT)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Select

from engine.config import RunConfig, apply_overrides
from engine.runs import create_run, is_running, launch, list_runs, stop_run, wait_stopped
from tests.tui.pilot_helpers import (TINY_FORM, fill_train_form, notes, settle, wait_for, write_corpus,
                                     write_finished_run)
from tui.app import SmallGPTApp
from tui.run_history import RunHistory
from tui.screens import QuitScreen
from tui.widgets.run_follower import RunFollower
from tui.widgets.train_form import field_for_error
from tui.widgets.loss_chart import LossChart, downsample


@pytest.fixture
def corpus(home, monkeypatch) -> str:
    monkeypatch.chdir(home)
    return write_corpus(home)


def wait_for_lock(run: Path, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while not is_running(run):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _attached(app: SmallGPTApp):
    return app.query_one(RunFollower).followed


@pytest.mark.slow
async def test_corpus_tokenizer_and_a_run_stopped_from_the_tab_end_to_end(corpus, home):
    (home / "other.txt").write_text("another corpus, shown first\n" * 50)
    app = SmallGPTApp(corpus="other.txt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # Data: pick the corpus by typing its path.
        source = app.query_one("#corpus-source", Input)
        source.focus()
        await pilot.press(*corpus, "enter")
        await settle(pilot)
        assert app.corpus == corpus
        assert "corpus.txt" in str(app.query_one("#corpus-title").render())
        assert app.query_one("#corpus-stats").row_count >= 7
        # Tokenizer: train a char tokenizer, try it.
        await pilot.press("escape", "2", "ctrl+s")
        await settle(pilot)
        assert app.tokenizer_path.endswith("corpus.txt-char.json") and Path(app.tokenizer_path).is_file()
        tab = app.query_one("#tok-try", Input)
        tab.focus()
        await pilot.press(*"the cat")
        assert "7 chars → 7 tokens" in str(app.query_one("#tok-try-stats").render())
        app.query_one("#vocab-filter", Input).value = "|"
        await pilot.pause()
        vocab = app.query_one("#vocab-table")
        rows = [str(vocab.get_row_at(i)[1]) for i in range(vocab.row_count)]
        assert "<|endoftext|>" in rows and "<|pad|>" in rows and all("|" in r for r in rows)
        # Data: encode with that tokenizer.
        await pilot.press("escape", "1", "ctrl+s")
        await settle(pilot)
        assert "Encoded:" in str(app.query_one("#data-status").render())
        # Train: the tiny GPT, more steps than the test waits for; the curve gains points; ctrl+t stops it.
        await pilot.press("escape", "3")
        await fill_train_form(pilot, {**TINY_FORM, "max_steps": "100000"})
        assert not app.query_one("#start", Button).disabled
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: _attached(app) is not None, what="the run to be attached")
        await wait_for(pilot, lambda: len(_attached(app).history.train_loss) >= 3, timeout=120,
                       what="loss points")
        chart = app.query_one(LossChart)
        await wait_for(pilot, lambda: chart.series and len(chart.series[0].x) >= 3, what="the chart to redraw")
        w = _attached(app)
        await wait_for(pilot, lambda: w.running, what="the trainer to take its lock")
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: not w.running and w.pid is None and w.history.ended == "stopped", timeout=60,
                       what="the run to stop")
        [info] = list_runs()
        assert info.status == "stopped" and info.step >= 30
        table = app.query_one("#runs-table")  # refreshed once the process is gone
        await wait_for(pilot, lambda: "stopped" in [str(c) for c in table.get_row_at(0)], what="the runs table")
        assert info.name in str(table.get_row_at(0))
        assert w.history.train_loss[-1] < w.history.train_loss[0]  # it learns


@pytest.mark.slow
async def test_a_new_app_reattaches_to_a_live_run_with_its_history(corpus, home):
    cfg = apply_overrides(RunConfig(), {"model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16},
                                        "data": {"corpus": corpus},
                                        "train": {"max_steps": 100_000, "batch_size": 8, "eval_interval": 25,
                                                  "device": "cpu", "dtype": "fp32", "log_interval": 5}})
    run = create_run(cfg, name="live")
    launch(run)
    try:
        assert wait_for_lock(run)
        first = SmallGPTApp(corpus=corpus)
        async with first.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: _attached(first) is not None, timeout=60, what="re-attach")
            await wait_for(pilot, lambda: len(_attached(first).history.train_loss) >= 2, timeout=120,
                           what="loss points")
            seen = len(_attached(first).history.train_loss)
            await wait_for(pilot, lambda: _attached(first).running, what="the lock")
            await pilot.press("ctrl+q")
            assert isinstance(first.screen, QuitScreen)
            await pilot.press("l")  # leave it running
        assert is_running(run)
        second = SmallGPTApp(corpus=corpus)
        async with second.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: _attached(second) is not None, timeout=30, what="re-attach")
            # The note is posted as a message with the attach: it shows once the app has handled it.
            await wait_for(pilot, lambda: any("Re-attached to live run live" in n.message
                                              for n in notes(second)), what="the re-attach note")
            w = _attached(second)
            await wait_for(pilot, lambda: len(w.history.train_loss) > seen and w.running, timeout=60,
                           what="history plus new points")
            assert w.history.train_steps[:seen] == sorted(w.history.train_steps[:seen])  # history from step 0
            assert w.history.train_steps[0] <= 5
            await pilot.press("ctrl+q")
            assert isinstance(second.screen, QuitScreen)
            await pilot.press("s")  # stop it
        assert wait_stopped(run, timeout=60)
    finally:
        if is_running(run):
            stop_run(run)
            wait_stopped(run, timeout=60)


async def test_invalid_fields_show_inline_messages_and_disable_start(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        start = app.query_one("#start", Button)
        assert not start.disabled
        await fill_train_form(pilot, {"n_embd": "32", "n_head": "3"})
        error = app.query_one("#f-model-n_embd-error")
        assert error.display and "divisible by n_head" in str(error.render())
        assert start.disabled
        await fill_train_form(pilot, {"n_head": "4", "n_layer": "two"})
        assert not error.display
        assert "layers must be a whole number (got 'two')" in str(app.query_one("#f-model-n_layer-error").render())
        assert start.disabled
        await fill_train_form(pilot, {"n_layer": "2", "dropout": "1.5"})
        assert "dropout" in str(app.query_one("#f-model-dropout-error").render())
        await fill_train_form(pilot, {"dropout": "0.1"})
        assert not start.disabled
        assert not any(w.display for w in app.query(".field-error"))


async def test_preset_fills_the_form(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        app.query_one("#preset", Select).value = "small"
        await pilot.pause()
        assert app.query_one("#f-model-n_embd", Input).value == "384"
        assert app.query_one("#f-model-block_size", Input).value == "256"
        assert app.query_one("#f-train-lr", Input).value == "0.001"


async def test_starting_with_a_missing_corpus_is_a_notification(home, monkeypatch):
    monkeypatch.chdir(home)
    app = SmallGPTApp(corpus="missing.txt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("escape", "3")
        await fill_train_form(pilot, TINY_FORM)
        await pilot.press("ctrl+s")
        await settle(pilot)
        messages = [n.message for n in notes(app)]
        assert messages and all("missing.txt" in m for m in messages)
        assert not any("Traceback" in m or "Internal error" in m for m in messages)
        assert str(app.query_one("#run-status").text) == "start failed (see the notification)"  # not "Creating…"
        assert app.is_running


async def test_a_followed_run_that_fails_is_a_notification_with_its_message(corpus, home):
    import json
    import subprocess
    import sys

    run = write_finished_run(home, "doomed")
    events = run / "events.jsonl"
    events.write_text("".join(line + "\n" for line in events.read_text().splitlines() if '"done"' not in line))
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for the trainer
    try:
        app = SmallGPTApp(corpus=corpus)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            app.query_one(RunFollower).attach(run, trainer.pid)
            # The follower has read the whole history (20 loss points): that alone is no news.
            await wait_for(pilot, lambda: _attached(app) is not None and len(_attached(app).history.train_loss) == 20,
                           what="the history")
            assert not notes(app)
            message = "The loss became non-finite (nan) at step 210: resume from the last checkpoint with a lower lr."
            with events.open("a") as f:
                f.write(json.dumps({"event": "error", "step": 210, "time": 11.0, "message": message}) + "\n")
            await wait_for(pilot, lambda: any(message in n.message for n in notes(app)),
                           what="the failure notification")
            await wait_for(pilot, lambda: "non-finite" in str(app.query_one("#run-status").render()),
                           what="the failure in the run's status")
    finally:
        trainer.kill()
        trainer.wait()


async def test_val_share_is_validated_inline(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.query_one("#val-ratio", Input).value = "0.7"
        await pilot.pause()
        assert app.query_one("#val-ratio-error").display
        assert app.query_one("#encode", Button).disabled
        app.query_one("#val-ratio", Input).value = "0.05"
        await pilot.pause()
        assert not app.query_one("#encode", Button).disabled and app.val_ratio == 0.05


async def test_selecting_runs_overlays_their_curves(corpus, home):
    write_finished_run(home, "alpha")
    write_finished_run(home, "beta", steps=100)
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        table = app.query_one("#runs-table")
        await wait_for(pilot, lambda: table.row_count == 2, what="the runs table")
        table.focus()
        await pilot.press("enter")  # follow the run under the cursor
        await pilot.press("down", "ctrl+o")  # overlay the other
        # The status and chart are redrawn from the polled events at their own pace (REDRAW_S, CHART_S).
        await wait_for(pilot, lambda: "finished" in str(app.query_one("#run-status").render()), what="the status")
        labels = [s.label for s in app.query_one(LossChart).series]
        assert len(labels) == 3 and {"train", "val"} <= {lbl.split()[-1] for lbl in labels}


def test_run_history_folds_events_into_curves_eta_and_end():
    h = RunHistory("r")
    h.feed([{"event": "start", "step": 0, "time": 0, "config": {"train": {"max_steps": 100}}, "params": {"total": 5}},
            {"event": "step", "step": 10, "time": 1.0, "loss": 3.0, "lr": 1e-3, "tokens_per_s": 100.0},
            {"event": "step", "step": 20, "time": 2.0, "loss": 2.5, "lr": 1e-3, "tokens_per_s": 100.0},
            {"event": "eval", "step": 20, "time": 2.0, "val_loss": 2.7},
            {"event": "future-kind", "step": 21}])
    assert (h.train_steps, h.train_loss, h.val_loss, h.params) == ([10, 20], [3.0, 2.5], [2.7], 5)
    assert h.eta_seconds() == pytest.approx(8.0)  # 80 steps left at 10 steps/s
    h.feed([{"event": "error", "step": 20, "time": 2.1, "message": "loss is NaN"}])
    assert h.ended == "error" and h.error == "loss is NaN" and h.eta_seconds() is None


def test_config_errors_point_at_the_field_they_name():
    assert field_for_error("n_embd (32) must be divisible by n_head (3): pick ...").name == "n_embd"
    assert field_for_error("model.dropout must be in [0, 1) (got 1.5).").name == "dropout"
    assert field_for_error("train.min_lr (0.1) must not exceed train.lr (0.01).").name == "lr"
    assert field_for_error("data.val_ratio must be between 0 and 0.5") is None


def test_downsample_keeps_the_ends_and_the_budget():
    x = list(range(10_000))
    dx, dy = downsample(x, x, 200)
    assert len(dx) <= 200 and dx[0] == 0 and dx[-1] == 9_999 and dx == dy
    assert downsample([1, 2], [3, 4], 200) == ([1, 2], [3, 4])


async def test_the_runs_table_updates_cells_in_place_and_rebuilds_when_runs_change():
    from types import SimpleNamespace

    from textual.app import App

    from tui.widgets.runs_table import RunsTable

    def info(name: str, step: int, status: str = "running", serving: str = "") -> SimpleNamespace:
        return SimpleNamespace(path=Path("/runs") / name, name=name, step=step, max_steps=100, status=status,
                               best_val_loss=None, params=1000, serving=serving)

    class Host(App):
        def compose(self):
            yield RunsTable()

    async with Host().run_test() as pilot:
        table = pilot.app.query_one(RunsTable)
        table.update_runs([info("a", 5), info("b", 0, "new")], set(), "/runs/a")
        table.move_cursor(row=1)
        rebuilds = []
        table.clear = lambda *a, _clear=table.clear, **k: (rebuilds.append(1), _clear(*a, **k))[1]
        table.update_runs([info("a", 95), info("b", 0, "new")], set(), "/runs/a")  # the same runs: cells only
        assert rebuilds == [] and table.cursor_row == 1
        assert [str(c) for c in table.get_row_at(0)] == ["▶", "running", "95/100", "-", "1.0k", "a"]
        table.update_runs([info("a", 100, "finished"), info("b", 0, "new"), info("c", 0, "new")], set(), "")
        assert rebuilds == [1] and table.row_count == 3 and table.cursor_row == 1  # a new run: rebuilt
        assert [str(c) for c in table.get_row_at(0)][:3] == ["", "finished", "100/100"]
        table.update_runs([info("a", 100, "finished", "http://127.0.0.1:8000/v1"), info("b", 0, "new"),
                           info("c", 0, "new")], set(), "")  # served by `smallgpt serve`: where
        assert str(table.get_row_at(0)[1]) == "finished ⇄ 127.0.0.1:8000"
