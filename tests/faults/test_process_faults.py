"""The training process under faults: kill -9, SIGTERM, a killed TUI, two TUIs on one run, a stale pid.

Real processes throughout: the trainer is `python -m engine train` started by engine.runs.launch (as the
TUI and `smallgpt train --detach` start it), and the killed TUI is the real app in another process.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from engine import checkpoint as ckpt
from engine.config import RunConfig, apply_overrides
from engine.errors import RunError
from engine.events import read_events
from engine.rundir import RunDir
from engine.runs import create_run, is_running, launch, read_pid, run_info, stop_run, wait_stopped
from tests.tui.pilot_helpers import write_corpus

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 25
# A checkpoint at every step (eval_interval 1) so that a kill at a random moment often lands in a save.
TINY = {"model": {"n_layer": 1, "n_head": 1, "n_embd": 16, "block_size": 16},
        "train": {"batch_size": 4, "eval_interval": 1, "eval_batches": 1, "sample_tokens": 0, "log_interval": 1,
                  "warmup_steps": 2, "max_steps": MAX_STEPS, "device": "cpu", "dtype": "fp32"}}


@pytest.fixture
def corpus(home, monkeypatch) -> str:
    monkeypatch.chdir(home)
    return write_corpus(home)


def tiny_run(corpus: str, name: str, **train: Any) -> Path:
    tables = {"model": TINY["model"], "data": {"corpus": corpus, "tokenizer_kind": "char"},
              "train": {**TINY["train"], **train}}
    return create_run(apply_overrides(RunConfig(), tables), name=name)


def wait_until(condition: Callable[[], Any], timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(run) if e["event"] == kind]


def exit_status(pid: int) -> int:
    """Wait for a process launch() started (our child) and return its exit code (-N: killed by N)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def latest_step(run: Path) -> int:
    d = ckpt.checkpoint_dir(run, "latest")
    assert d is not None, "no latest checkpoint"
    ckpt.load_model(run, "latest")  # loads: weights match the config, nothing torn
    return int(ckpt.read_state(d)["step"])


def assert_steps_continue_from_each_resume(run: Path) -> None:
    """Each (re)start logs its first step right after the checkpoint it resumed from: no step is lost
    or trained twice from a wrong state."""
    evs = read_events(run)
    for i, e in enumerate(evs):
        if e["event"] == "start":
            first = next(x for x in evs[i + 1:] if x["event"] == "step")
            assert first["step"] == (e["resumed_from"] or 0) + 1, (e, first)


@pytest.mark.slow
def test_kill9_resume_sigterm_resume_finishes_with_nothing_lost(corpus):
    run = tiny_run(corpus, "faulty")
    pid = launch(run)
    # kill -9 at a random moment once a few checkpoints exist (most of each step is spent saving).
    wait_until(lambda: len(events(run, "checkpoint")) >= 6, what="checkpoints")
    time.sleep(random.Random(1).uniform(0.0, 0.3))
    os.kill(pid, signal.SIGKILL)
    assert exit_status(pid) == -signal.SIGKILL
    # A stale pid file, a free lock: stopped, not running; nothing to stop.
    assert read_pid(run) == pid and not is_running(run)
    assert run_info(run).status == "stopped"
    with pytest.raises(RunError, match="not running"):
        stop_run(run)
    saved = latest_step(run)
    assert saved >= 3

    pid = launch(run, resume=True)
    wait_until(lambda: events(run, "start")[-1].get("resumed_from") == saved and
               events(run, "step")[-1]["step"] >= saved + 3, what="the resumed run to train")
    assert run_info(run).status == "running"
    stop_run(run)  # SIGTERM: finish the step, checkpoint, exit 0
    assert exit_status(pid) == 0
    done = read_events(run)[-1]
    assert done["event"] == "done" and done["reason"] == "stopped"
    assert latest_step(run) == done["step"]  # the stop saved exactly where it stopped
    assert not (run / "pid").exists() and run_info(run).status == "stopped"

    pid = launch(run, resume=True)
    assert exit_status(pid) == 0
    info = run_info(run)
    assert info.status == "finished" and info.step == MAX_STEPS and latest_step(run) == MAX_STEPS
    assert_steps_continue_from_each_resume(run)
    assert [e["resumed_from"] for e in events(run, "start")] == [None, saved, done["step"]]


# --- the trainer in this process: a full disk, a torn events line ----------------------------------------

def test_disk_full_mid_run_fails_with_one_sentence_and_the_run_resumes_when_space_is_back(corpus):
    import errno

    import safetensors.torch

    from engine.errors import CheckpointError
    from engine.trainer import train

    run = tiny_run(corpus, "full", max_steps=8, eval_interval=2)
    real_save, saves = safetensors.torch.save_model, []

    def fills_up(*args: Any, **kwargs: Any) -> Any:  # the 4th checkpoint write finds the disk full
        saves.append(1)
        if len(saves) >= 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(CheckpointError) as e:
        mp.setattr(safetensors.torch, "save_model", fills_up)
        train(run)
    assert "No space left on device" in str(e.value) and "free some disk space" in str(e.value)
    info = run_info(run)
    assert info.status == "failed" and "No space left on device" in info.error
    # Writes 1-3 are latest and best at step 2 and latest at step 4; the 4th (best at 4, or latest at 6 when
    # step 4 did not improve) fails: latest is step 4's either way, best step 2's.
    assert latest_step(run) == 4
    assert int(ckpt.read_state(ckpt.checkpoint_dir(run, "best"))["step"]) == 2
    ckpt.load_model(run, "best")
    assert not [p for p in (run / "ckpt").iterdir() if p.name.startswith(".")]  # no half-written leftovers
    # Space is back (the failing writer is gone): resume.
    summary = train(run, resume=True)
    assert summary["steps"] == 8 and run_info(run).status == "finished"
    assert_steps_continue_from_each_resume(run)


def test_a_torn_last_event_line_does_not_swallow_the_resumed_runs_start(corpus):
    from engine.trainer import train

    run = tiny_run(corpus, "torn", max_steps=4, eval_interval=2)
    train(run)
    with RunDir(run).events.open("a") as f:  # what a crash or a full disk mid-write leaves
        f.write('{"event": "step", "step": 5, "lo')
    cfg = RunConfig.load(run / "config.toml")
    cfg.train.max_steps = 6
    cfg.save(run / "config.toml")
    train(run, resume=True)
    assert [e["resumed_from"] for e in events(run, "start")] == [None, 4]
    assert run_info(run).status == "finished" and run_info(run).step == 6
    assert_steps_continue_from_each_resume(run)


# --- the TUI killed while its run trains; two TUIs on one run -------------------------------------------

TUI_SCRIPT = """
import asyncio, sys
from tests.tui.pilot_helpers import TINY_FORM, fill_train_form, wait_for
from tui.app import SmallGPTApp
from tui.tabs.train import TrainTab

async def main():
    app = SmallGPTApp(corpus=sys.argv[1])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await fill_train_form(pilot, {**TINY_FORM, "max_steps": "100000"})
        await pilot.press("ctrl+s")
        follower = app.query_one(TrainTab).follower
        await wait_for(pilot, lambda: follower.followed is not None and follower.followed.running,
                       timeout=300, what="the run")
        print("attached", follower.attached, flush=True)
        await asyncio.sleep(3600)  # until killed

asyncio.run(main())
"""


def _watch(app: Any) -> Any:
    from tui.tabs.train import TrainTab

    return app.query_one(TrainTab).follower.followed


@pytest.mark.slow
async def test_killed_tui_leaves_the_run_training_and_two_new_tuis_share_it(corpus, home):
    from tests.tui.pilot_helpers import screen_svg
    from tests.tui.pilot_helpers import wait_for as pilot_wait
    from tui.app import SmallGPTApp

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    tui = subprocess.Popen([sys.executable, "-c", TUI_SCRIPT, corpus], cwd=home, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run: Path | None = None
    try:
        assert tui.stdout is not None
        line = tui.stdout.readline()
        assert line.startswith("attached "), line + (tui.stderr.read() if tui.poll() is not None else "")
        run = Path(line.split(None, 1)[1].strip())
        tui.kill()  # kill -9 the TUI: the trainer is in its own session and does not notice
        tui.wait()
        before = events(run, "step")[-1]["step"] if events(run, "step") else 0
        wait_until(lambda: events(run, "step") and events(run, "step")[-1]["step"] >= before + 5,
                   what="the run to keep training without its TUI")
        assert is_running(run)

        # Two TUIs at once: each re-attaches on its own and shows the live run with its history.
        first, second = SmallGPTApp(), SmallGPTApp()
        async with first.run_test(size=(100, 30)) as p1, second.run_test(size=(80, 24)) as p2:
            for app, pilot in ((first, p1), (second, p2)):
                await pilot.press("3")
                await pilot_wait(pilot, lambda app=app: _watch(app) is not None and _watch(app).running
                                 and len(_watch(app).history.train_loss) >= 2, timeout=60, what="re-attach")
                assert _watch(app).path == run and run.name in screen_svg(app)
            # Neither can start a second trainer on it: the lock refuses, the app says so.
            with pytest.raises(RunError, match="already running"):
                launch(run, resume=True)
            assert second.query_one("#resume").disabled
            # The trainer dies (kill -9): both TUIs see it stop; its pid file is stale.
            pid = read_pid(run)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            for app, pilot in ((first, p1), (second, p2)):
                await pilot_wait(pilot, lambda app=app: not _watch(app).running
                                 and not app.query_one("#resume").disabled, timeout=30, what="the stop")
        assert (run / "pid").exists() and run_info(run).status == "stopped"
        # Two readers and a killed writer: every line of the events file is whole JSON, the checkpoint loads.
        lines = RunDir(run).events.read_text().splitlines()
        assert len(read_events(run)) == len(lines) or len(read_events(run)) == len(lines) - 1  # a torn last line
        assert latest_step(run) >= 1
    finally:
        if tui.poll() is None:
            tui.kill()
            tui.wait()
        if run is not None and is_running(run):
            stop_run(run)
            wait_stopped(run, timeout=60)
