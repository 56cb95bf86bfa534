"""How the Data, Tokenizer and Train tabs look at 120x40 and 80x24 (pytest-textual-snapshot).

Deterministic content: a fixed corpus written into the test's home, relative paths (the home's absolute
path differs per run), and for the Train tab a finished run made of fixed events. Update the pictures
with `pytest tests/tui/test_snapshots_shell.py --snapshot-update` after an intended change.
"""

from __future__ import annotations

import pytest

from tests.tui.pilot_helpers import settle, wait_for, write_corpus, write_finished_run
from tui.app import SmallGPTApp
from tui.tabs.train import TrainTab

SIZES = [(120, 40), (80, 24)]


@pytest.fixture
def corpus(home, monkeypatch) -> str:
    monkeypatch.chdir(home)
    return write_corpus(home)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_data_tab(snap_compare, corpus, size):
    async def loaded(pilot):
        await settle(pilot)

    assert snap_compare(SmallGPTApp(corpus=corpus), terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tokenizer_tab_trained_and_tried(snap_compare, corpus, size):
    async def trained(pilot):
        await settle(pilot)
        await pilot.press("2", "ctrl+s")
        await settle(pilot)
        await pilot.press("ctrl+t", *"the cat reads.")
        await pilot.press("escape")

    assert snap_compare(SmallGPTApp(corpus=corpus), terminal_size=size, run_before=trained)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_train_tab_following_a_finished_run(snap_compare, corpus, home, size):
    write_finished_run(home, "demo")

    async def following(pilot):
        await settle(pilot)
        await pilot.press("3")
        tab = pilot.app.query_one(TrainTab)
        table = pilot.app.query_one("#runs-table")
        await wait_for(pilot, lambda: table.row_count == 1, what="the runs table")
        table.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: tab.follower.followed and tab.follower.followed.history.ended,
                       what="the run's events")
        tab.redraw(force=True)  # what the redraw timer does next, now: the picture does not wait on its phase
        await pilot.pause()
        await pilot.press("escape")

    assert snap_compare(SmallGPTApp(corpus=corpus), terminal_size=size, run_before=following)


def test_help_screen(snap_compare, corpus):
    async def helped(pilot):
        await settle(pilot)
        await pilot.press("f1")

    assert snap_compare(SmallGPTApp(corpus=corpus), terminal_size=(80, 24), run_before=helped)
