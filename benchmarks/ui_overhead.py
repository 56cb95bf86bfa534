"""UI overhead: tokens/s of a tiny run watched by the TUI vs the same run headless.

The watched run is started from the real app (headless Textual via Pilot, so no terminal is needed) as
its Start button does; the app tails its events and redraws the curves, exactly as a user's TUI would. Runs
alternate headless/watched/watched/headless (then the reverse, for more rounds) so drift on a shared
machine cancels out. The target is a ratio of at least 0.95.

Runs are sized by time, not steps: a short headless run first measures this machine's speed, and every
run then trains for about --seconds. A fixed step count made the row 2-3x longer on a slow day, and
shorter runs are noisier (start-up weighs more): ~3 s swung 0.9-1.1x, ~6 s 0.94-1.00x, ~10 s 1.05-1.17x.

    python benchmarks/ui_overhead.py [--seconds 10] [--rounds 1] [--json]
    benchmarks/bench.py runs it with --json, in its own process as a user's TUI is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SKIP_STEPS = 20  # the first steps include warm-up (allocations, caches): not part of the rate
CALIBRATION_STEPS = 200  # the speed-measuring run: SKIP_STEPS, then 36 log windows (60 misjudged by 2x)


def _config(corpus: str, steps: int):
    from engine.config import RunConfig, apply_overrides

    return apply_overrides(RunConfig(), {
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32},
        "data": {"corpus": corpus, "tokenizer_kind": "char"},
        "train": {"max_steps": steps, "batch_size": 16, "eval_interval": 100, "eval_batches": 4,
                  "log_interval": 5, "device": "cpu", "dtype": "fp32", "sample_tokens": 32},
    })


def _tokens_per_s(run_dir: Path) -> float:
    """Median of the trainer's own tokens/s reports after warm-up (what the user sees in the tab)."""
    from engine.events import Step, read_events, typed
    from engine.rundir import RunDir

    rates = [e.tokens_per_s for e in typed(read_events(run_dir))
             if isinstance(e, Step) and e.step > SKIP_STEPS and e.tokens_per_s]
    if not rates:
        raise RuntimeError(f"run {run_dir} reported no step rates: see {RunDir(run_dir).log}")
    return statistics.median(rates)


def _run_headless(cfg, name: str) -> float:
    from engine.runs import create_run, is_running, launch

    run = create_run(cfg, name=name)
    launch(run)
    _wait_start(run)
    while is_running(run):
        time.sleep(0.2)
    return _tokens_per_s(run)


def _wait_start(run: Path, timeout: float = 120.0) -> None:
    from engine.rundir import RunDir
    from engine.runs import is_running

    deadline = time.monotonic() + timeout
    while not is_running(run):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run} did not start: see {RunDir(run).log}")
        time.sleep(0.1)


async def _watch(cfg, name: str) -> tuple[Path, float]:
    """Start the run from a settled app, as the Start button does, and watch it to its end on the Train
    tab. Returns the run and the share of one core the UI used meanwhile (CPU s per wall s)."""
    from engine.runs import create_run, launch
    from tui.app import SmallGPTApp
    from tui.tabs.train import TrainTab

    app = SmallGPTApp(corpus=cfg.data.corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        # Let the app finish its own start-up work (the Data tab's corpus statistics) first.
        while any(w.is_running and w.group != "follow" and w.name != "_loader" for w in app.workers):
            await pilot.pause(0.1)
        await pilot.press("3")  # the Train tab visible: the curves are drawn, not just buffered
        follower = app.query_one(TrainTab).follower
        run = create_run(cfg, name=name)
        follower.attach(run, launch(run))
        cpu0, wall0 = time.process_time(), time.monotonic()
        while True:
            w = follower.watches.get(str(run))
            if w is not None and w.history.ended and not w.running and w.pid is None:
                break
            # A plain sleep: pilot.pause also walks every widget and forces a screen update, harness work
            # (measured: it tripled the UI's CPU share) that a user's terminal never does.
            await asyncio.sleep(0.2)
        share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        await pilot.press("ctrl+q")
    return run, share


def _run_watched(cfg, name: str) -> tuple[float, float]:
    run, ui_cpu = asyncio.run(_watch(cfg, name))
    return _tokens_per_s(run), ui_cpu


def _stop_all(home: Path) -> None:
    """Never leave a training process behind (an interrupted benchmark, a failed assertion)."""
    from engine.runs import is_running, list_runs, stop_run, wait_stopped

    for info in list_runs(home / "checkpoints"):
        if is_running(info.path):
            stop_run(info.path)
            wait_stopped(info.path, timeout=60)


def measure(seconds: float = 10.0, rounds: int = 1) -> dict:
    """{"headless_tokens_per_s", "watched_tokens_per_s", "ratio", ...} from `rounds` ABBA/BAAB sequences of
    tiny runs (2 headless and 2 watched runs a round) of about `seconds` of training each."""
    from engine.corpora import prepare_builtin

    with tempfile.TemporaryDirectory(prefix="smallgpt-ui-overhead-") as tmp:
        home = Path(tmp)
        old_home = os.environ.get("SMALLGPT_HOME")
        os.environ["SMALLGPT_HOME"] = str(home)
        try:
            with prepare_builtin("python-docs").open(encoding="utf-8") as f:
                (home / "corpus.txt").write_text(f.read(200_000), encoding="utf-8")
            corpus = str(home / "corpus.txt")
            cfg = _config(corpus, CALIBRATION_STEPS)
            rate = _run_headless(cfg, "calibration")
            steps = max(CALIBRATION_STEPS, round(seconds * rate / (cfg.train.batch_size * cfg.model.block_size)))
            cfg = _config(corpus, steps)
            headless, watched_runs = [], []
            for r in range(rounds):  # ABBA, then BAAB, ...: each side as often first as last
                order = ["headless", "watched", "watched", "headless"] if r % 2 == 0 else \
                        ["watched", "headless", "headless", "watched"]
                for i, side in enumerate(order):
                    name = f"{side}-{r}-{i}"
                    if side == "headless":
                        headless.append(_run_headless(cfg, name))
                    else:
                        watched_runs.append(_run_watched(cfg, name))
        finally:
            _stop_all(home)
            if old_home is None:
                os.environ.pop("SMALLGPT_HOME", None)
            else:
                os.environ["SMALLGPT_HOME"] = old_home
    watched = [tps for tps, _ in watched_runs]
    # Medians: on a shared machine one run in eight can lose a quarter of its speed to a neighbour.
    h, w = statistics.median(headless), statistics.median(watched)
    return {"headless_tokens_per_s": round(h, 1), "watched_tokens_per_s": round(w, 1), "ratio": round(w / h, 3),
            "ui_cpu_share": round(max(cpu for _, cpu in watched_runs), 3),
            "runs": {"headless": headless, "watched": watched}, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="training seconds a run")
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds (4 runs each)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.seconds, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"UI overhead: headless {result['headless_tokens_per_s']:,.0f} tok/s, watched "
              f"{result['watched_tokens_per_s']:,.0f} tok/s, ratio {result['ratio']:.3f} (target >= 0.95); "
              f"the UI used {result['ui_cpu_share']:.1%} of one core")


if __name__ == "__main__":
    main()
