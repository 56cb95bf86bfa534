"""Shared pieces of the TUI tests: a fixed corpus, a fixed finished run, the tiny training form, and waiting
for the app's workers (all but the endless run follower) or for a throttled redraw."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

from textual.pilot import Pilot
from textual.widgets import Input

from engine.config import RunConfig, apply_overrides
from engine.rundir import RunDir

CORPUS_NAME = "corpus.txt"
# The tiny GPT of the issue: 2 layers x 32 wide, block 16; small batches so a step takes milliseconds.
TINY_FORM = {"n_layer": "2", "n_head": "2", "n_embd": "32", "block_size": "16", "batch_size": "8",
             "max_steps": "50", "warmup_steps": "5", "eval_interval": "25", "device": "cpu", "dtype": "fp32"}


def write_corpus(home: Path) -> str:
    """~40 KB of fixed, varied English-like text (the same bytes every run: snapshots depend on it)."""
    subjects = ["the cat", "a dog", "the model", "our tokenizer", "the teacher", "a student", "the river"]
    verbs = ["reads", "writes", "learns", "predicts", "sees", "counts", "follows"]
    objects = ["the next token", "a long story", "every word", "the attention map", "small numbers", "the loss"]
    lines = []
    for i in range(900):
        s, v, o = subjects[i % 7], verbs[(i * 3) % 7], objects[(i * 5) % 6]
        lines.append(f"{s} {v} {o}" + (", and then it rests." if i % 4 == 0 else "."))
    (home / CORPUS_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CORPUS_NAME


def write_finished_run(home: Path, name: str = "demo", steps: int = 200) -> Path:
    """A finished run made of fixed events (no process): the Train tab shows it the same way every time."""
    run = home / "checkpoints" / name
    run.mkdir(parents=True)
    cfg = apply_overrides(RunConfig(), {"model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16,
                                                  "vocab_size": 40},
                                        "data": {"corpus": CORPUS_NAME}, "train": {"max_steps": steps}})
    cfg.save(RunDir(run).config)
    events: list[dict[str, Any]] = [{"event": "start", "step": 0, "time": 0.0, "wall": 1.7e9, "config": cfg.to_dict(),
                                     "params": {"total": 27712, "non_embedding": 25152}, "device": "cpu",
                                     "dtype": "fp32", "resumed_from": None}]
    for step in range(10, steps + 1, 10):
        loss = 3.7 * (0.985 ** step) + 0.9
        events.append({"event": "step", "step": step, "time": step * 0.05, "wall": 1.7e9 + step * 0.05,
                       "loss": round(loss, 4), "lr": 2e-3, "tokens_per_s": 2560.0, "tokens_seen": step * 128})
        if step % 50 == 0:
            events.append({"event": "eval", "step": step, "time": step * 0.05, "wall": 1.7e9 + step * 0.05,
                           "train_loss": round(loss, 4), "val_loss": round(loss + 0.08, 4),
                           "val_perplexity": 3.0})
    events.append({"event": "sample", "step": steps, "time": steps * 0.05, "wall": 1.7e9 + steps * 0.05,
                   "text": "the model learns the next token [not markup]"})
    events.append({"event": "done", "step": steps, "time": steps * 0.05, "wall": 1.7e9 + steps * 0.05,
                   "reason": "max_steps"})
    RunDir(run).events.write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def notes(app: Any) -> list[Any]:
    """The notifications the app has shown, in order (kept by tests/conftest.py's notes_kept)."""
    return app.__dict__.get("notes_seen", [])


async def settle(pilot: Pilot, timeout: float = 60.0) -> None:
    """Wait until every worker has finished but the endless ones (the Train tab's run follower and the
    DirectoryTree's loader), then for the screen."""
    deadline = time.monotonic() + timeout
    while any(w.is_running and w.group != "follow" and w.name != "_loader" for w in pilot.app.workers):
        if time.monotonic() > deadline:
            raise TimeoutError("workers still running: " + ", ".join(w.name for w in pilot.app.workers))
        await asyncio.sleep(0.05)
    await pilot.pause()


async def wait_for(pilot: Pilot, condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.1)


async def zoom_shows(pilot: Pilot, tab: Any, matrix: Any, **view: Any) -> None:
    """Wait for the Inspect tab's zoomed view to draw `matrix` (display_values options in `view`) with the
    tab's position marked: its redraws are throttled to 10 a second, on a timer."""
    import numpy as np

    from tui.widgets.heatmap import Heatmap, display_values

    expected = display_values(matrix, **view)
    zoom = tab.query_one(Heatmap)
    await wait_for(pilot, lambda: zoom.values is not None and zoom.values.shape == expected.shape
                   and np.allclose(zoom.values, expected) and zoom.selected_row == tab.view.position,
                   what="the redraw")


async def fill_train_form(pilot: Pilot, values: dict[str, str]) -> None:
    from textual.widgets import Select

    from tui.widgets.train_form import FIELDS, field_id

    by_name = {k.name: k for k in FIELDS}
    for key, value in values.items():
        widget = pilot.app.query_one(f"#{field_id(by_name[key])}")
        if isinstance(widget, Select):
            widget.value = value
        else:
            assert isinstance(widget, Input)
            widget.value = value
    await pilot.pause()


def screen_svg(app: Any) -> str:
    """What the terminal shows, as the SVG screenshot (its text is searchable)."""
    return app.export_screenshot()
