"""The Train form driven through Pilot: Tab goes field to field (never stopping on a section title, which a
click still folds); "from" offers only the checkpoints a run has; the task fields generated from the knob
declarations (balance, test ratio, eval samples, LoRA dropout and targets) show for their task and reach
the run's config."""

from __future__ import annotations

import shutil

from textual.widgets import Collapsible, Input, Select

from benchmarks.finetune_runs import write_classify_data
from benchmarks.tiny_run import make_tiny_run
from engine.rundir import RunDir
from tests.tui.pilot_helpers import settle, wait_for, write_corpus
from tui.app import SmallGPTApp
from tui.widgets.train_form import FIELDS, KNOB, TrainForm, field_id


async def _open_form(pilot) -> TrainForm:
    await settle(pilot)
    await pilot.press("3")
    return pilot.app.query_one(TrainForm)


def _field(form: TrainForm, path: str):
    return form.query_one(f"#{field_id(KNOB[path])}")


async def _set(pilot, form: TrainForm, values: dict[str, str]) -> None:
    for path, value in values.items():
        _field(form, path).value = value
        await pilot.pause()


async def _options(pilot, form: TrainForm, base) -> list[str]:
    select = _field(form, "task.init_from")
    await wait_for(pilot, lambda: any(str(base) in v for _, v in select._options), what="the base runs")
    return [v for _, v in select._options]


async def test_tab_goes_from_field_to_field_and_a_click_still_folds_a_section(home):
    app = SmallGPTApp(corpus=write_corpus(home))
    async with app.run_test(size=(120, 60)) as pilot:
        form = await _open_form(pilot)
        first = _field(form, "task.kind")
        first.focus()
        await pilot.pause()
        # What Tab should visit: every shown field's control in the form's order (the preset, the run name).
        shown = [w.id for w in form.query("#train-form Input, #train-form Select")
                 if all(node.display for node in [w, *w.ancestors_with_self] if node is not app)]
        expected = shown[shown.index(first.id) + 1:]
        assert len(expected) > 10 and expected[-1] == "run-name"
        visited = []
        for _ in range(len(expected)):
            await pilot.press("tab")
            visited.append(app.focused.id if app.focused is not None else None)
        assert visited == expected
        # The section titles are out of the Tab order but a click still folds and unfolds their section.
        section = form.query_one("#sec-model", Collapsible)
        await pilot.click("#sec-model CollapsibleTitle")
        assert section.collapsed
        await pilot.click("#sec-model CollapsibleTitle")
        assert not section.collapsed


async def test_from_lists_only_the_checkpoints_a_run_has(home):
    both = make_tiny_run(home, name="both")
    latest_only = make_tiny_run(home, name="latest-only")
    shutil.rmtree(RunDir(latest_only).checkpoint("best"))  # stopped before its first eval wrote a best
    none = make_tiny_run(home, name="none")
    shutil.rmtree(RunDir(none).checkpoints)  # created, never trained
    app = SmallGPTApp(corpus=write_corpus(home))
    async with app.run_test(size=(120, 40)) as pilot:
        form = await _open_form(pilot)
        await _set(pilot, form, {"task.kind": "classify"})
        options = await _options(pilot, form, both)
    assert set(options) == {"", f"{both}:best", f"{both}:latest", f"{latest_only}:latest"}


async def test_the_generated_task_fields_show_for_their_task_and_reach_the_config(home):
    base = make_tiny_run(home)
    data = write_classify_data(home)
    app = SmallGPTApp(corpus=write_corpus(home))
    async with app.run_test(size=(120, 40)) as pilot:
        form = await _open_form(pilot)

        def shown(path: str) -> bool:
            return form.query_one(f"#{field_id(KNOB[path])}-row").display

        new = ["task.balance", "task.test_ratio", "task.eval_samples", "lora.dropout", "lora.targets"]
        assert not any(shown(p) for p in new)  # a language model from scratch has none of them
        await _set(pilot, form, {"task.kind": "classify"})
        # No base picked yet: the message is under "from", in the form's words (no knob path).
        error = form.query_one(f"#{field_id(KNOB['task.init_from'])}-error")
        assert str(error.render()) == "a fine-tune starts from a base run: pick one." and error.display
        assert form.query_one("#start").disabled
        await _options(pilot, form, base)
        await _set(pilot, form, {"task.init_from": f"{base}:best", "data.corpus": str(data), "task.train": "lora"})
        assert [shown(p) for p in new] == [True, True, False, True, True]
        assert isinstance(_field(form, "task.balance"), Select) and isinstance(_field(form, "lora.targets"), Input)
        await _set(pilot, form, {"task.balance": "True", "task.test_ratio": "0.2", "lora.dropout": "0.25",
                                 "lora.targets": "c_attn"})
        cfg, errors = form.config()
        assert errors == {}
        assert (cfg.task.balance, cfg.task.test_ratio, cfg.lora.dropout, cfg.lora.targets) == (True, 0.2, 0.25,
                                                                                               "c_attn")
        # Validated like the other fields: the knob's bounds, a message under the field, Start disabled.
        await _set(pilot, form, {"task.test_ratio": "0.6"})
        error = form.query_one(f"#{field_id(KNOB['task.test_ratio'])}-error")
        assert "task.test_ratio must be in [0, 0.5)" in str(error.render()) and error.display
        assert form.query_one("#start").disabled
        await _set(pilot, form, {"task.test_ratio": "0.1", "lora.targets": " , "})
        assert "lora.targets names no layer" in str(form.query_one(f"#{field_id(KNOB['lora.targets'])}-error")
                                                     .render())
        # Instruct: eval samples instead of balance.
        await _set(pilot, form, {"task.kind": "instruct", "data.corpus": "python-instruct", "lora.targets": "c_fc",
                                 "task.eval_samples": "3"})
        assert [shown(p) for p in new] == [False, True, True, True, True]
        cfg, errors = form.config()
        assert errors == {} and cfg.task.eval_samples == 3 and cfg.task.balance is False


async def test_a_preset_started_from_the_form_is_the_preset_with_the_apps_data(home):
    """What the form does not show (rotary, QK-norm, Muon and its lr, WSD, eval batches, a BPE tokenizer) is
    the chosen preset's, so the TUI trains the recipe the CLI's --preset does."""
    from dataclasses import replace

    from engine.config import PRESETS, preset

    app = SmallGPTApp(corpus=write_corpus(home))
    async with app.run_test(size=(120, 60)) as pilot:
        form = await _open_form(pilot)
        for name in PRESETS:
            form.query_one("#preset", Select).value = name
            await pilot.pause()
            cfg, errors = form.config()
            expected = preset(name)
            expected = replace(expected, data=replace(expected.data, corpus=app.corpus, tokenizer=app.tokenizer_path,
                                                      val_ratio=app.val_ratio),
                               train=replace(expected.train, min_lr=expected.train.lr / 10))  # the form's rule
            assert errors == {} and cfg == expected, name
            tokenizer = form.query_one("#train-data").render()
            vocab = f" {expected.data.vocab_size}" if expected.data.vocab_size else ""
            assert f"{expected.data.tokenizer_kind}{vocab} (trained with the run)" in str(tokenizer), name
            # The hint under the preset names what it sets beyond the fields, each as the config will hold it.
            hint = form.query_one("#preset-recipe")
            pairs = dict(item.split("=") for item in str(hint.render()).removeprefix("also: ").split()) \
                if hint.display else {}
            held = {(k, str(v).lower() if isinstance(v, bool) else str(v))
                    for table in (cfg.model, cfg.train) for k, v in vars(table).items()}
            assert set(pairs.items()) <= held, name
            assert ("optimizer" in pairs) == (cfg.train.optimizer == "muon"), name


def test_every_form_field_has_a_label_of_at_most_13_characters():
    """The form's label column is 14 wide with one cell of padding."""
    assert all(0 < len(k.label) <= 13 for k in FIELDS)
