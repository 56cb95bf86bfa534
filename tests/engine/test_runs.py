"""Run directories: names that cannot escape checkpoints/, the lock that defines "running", statuses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import process, runs
from engine.config import RunConfig
from engine.errors import RunError


def _run(home: Path, name: str, events: list[dict] | None = None) -> Path:
    path = home / "checkpoints" / name
    path.mkdir(parents=True)
    RunConfig().save(path / "config.toml")
    if events is not None:
        with (path / "events.jsonl").open("w") as f:
            for i, e in enumerate(events):
                f.write(json.dumps({"step": 0, "time": float(i), "wall": 1000.0 + i, **e}) + "\n")
    return path


@pytest.mark.parametrize("bad", ["..", ".", "../x", "a/../../b", "/etc", ".hidden", "a\\b", "", "x" * 200, "a b"])
def test_bare_names_cannot_escape_checkpoints(home, bad):
    with pytest.raises(RunError, match="is not allowed"):
        runs.run_path(bad)


def test_resolve_by_name_and_by_path(home):
    path = _run(home, "r1")
    assert runs.resolve_run("r1") == path
    assert runs.resolve_run(str(path)) == path
    with pytest.raises(RunError, match="No run 'nope'.*runs list"):
        runs.resolve_run("nope")
    with pytest.raises(RunError, match="No run"):
        runs.resolve_run(str(home))  # a directory that is not a run


def test_lock_defines_running_and_refuses_a_second_trainer(home):
    path = _run(home, "r1")
    assert not runs.is_running(path)
    with runs.hold_lock(path):
        assert runs.is_running(path)
        assert runs.read_pid(path) is not None
        with pytest.raises(RunError, match="already being trained by another process"):
            with runs.hold_lock(path):
                pass
    assert not runs.is_running(path)
    assert not (path / "pid").exists()


def test_lock_held_by_another_process(home):
    path = _run(home, "r1")
    code = ("import sys, time; from engine.runs import hold_lock\n"
            f"with hold_lock({str(path)!r}):\n    print('locked', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert runs.is_running(path)
        assert runs.run_info(path).status == "running"
    finally:
        proc.kill()
        proc.wait()
    # kill -9: the pid file stays behind, but the kernel dropped the lock.
    assert (path / "pid").exists()
    assert not runs.is_running(path)


def test_stale_pid_file_is_not_running(home):
    path = _run(home, "r1", [{"event": "start"}, {"event": "step", "step": 5}])
    (path / "pid").write_text("999999\n")
    info = runs.run_info(path)
    assert info.status == "stopped" and info.step == 5
    with pytest.raises(RunError, match="not running"):
        runs.stop_run(path)


def test_statuses_from_events(home):
    new = _run(home, "new")
    finished = _run(home, "finished", [
        {"event": "start", "params": {"total": 1234}},
        {"event": "eval", "step": 10, "val_loss": 2.5}, {"event": "eval", "step": 20, "val_loss": 2.1},
        {"event": "done", "step": 20, "reason": "max_steps"}])
    stopped = _run(home, "stopped", [{"event": "start"}, {"event": "done", "step": 3, "reason": "stopped"}])
    failed = _run(home, "failed", [{"event": "start"}, {"event": "error", "step": 4, "message": "loss became nan"}])
    # Refused while setting up, before its start event (e.g. task data that does not fit the block).
    _run(home, "refused", [{"event": "error", "step": 0, "message": "prompts too long"}])
    # A failed attempt followed by a successful resume counts by its last start.
    resumed = _run(home, "resumed", [{"event": "start"}, {"event": "error", "message": "x"},
                                     {"event": "start"}, {"event": "done", "step": 9, "reason": "max_steps"}])
    by_name = {i.name: i for i in runs.list_runs()}
    assert {n: i.status for n, i in by_name.items()} == {
        "new": "new", "finished": "finished", "stopped": "stopped", "failed": "failed", "resumed": "finished",
        "refused": "failed"}
    f = by_name["finished"]
    assert (f.step, f.max_steps, f.best_val_loss, f.params, f.model_kind) == (20, 2000, 2.1, 1234, "gpt")
    assert by_name["failed"].error == "loss became nan"
    assert new.exists() and finished.exists() and stopped.exists() and failed.exists() and resumed.exists()


def test_tail_reads_events_and_tolerates_a_partial_line(home):
    path = _run(home, "r1", [{"event": "start"}, {"event": "step", "step": 1, "loss": 3.0}])
    with (path / "events.jsonl").open("a") as f:
        f.write('{"event": "step", "st')  # the writer is mid-line
    assert [e["event"] for e in runs.tail(path)] == ["start", "step"]


def test_create_run_refuses_an_existing_run(home):
    path = _run(home, "r1")
    with pytest.raises(RunError, match="already holds a run.*--resume"):
        runs.create_run(RunConfig(), run_dir=path)


def test_launch_refuses_a_running_run(home):
    path = _run(home, "r1")
    with runs.hold_lock(path):
        with pytest.raises(RunError, match="already running"):
            runs.launch(path)


def test_launch_reports_a_trainer_that_dies_at_once(home):
    path = home / "checkpoints" / "bad"
    path.mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.n_embd = 30  # saved unvalidated, as a hand edit would be
    cfg.save(path / "config.toml")
    with pytest.raises(RunError, match=r"The training process of bad stopped at once: n_embd \(30\) must be"):
        runs.launch(path, wait=120)
    assert not runs.is_running(path)


def test_training_processes_spin_briefly_unless_the_user_chose_a_wait_policy():
    code = "import os; from engine.process import training_process_settings as s; s(); print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    spin = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert spin.stdout.strip() == "2000"
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                          capture_output=True, text=True, check=True)
    assert mine.stdout.strip() == "None"


def _free_cores(monkeypatch, cores: int, threads: int, samples: list[tuple[float, float, float]]):
    """A FreeCores on `cores` cores fed (wall s, machine CPU s, our CPU s) samples instead of /proc/stat."""
    feed = iter(samples)
    monkeypatch.setattr(process.FreeCores, "_sample", staticmethod(lambda: next(feed)))
    free = process.FreeCores(threads)
    free.cores = cores
    return free


def test_free_cores_leaves_other_processes_the_cores_they_use(monkeypatch):
    # Each look: 2 s of wall time; the machine's CPU seconds include ours.
    free = _free_cores(monkeypatch, cores=2, threads=2, samples=[
        (0.0, 0.0, 0.0),
        (2.0, 4.0, 2.0),   # we used one core, something else the other: one thread
        (4.0, 8.1, 6.0),   # we used two cores, the rest 0.05 of one: two threads
        (4.5, 9.1, 6.5),   # half a second later: too soon to tell
        (6.0, 11.3, 8.1),  # the rest used just over half a core: one thread
    ])
    assert free.threads() == 1 and free.others == pytest.approx(1.0)
    assert free.threads() == 2 and free.others == pytest.approx(0.05)
    assert free.threads() is None
    assert free.threads() == 1


def test_free_cores_never_exceeds_the_threads_it_started_with_nor_drops_below_one(monkeypatch):
    free = _free_cores(monkeypatch, cores=8, threads=4, samples=[(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (2.0, 11.0, 2.0)])
    assert free.threads() == 4  # 7 cores free, but torch was given 4
    assert free.threads() == 1  # 9 cores' worth of others on 8


def test_free_cores_without_proc_stat_changes_nothing(monkeypatch):
    free = _free_cores(monkeypatch, cores=2, threads=2, samples=[None, None])
    assert free.threads() is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc/stat")
def test_free_cores_sees_a_busy_process_on_this_machine():
    free = process.FreeCores(threads=max(2, len(os.sched_getaffinity(0))))
    # The child burns 1.5 s of its own CPU time, however long a loaded machine makes that take: over the
    # window, the others used at least its 1.5 CPU s, and any stretch of the window was others' CPU too.
    busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 1.5: pass"])
    busy.wait()
    threads = free.threads()
    assert free.others >= 0.6  # the child's core (and whatever else the machine ran)
    assert threads is not None and threads <= max(1, free.cores - 1)


def test_a_default_run_name_carries_one_stamp_and_a_readable_length():
    """A fine-tune of a fine-tune of a TUI run: the bases' stamps go, the new one comes last."""
    name = runs.stamped("gpt-python-docs-20261203-213850-classify-20261203-214532", "instruct-lora")
    assert re.fullmatch(r"gpt-python-docs-classify-instruct-lora-\d{8}-\d{6}", name)
    assert re.fullmatch(r"x{40}-classify-\d{8}-\d{6}", runs.stamped("x" * 100, "classify"))
    cfg = RunConfig()
    cfg.data.corpus = "my novel.txt"
    assert re.fullmatch(r"gpt-my-novel-\d{8}-\d{6}", runs.default_run_name(cfg))
