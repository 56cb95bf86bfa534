"""How the Inspect tab's compare mode looks at 120x40 and 80x24 (pytest-textual-snapshot).

Deterministic content: the seed-initialised tiny run of benchmarks/tiny_run.py as A, and as B a copy whose
layer 1 head 0 had its query and key weights redrawn from a fixed seed (a "fine-tune" that touched one
head), so the ranking is that head, then the others at 0. Update the pictures with
`pytest tests/tui/test_snapshots_compare.py --snapshot-update` after an intended change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tui.pilot_helpers import settle, wait_for
from tests.tui.test_inspect_compare import pick
from benchmarks.tiny_run import make_tiny_run
from tui.app import SmallGPTApp
from tui.tabs.inspect import InspectTab
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicker

SIZES = [(120, 40), (80, 24)]
pytestmark = pytest.mark.slow  # each picture loads torch and two models in the app's workers


def one_head_changed(run: Path, name: str, layer: int = 1, head: int = 0) -> Path:
    """A copy of the run whose `best` checkpoint has one head's query and key weights redrawn."""
    import torch

    from engine import checkpoint

    copy = run.parent / name
    shutil.copytree(run, copy)
    model, cfg, _ = checkpoint.load_model(copy, "best")
    c, hd = cfg.model.n_embd, cfg.model.n_embd // cfg.model.n_head
    with torch.no_grad():
        w = model.transformer.h[layer].attn.c_attn.weight  # rows: q [0, C), k [C, 2C), v [2C, 3C)
        g = torch.Generator().manual_seed(1)
        for part in (0, 1):
            rows = slice(part * c + head * hd, part * c + (head + 1) * hd)
            w[rows] = torch.randn(w[rows].shape, generator=g) * 10 * w[rows].std()
    checkpoint.save_checkpoint(copy, "best", model, None, checkpoint.read_state(checkpoint.checkpoint_dir(copy, "best")))
    return copy


@pytest.fixture
def runs(home) -> tuple[Path, Path]:
    run = make_tiny_run(home)
    return run, one_head_changed(run, "tiny-tuned")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("zoomed", [False, True], ids=["grid", "zoomed"])
def test_inspect_compare(snap_compare, runs, size, zoomed):
    base, tuned = runs

    async def compared(pilot):
        await settle(pilot)
        await pilot.press("5")
        tab = pilot.app.query_one(InspectTab)
        await wait_for(pilot, lambda: all(p.run_dir is not None for p in tab.query(RunPicker)), what="the runs")
        tab.focus()
        await pilot.press("b")
        pick(tab, "insp-run", tuned, "best")
        pick(tab, "insp-run-b", base, "best")
        tab.query_one(PromptInput).value = "the dog sat on the log. the cat"
        tab.query_one(PromptInput).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: tab.result is not None and tab.result.comparison is not None,
                       what="the comparison")
        await pilot.press("down")  # L1 H0: the head that changed
        if zoomed:
            await pilot.press("enter", "up", "up")
        await pilot.pause(0.3)  # the redraw throttle

    assert snap_compare(SmallGPTApp(), terminal_size=size, run_before=compared)
