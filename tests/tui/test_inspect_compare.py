"""The Inspect tab's compare mode driven through Pilot with the real engine: a tiny run trained by the
trainer, its first checkpoint kept (a copy of the run after 5 steps), then trained on to step 20; the tab
compares the last checkpoint with the first and ranks the heads by how much their attention changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import DataTable, Select

from tests.tui.pilot_helpers import notes, wait_for
from benchmarks.tiny_run import CORPUS, make_tiny_run
from tui.app import SmallGPTApp
from tui.tabs.inspect import InspectTab
from tui.widgets.attention_view import change_text
from tui.widgets.heatmap import Heatmap
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicker

PROMPT = "the cat sat on the mat. the dog"
pytestmark = pytest.mark.slow  # two short trainings and the app's model loads: ~30 s on a loaded 2-core machine


def trained_run_with_first_checkpoint(home: Path) -> tuple[Path, Path]:
    """(run at step 20, a copy of it at its first checkpoint, step 5): the run's last and first checkpoints."""
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.rundir import RunDir
    from engine.runs import create_run
    from engine.trainer import train

    corpus = home / "corpora" / "tiny.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text(CORPUS)
    cfg = RunConfig(model=ModelConfig(kind="gpt", n_layer=2, n_head=2, n_embd=32, block_size=32),
                    data=DataConfig(corpus=str(corpus), tokenizer_kind="char"),
                    train=TrainConfig(max_steps=5, batch_size=4, eval_interval=5, sample_tokens=0, lr=1e-2,
                                      device="cpu", dtype="fp32"))
    run = create_run(cfg, name="tiny")
    train(run)
    first = home / "checkpoints" / "tiny-step5"
    shutil.copytree(run, first)
    cfg = RunConfig.load(RunDir(run).config)
    cfg.train.max_steps = 20
    cfg.train.eval_interval = 15
    cfg.save(RunDir(run).config)
    train(run, resume=True)
    return run, first


def pick(tab: InspectTab, picker_id: str, run: Path, checkpoint: str) -> None:
    picker = tab.query_one(f"#{picker_id}", RunPicker)
    picker.query_one("#run", Select).value = str(run)
    picker.query_one("#checkpoint", Select).value = checkpoint


async def open_compare(app, pilot, a: tuple[Path, str], b: tuple[Path, str]) -> InspectTab:
    await pilot.press("5")
    tab = app.query_one(InspectTab)
    await wait_for(pilot, lambda: all(p.run_dir is not None for p in tab.query(RunPicker)), what="the run lists")
    tab.focus()
    await pilot.press("b")
    assert tab.compare and tab.query_one("#insp-top-b").display
    pick(tab, "insp-run", *a)
    pick(tab, "insp-run-b", *b)
    tab.query_one(PromptInput).value = PROMPT
    tab.query_one(PromptInput).focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: tab.result is not None and tab.result.comparison is not None,
                   what="the comparison")
    return tab


async def test_compare_the_last_checkpoint_with_the_first_and_see_the_ranked_heads(home):
    from engine.checkpoint import load_model
    from engine.compare import compare_prompt

    run, first = trained_run_with_first_checkpoint(home)
    app = SmallGPTApp()
    async with app.run_test(size=(80, 24)) as pilot:
        tab = await open_compare(app, pilot, (run, "latest"), (first, "latest"))
        cmp = tab.result.comparison
        # What the engine says, computed here from the two checkpoints on their own.
        model_a, _, tok = load_model(run, "latest")
        model_b, _, _ = load_model(first, "latest")
        expected = compare_prompt(model_a, tok, model_b, tok, PROMPT)
        np.testing.assert_allclose(cmp.distance, expected.distance, atol=1e-6)
        assert cmp.ranking == expected.ranking and cmp.distance.max() > 0  # 15 steps changed the heads
        assert (cmp.label_a, cmp.label_b) == ("tiny/latest", "tiny-step5/latest")
        # The Heads pane lists the heads most changed first, with their distance.
        table = tab.query_one("#metrics", DataTable)
        assert [tuple(map(int, k.value.split("-"))) for k in table.rows] == cmp.ranking
        top_l, top_h = cmp.ranking[0]
        assert table.get_row_at(0)[2].plain.strip() == change_text(cmp.distance[top_l, top_h])
        # Today's keys: select the most changed head, zoom: A | B | A - B of that head.
        while (tab.view.layer, tab.view.head) != (top_l, top_h):
            await pilot.press("full_stop" if tab.view.layer == top_l else "right_square_bracket")
        await pilot.press("enter")
        await pilot.pause(0.3)  # the redraw throttle
        a, b, diff = tab.query_one(Heatmap).panel_values
        np.testing.assert_allclose(a, tab.view.values(cmp.a.attn[top_l, top_h]))
        np.testing.assert_allclose(b, tab.view.values(cmp.b.attn[top_l, top_h]))
        np.testing.assert_allclose(diff, tab.view.signed_values(cmp.a.attn[top_l, top_h] - cmp.b.attn[top_l, top_h]))
        assert "#1/4" in str(tab.query_one("#insp-status").render())
        assert table.cursor_row == 0
        # Enter on a row of the ranking zooms into that head.
        table.focus()
        await pilot.press("down", "enter")
        assert (tab.view.layer, tab.view.head) == cmp.ranking[1] and tab.view.zoomed
        tab.focus()
        # Export keeps the comparison beside A's arrays.
        await pilot.press("s")
        await pilot.pause(0.1)
        (npz,) = (home / "exports").glob("inspect-tiny-latest-vs-tiny-step5-latest-*.npz")
        data = np.load(npz)
        np.testing.assert_allclose(data["js_distance"], cmp.distance)
        np.testing.assert_allclose(data["attn_b"], cmp.b.attn)
        assert data["attn"].shape == data["attn_diff"].shape
        # b again: back to the single view of A, nothing recomputed.
        inspection = tab.inspection
        await pilot.press("b")
        await pilot.pause(0.3)
        assert tab.result.comparison is None and tab.inspection is inspection
        assert not tab.query_one("#insp-top-b").display
        assert len(tab.query_one(Heatmap).panel_values) == 1
        assert [k.value for k in table.rows] == [f"{l}-{h}" for l in range(2) for h in range(2)]


async def test_a_checkpoint_of_another_shape_is_one_clear_notification(home):
    run = make_tiny_run(home)
    other = make_tiny_run(home, name="wide", model={"n_head": 4})
    app = SmallGPTApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        tab = app.query_one(InspectTab)
        await wait_for(pilot, lambda: all(p.run_dir is not None for p in tab.query(RunPicker)), what="the run lists")
        tab.focus()
        await pilot.press("b")
        pick(tab, "insp-run", run, "best")
        pick(tab, "insp-run-b", other, "best")
        tab.query_one(PromptInput).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: notes(app), what="the error")
        assert [n.message for n in notes(app)] == [
            "tiny/best and wide/best differ in shape (layers x heads, block size: 2x2, 32 vs 2x4, 32): compare "
            "checkpoints of one run, or a run with the one it was fine-tuned from."]
        assert tab.result is None
