"""The Train tab's "from" picker (task.init_from) with the lm task, continued pretraining: an imported GPT-2
(or any run with a checkpoint) is offered; a run started with it takes the source's shape and tokenizer and
starts from its weights (the start event)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from textual.widgets import Select  # noqa: E402

from engine.config import RunConfig  # noqa: E402
from engine.events import read_events  # noqa: E402
from engine.interop import import_model  # noqa: E402
from tests.hf_gpt2 import save_tiny_gpt2  # noqa: E402
from tests.tui.pilot_helpers import fill_train_form, wait_for, write_corpus  # noqa: E402
from tui.app import SmallGPTApp  # noqa: E402
from tui.widgets.train_form import KNOB, TrainForm, field_id  # noqa: E402


async def test_a_run_started_from_an_imported_model(home, monkeypatch):
    monkeypatch.chdir(home)
    import_model(str(save_tiny_gpt2(home / "tiny-gpt2")), "mini")
    source = home / "checkpoints" / "mini"
    app = SmallGPTApp(corpus=write_corpus(home))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        form = app.query_one(TrainForm)
        picker = form.query_one(f"#{field_id(KNOB['task.init_from'])}", Select)
        await wait_for(pilot, lambda: f"{source}:latest" in [v for _, v in picker._options], what="the imported run")
        picker.value = f"{source}:latest"
        await pilot.pause()
        assert "shape, tokenizer and weights of mini" in str(form.query_one("#train-data").render())
        await fill_train_form(pilot, {"max_steps": "2", "batch_size": "2", "eval_interval": "2", "warmup_steps": "0",
                                      "device": "cpu", "dtype": "fp32"})
        form.query_one("#run-name").value = "continued"
        await pilot.press("ctrl+s")
        run = home / "checkpoints" / "continued"
        await wait_for(pilot, lambda: any(e["event"] == "done" for e in read_events(run)) if run.is_dir() else False,
                       timeout=180, what="the run to finish")
    cfg, src = RunConfig.load(run / "config.toml"), RunConfig.load(source / "config.toml")
    assert cfg.model == src.model and cfg.task.init_from == f"{source}:latest"
    start = next(e for e in read_events(run) if e["event"] == "start")
    assert start["init_source"]["run"] == str(source) and start["init_source"]["import"]["architecture"] == "gpt2"
