"""`smallgpt train | generate | eval | runs` as real commands in a subprocess, on a small corpus."""

from __future__ import annotations

import logging
import math
import subprocess
import time

import pytest

from conftest import one_json, smallgpt
from engine import runs
from engine.config import RunConfig
from engine.events import read_events

# Tiny shapes and a few steps: each command is seconds, mostly interpreter and torch start-up.
FAST = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "8",
        "--eval-interval", "5", "--eval-batches", "2", "--warmup-steps", "2"]


def error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.mark.slow
def test_train_generate_eval_and_list(home, small_corpus):
    s = one_json(smallgpt(home, "train", "--corpus", str(small_corpus), "--tokenizer-kind", "char",
                          "--run", "r1", "--max-steps", "10", *FAST, "--json"))
    for key in ("run_dir", "steps", "train_loss", "val_loss", "tokens_per_s", "params"):
        assert s[key] is not None, key
    run_dir = home / "checkpoints" / "r1"
    [last_eval] = [e for e in read_events(run_dir) if e["event"] == "eval" and e["step"] == 10]
    assert s["steps"] == 10 and (s["val_loss"], s["train_loss"]) == (last_eval["val_loss"], last_eval["train_loss"])
    start = next(e for e in read_events(run_dir) if e["event"] == "start")
    assert s["params"] == start["params"]["total"] > 0
    # Better than guessing uniformly over the char vocabulary after 10 steps.
    assert s["val_loss"] < math.log(start["config"]["model"]["vocab_size"])
    assert s["run_dir"] == str(run_dir)
    cfg_text = (run_dir / "config.toml").read_text()
    assert "n_embd = 32" in cfg_text and "max_steps = 10" in cfg_text  # flags won over the preset, and were saved

    g = one_json(smallgpt(home, "generate", "r1", "--max-new-tokens", "12", "--seed", "3", "--json"))
    # The engine, in this process, with the CLI's defaults: the same tokens (fewer than 12 only at an EOS).
    from engine.checkpoint import load_model
    from engine.sampler import SamplingConfig, generate

    model, _, tokenizer = load_model(run_dir, "best")
    expected = list(generate(model, tokenizer, "", SamplingConfig(max_new_tokens=12, seed=3)))
    assert (g["text"], g["tokens"]) == ("".join(t.text for t in expected), len(expected)) and g["tokens_per_s"] > 0
    again = one_json(smallgpt(home, "generate", "r1", "--max-new-tokens", "12", "--seed", "3", "--json"))
    assert again["text"] == g["text"]  # seeded
    streamed = smallgpt(home, "generate", str(run_dir), "--max-new-tokens", "12", "--seed", "3", "--prompt", "")
    assert streamed.returncode == 0 and streamed.stdout.rstrip("\n") == g["text"].rstrip("\n")

    e = one_json(smallgpt(home, "eval", "r1", "--json"))
    from engine.evaluate import evaluate_model

    here = evaluate_model(model, RunConfig.load(run_dir / "config.toml"), tokenizer)  # the best checkpoint again
    assert e["tokens"] == here["tokens"] > 0
    assert e["val_loss"] == pytest.approx(here["val_loss"], rel=1e-6)
    assert e["perplexity"] == pytest.approx(math.exp(e["val_loss"]), rel=1e-6)

    listed = one_json(smallgpt(home, "runs", "list", "--json"))["runs"]
    assert [(r["name"], r["status"], r["step"]) for r in listed] == [("r1", "finished", 10)]


@pytest.mark.slow
def test_detached_run_survives_its_parent_and_stops_cleanly(home, small_corpus):
    r = one_json(smallgpt(home, "train", "--corpus", str(small_corpus), "--run", "bg", "--max-steps", "100000",
                          *FAST, "--detach", "--json"))
    run_dir = home / "checkpoints" / "bg"
    assert r["detached"] and r["run_dir"] == str(run_dir)
    # The `smallgpt` parent has exited; the trainer lives on in its own session.
    deadline = time.monotonic() + 120
    while not [e for e in read_events(run_dir) if e["event"] == "step" and e["step"] >= 6]:
        assert time.monotonic() < deadline, (run_dir / "train.log").read_text()
        time.sleep(0.3)
    assert runs.is_running(run_dir) and runs.run_info(run_dir).status == "running"
    assert runs.read_pid(run_dir) == r["pid"]

    live = smallgpt(home, "train", "--run", "bg", "--resume")
    assert "already running" in error_line(live)

    stop = smallgpt(home, "runs", "stop", "bg")
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
    events = read_events(run_dir)
    assert events[-1]["event"] == "done" and events[-1]["reason"] == "stopped"
    assert runs.run_info(run_dir).status == "stopped" and not (run_dir / "pid").exists()
    from engine.checkpoint import checkpoint_dir, load_model, read_state

    assert read_state(checkpoint_dir(run_dir, "latest"))["step"] == events[-1]["step"]
    model, _, _ = load_model(run_dir, "latest")  # SIGTERM left a loadable checkpoint
    tail = smallgpt(home, "runs", "tail", "bg")
    assert tail.returncode == 0 and "done" in tail.stdout.splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "Unknown preset 'nope'"),
    (["--n-embd", "30", "--n-head", "4"], "n_embd (30) must be divisible by n_head (4)"),
    (["--run", "../escape"], "Run name '../escape' is not allowed"),
    (["--resume"], "--resume needs the run to continue"),
    (["--resume", "--run", "ghost"], "No run 'ghost'"),
])
def test_train_bad_input_is_one_clear_line(home, args, message):
    assert message in error_line(smallgpt(home, "train", *args))


@pytest.mark.slow
def test_resume_with_a_changed_model_is_refused(home, small_corpus):
    one_json(smallgpt(home, "train", "--corpus", str(small_corpus), "--run", "r", "--max-steps", "5", *FAST, "--json"))
    line = error_line(smallgpt(home, "train", "--run", "r", "--resume", "--n-embd", "64"))
    assert "changed since its checkpoint (n_embd 32 -> 64)" in line
    more = one_json(smallgpt(home, "train", "--run", "r", "--resume", "--max-steps", "8", "--json"))
    assert more["steps"] == 8
    starts = [e for e in read_events(home / "checkpoints" / "r") if e["event"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, 5]


def test_generate_from_a_missing_run(home):
    assert "No run 'nope'" in error_line(smallgpt(home, "generate", "nope"))
    log = (home / "logs" / "smallgpt.log").read_text()  # the screen gets the sentence, the log the traceback
    assert "Traceback" in log and "RunError: No run 'nope'" in log


@pytest.fixture
def root_logging():
    """main() adds its log file handler to the root logger: take it off again after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in set(root.handlers) - set(handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_a_crash_is_one_line_and_its_traceback_lands_in_the_log(home, monkeypatch, capsys, root_logging):
    import tui.commands.runs
    from tui.cli import main

    def crash(args, console):
        raise KeyError("a bug")

    monkeypatch.setattr(tui.commands.runs, "run", crash)
    assert main(["runs", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "internal error: KeyError: 'a bug'" in err and "smallgpt.log" in err
    log = (home / "logs" / "smallgpt.log").read_text()
    assert "Traceback" in log and "KeyError: 'a bug'" in log and "in crash" in log
