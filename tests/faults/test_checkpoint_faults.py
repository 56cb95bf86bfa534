"""Checkpoints under faults: kill -9 at every step of a save and at random moments, a full disk.

The claim under test (engine/checkpoint.py): a reader always finds the complete new checkpoint or the
complete previous one, never a torn one, and a failed save leaves the previous one untouched.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from engine import checkpoint as ckpt
from engine.errors import CheckpointError
from engine.rundir import RunDir
from tests.faults.save_child import fill, make_model_and_optimizer, save_step, state_of

ROOT = Path(__file__).resolve().parents[2]
RANDOM_KILLS = 20


class SaveServer:
    """The fork server of save_child.py and a reader of its output lines."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "faults" / "save_child.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []  # the lines read since the last start()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float = 120.0) -> list[str]:
        """The words of the next line starting with prefix (every line read is also kept in self.seen)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(line)
            if line.startswith(prefix):
                return line.split()

    def sync(self) -> None:
        """Read up to the server's answer to a ping: what a child wrote before it was killed comes first."""
        self.send("ping")
        self.expect("pong")

    def start(self, run_dir: Path, first_step: int, pause_at: int) -> int:
        self.seen = []
        self.send(json.dumps({"run_dir": str(run_dir), "first_step": first_step, "pause_at": pause_at}))
        return int(self.expect("pid")[1])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[SaveServer]:
    s = SaveServer()
    try:
        yield s
    finally:
        s.close()


def kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        return
    deadline = time.monotonic() + 30
    while True:  # the server ignores SIGCHLD, so the kernel reaps the child and the pid disappears
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process {pid} survived SIGKILL"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def mo() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """One model and optimizer to load checkpoints into (filled with -1 before each load)."""
    return make_model_and_optimizer()


def intact_steps(run_dir: Path, mo: tuple[torch.nn.Module, torch.optim.Optimizer]) -> dict[str, int]:
    """{which: step} of the checkpoints a reader finds; fails on any torn or unreadable one.

    Intact means: state.json readable, the weights and optimizer moments load through the resume path
    (load_training_state for latest) and every value equals the step state.json names.
    """
    found = {}
    for which in ("latest", "best"):
        d = ckpt.checkpoint_dir(run_dir, which)
        if d is None:
            continue
        step = ckpt.read_state(d)["step"]
        model, optimizer = mo
        fill(model, optimizer, -1)
        if which == "latest":
            assert ckpt.load_training_state(run_dir, model, optimizer)["step"] == step
        else:
            ckpt.load_weights(model, d / ckpt.MODEL_FILE)
            ckpt.load_optimizer(optimizer, d / ckpt.OPTIM_FILE)
        for p in model.parameters():
            assert torch.all(p == step), f"{which}: weights of another step than its state.json ({step})"
            assert all(torch.all(v == step) for v in optimizer.state[p].values() if v.dim()), \
                f"{which}: optimizer state of another step than its state.json ({step})"
        found[which] = step
    return found


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in RunDir(run_dir).checkpoints.iterdir() if p.name.startswith("."))


def test_kill9_at_every_step_of_a_save_leaves_the_new_or_the_previous_checkpoint(server, tmp_path, mo):
    server.start(tmp_path / "count", first_step=1, pause_at=10**9)
    _, n, names = server.expect("points")
    points = names.split(",")
    assert int(n) == len(points) > 20 and "before-replace" in points  # the hooks really see the save's steps
    # Between an "after-X" and the next "before-Y" only Python runs: the disk is the same at both, so a
    # pause at every "before" (and after the very last step) reaches every state the disk passes through.
    chosen = [(i, name) for i, name in enumerate(points) if name.startswith("before-")] + [(len(points) - 1, points[-1])]
    outcomes: dict[str, int] = {}
    for i, name in chosen:
        run_dir = tmp_path / f"p{i:02d}"
        pid = server.start(run_dir, first_step=1, pause_at=i)
        try:
            assert server.expect("paused")[1:] == ["2", name]
        finally:
            kill9(pid)
        found = intact_steps(run_dir, mo)
        # Step 1 was complete before the kill: neither checkpoint may be lost, and best never runs ahead.
        assert set(found) == {"latest", "best"}, f"killed at {i} ({name}): a checkpoint is missing"
        assert found["latest"] in (1, 2) and found["best"] in (1, 2) and found["best"] <= found["latest"]
        outcomes[f"latest={found['latest']},best={found['best']}"] = outcomes.get(
            f"latest={found['latest']},best={found['best']}", 0) + 1
        # The next save (the resumed run's) cleans what the crash left and leaves no stray directory.
        save_step(str(run_dir), *mo, 3)
        assert intact_steps(run_dir, mo) == {"latest": 3, "best": 3}
        assert leftovers(run_dir) == [], f"killed at {i} ({name}): {leftovers(run_dir)} left behind"
    # The kills landed before, inside and after the point where each checkpoint switches to step 2.
    assert set(outcomes) == {"latest=1,best=1", "latest=2,best=1", "latest=2,best=2"}, outcomes


@pytest.mark.slow
def test_kill9_at_random_moments_never_loses_a_completed_save(server, tmp_path, mo):
    rng = random.Random(8)
    run_dir = tmp_path / "run"
    saved = 0  # the last step the child said was complete: it must survive every kill
    for _ in range(RANDOM_KILLS):
        pid = server.start(run_dir, first_step=saved + 1, pause_at=-1)
        try:
            server.expect("saved")  # let it finish one, then kill it somewhere in the following saves
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            kill9(pid)
        server.sync()  # every line the dead child wrote is read now
        done = [int(line.split()[1]) for line in server.seen if line.startswith("saved")]
        found = intact_steps(run_dir, mo)
        assert max(done) <= found["latest"] <= max(done) + 1, (done, found)
        assert max(done) <= found["best"] <= found["latest"]
        saved = found["latest"]
    assert saved > RANDOM_KILLS  # every child completed at least one save: the run always moved on


# --- disk full --------------------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A directory on a real tmpfs with room for two checkpoints but not a third; skips where this machine
    does not let us mount one (not root, or no mount permission in a container)."""
    mount = tmp_path / "small"
    mount.mkdir()
    model, optimizer = make_model_and_optimizer()
    probe = tmp_path / "probe"
    ckpt.save_checkpoint(probe, "latest", model, optimizer, state_of(1))
    page = 4096  # tmpfs gives each file whole pages
    one = sum(-(-f.stat().st_size // page) * page for f in (probe / "ckpt" / "latest").iterdir())
    size = -(-int(one * 2.5) // page) * page  # two checkpoints fit, a third (a replacing save) does not
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: the real full disk is not tested here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): the real full disk is not tested")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # loaded tensors may still map a file


def assert_a_full_disk_keeps_the_previous_checkpoint(run_dir: Path, mo, free_space) -> None:
    """Steps 1 (latest and best) are saved; the next save of latest fails for want of space: one sentence, both
    checkpoints intact, no leftovers; once free_space() has run, the same save succeeds."""
    model, optimizer = mo
    fill(model, optimizer, 2)
    with pytest.raises(CheckpointError) as e:
        ckpt.save_checkpoint(run_dir, "latest", model, optimizer, state_of(2))
    message = str(e.value)
    assert "Could not write the latest checkpoint" in message and "free some disk space" in message
    assert "No space left on device" in message and "\n" not in message
    assert intact_steps(run_dir, mo) == {"latest": 1, "best": 1}
    assert leftovers(run_dir) == []  # the half-written temp dir is gone: it would only take more space
    free_space()
    shutil.rmtree(run_dir / "ckpt" / "best")
    fill(model, optimizer, 2)
    ckpt.save_checkpoint(run_dir, "latest", model, optimizer, state_of(2))
    assert intact_steps(run_dir, mo) == {"latest": 2}


def test_a_real_full_disk_during_a_save_is_a_clear_error_and_keeps_the_previous_checkpoint(small_fs, mo):
    save_step(str(small_fs), *mo, 1)  # latest and best: the disk is now nearly full
    assert_a_full_disk_keeps_the_previous_checkpoint(small_fs, mo, free_space=lambda: None)  # deleting best does


def test_enospc_from_the_writer_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, mo):
    """The same, on any machine: the weights writer fails the way a full disk makes it fail."""
    import safetensors.torch

    save_step(str(tmp_path), *mo, 1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    assert_a_full_disk_keeps_the_previous_checkpoint(tmp_path, mo, free_space=monkeypatch.undo)
