"""A fork server that writes checkpoints for the kill -9 tests (not a test module).

Importing torch takes seconds on a loaded 2-core machine, so this process imports it once and forks one
child per scenario; the test SIGKILLs the child. It reads one JSON command per line on stdin:

    {"run_dir": D, "first_step": S, "pause_at": N}   N >= 0: pause forever at the N-th hook point
                                                      of step S + 1 (step S is saved completely first);
                                                      past the last point, report the points and exit
                                                      N < 0: save steps S, S+1, ... without end

or "ping" (answered "pong": a test that killed a child reads up to it, so it has every line the child wrote).
It answers on stdout: "pid P" when the child is forked, then from the child "saved S" after both
checkpoints (latest, best) of step S are complete, "paused S NAME" when it pauses at hook NAME, and
"points N NAME,NAME,..." (the hook points step S + 1 passed) when N was past them.

Every checkpoint of step S holds weights and optimizer moments all equal to S, so a test can tell a
torn checkpoint (weights of one step, state.json of another, or unreadable) from an intact one.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any, Callable

import safetensors.torch
import torch

import engine.checkpoint as ckpt
from engine.config import ModelConfig
from engine.models import build_model

MODEL = ModelConfig(kind="gpt", vocab_size=16, n_layer=1, n_head=1, n_embd=8, block_size=8)


def make_model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The tied GPT (so save_model's dedup of the shared head runs too) and an AdamW with moments."""
    torch.manual_seed(0)
    model = build_model(MODEL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    return model, optimizer


def fill(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
            for v in optimizer.state[p].values():
                if v.dim():  # exp_avg, exp_avg_sq (not the scalar step counter)
                    v.fill_(float(step))


def state_of(step: int) -> dict[str, Any]:
    return {"step": step, "model_config": asdict(MODEL)}


class Hooks:
    """Wraps every filesystem step of save_checkpoint; calls on_point(name) before and after each."""

    def __init__(self, on_point: Callable[[str], None]):
        self.on_point = on_point
        targets: list[tuple[Any, str]] = [(safetensors.torch, "save_model"), (safetensors.torch, "save_file"),
                                          (os, "replace"), (shutil, "rmtree"), (pathlib.Path, "write_text"),
                                          (ckpt, "_fsync_file"), (ckpt, "_fsync_dir")]
        for owner, name in targets:
            setattr(owner, name, self._wrap(name, getattr(owner, name)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.on_point(f"before-{name}")
            result = fn(*args, **kwargs)
            self.on_point(f"after-{name}")
            return result

        return wrapped


def save_step(run_dir: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """What the trainer does at an eval that improved: latest, then best."""
    fill(model, optimizer, step)
    ckpt.save_checkpoint(run_dir, "latest", model, optimizer, state_of(step))
    ckpt.save_checkpoint(run_dir, "best", model, optimizer, state_of(step))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def child(cmd: dict[str, Any]) -> None:
    model, optimizer = make_model_and_optimizer()
    run_dir, step, pause_at = cmd["run_dir"], int(cmd["first_step"]), int(cmd["pause_at"])
    passed: list[str] = []  # the hook points of the current step's saves
    armed = False

    def on_point(name: str) -> None:
        if armed and len(passed) == pause_at:
            say(f"paused {step} {name}")
            while True:  # the test kills us here
                time.sleep(60)
        passed.append(name)

    Hooks(on_point)
    while True:
        passed.clear()
        save_step(run_dir, model, optimizer, step)
        say(f"saved {step}")
        if armed:  # pause_at was past this step's points: tell how many there are
            say(f"points {len(passed)} {','.join(passed)}")
            return
        step += 1
        armed = pause_at >= 0


def main() -> None:
    torch.set_num_threads(1)  # no thread pool in the parent: forked children must not inherit one
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    # Warm up here, once: the first backward, optimizer step and save import and initialise a lot.
    with tempfile.TemporaryDirectory() as d:
        save_step(d, *make_model_and_optimizer(), 0)
    children = []
    try:
        for line in sys.stdin:
            if line.strip() == "ping":  # the children it forked so far are dead: their lines precede this answer
                say("pong")
                continue
            pid = os.fork()
            if pid == 0:
                try:
                    child(json.loads(line))
                finally:
                    os._exit(0)
            children.append(pid)
            say(f"pid {pid}")
    finally:  # stdin closed (the tests are over, or failed): no child may outlive us
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main()
