"""UI responsiveness while generating (issues 6, 19): stream 2,000 tokens in the Generate tab and measure

- key latency: from a key press to its binding's action running, sampled every ~0.1 s during the stream
  (target: p95 < 100 ms);
- tokens/s shown in the tab vs `smallgpt generate --json` (the CLI, its own process) on the same run.

--view chat does the same in the chat view: an instruct run (the tiny run fine-tuned, untrained, from
benchmarks/finetune_runs.py), one turn streaming its reply; the CLI generates from the same rendered prompt.

The tab decodes in the app's decode process (engine.decode_process), as a user's does; the tab's clock starts
once that process has started and loaded the model, as the CLI's starts after its load. Both run torch on
cores - 1 threads (engine.process.share_cpu).

The model has the `tiny` preset's shape (4 layers, 4 heads, 128 wide, block 64), seed-initialised, with
end-of-text suppressed so every stream runs its full length (benchmarks/tiny_run.py). The app runs headless
(Pilot), so no terminal is needed. CLI and TUI runs alternate so drift on a shared machine cancels out.

    python benchmarks/ui_generate.py [--tokens 2000] [--repeats 2] [--view lm|chat] [--json]
    benchmarks/bench.py runs it with --json, in its own process as a user's TUI is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY_SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
KEY = "f12"  # bound by the probe app below to an action that only records when it ran


PROMPT = "the cat"


def _cli_tokens_per_s(home: Path, run: Path, tokens: int, prompt: str) -> float:
    env = {**os.environ, "SMALLGPT_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "tui.cli", "generate", str(run), "--max-new-tokens", str(tokens),
                          "--prompt", prompt, "--seed", "0", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["tokens_per_s"])


async def _tui_run(tokens: int, view: str = "lm") -> dict:
    from textual import events
    from textual.binding import Binding

    from tui.app import SmallGPTApp
    from tui.tabs.generate import GenerateTab
    from tui.widgets.prompt_input import PromptInput
    from tui.widgets.run_picker import RunPicker

    handled: list[float] = []

    class ProbeApp(SmallGPTApp):
        CSS_PATH = str(ROOT / "tui" / SmallGPTApp.CSS_PATH)  # relative paths resolve next to the subclass
        BINDINGS = [*SmallGPTApp.BINDINGS, Binding(KEY, "probe", "probe", show=False, priority=True)]

        def action_probe(self) -> None:
            handled.append(time.perf_counter())

    # The tiny run's own corpus: with the default (python-docs) the Data tab would prepare and profile the
    # whole built-in corpus in this fresh home, in the background, while the stream is measured.
    app = ProbeApp(corpus=str(Path(os.environ["SMALLGPT_HOME"]) / "corpora" / "tiny.txt"))
    latencies: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        tab = app.query_one(GenerateTab)
        while tab.query_one(RunPicker).run_dir is None or tab.mode != {"lm": "lm", "chat": "instruct"}[view]:
            await pilot.pause(0.05)
        tab.query_one("#gen-max_new_tokens").value = str(tokens)
        tab.query_one(PromptInput).value = PROMPT
        tab.query_one(PromptInput).focus()
        await pilot.press("enter")
        stream = tab.query_one("#out-a")
        pressed: list[float] = []
        while tab.running or stream.token_count < tokens:
            if tab.running and stream.token_count > 0:  # streaming (not loading the model): press the key
                # As a terminal does: the event goes to the driver and the test does not wait for the app
                # to go idle (pilot.press does, which while streaming held each press for seconds).
                key = events.Key(KEY, None)
                key.set_sender(app)
                pressed.append(time.perf_counter())
                app._driver.send_message(key)
            await asyncio.sleep(0.1)
            if not tab.running and stream.token_count < tokens:
                raise RuntimeError(f"the stream ended after {stream.token_count} of {tokens} tokens")
        await pilot.pause(0.5)  # the last presses are handled
        # Each press is matched with the first handling after it (presses are 0.1 s apart, far above latency).
        for sent in pressed:
            after = [t for t in handled if t >= sent]
            if after:
                latencies.append(min(after) - sent)
        shown = stream.border_subtitle.split("·")[1].split()[0]  # "N tok · X tok/s", the final speed
        return {"tui_tokens_per_s": float(shown.replace(",", "")), "latencies_ms": [1000 * x for x in latencies],
                "unhandled": len(pressed) - len(latencies)}


def measure(tokens: int = 2000, repeats: int = 2, view: str = "lm") -> dict:
    from benchmarks.tiny_run import make_tiny_run

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["SMALLGPT_HOME"] = str(home)
        run = make_tiny_run(home, model=TINY_SHAPE)
        prompt = PROMPT
        if view == "chat":
            from engine.tasks import read_task_info
            from engine.tasks.instruct import prompt_text
            from benchmarks.finetune_runs import make_finetuned_run, write_chat_data

            run = make_finetuned_run(run, "instruct", write_chat_data(home), "chat")
            prompt = prompt_text(read_task_info(run)["template"], [{"role": "user", "content": PROMPT}])
        cli, tui, lat, unhandled = [], [], [], 0
        for _ in range(repeats):
            cli.append(_cli_tokens_per_s(home, run, tokens, prompt))
            result = asyncio.run(_tui_run(tokens, view))
            tui.append(result["tui_tokens_per_s"])
            lat.extend(result["latencies_ms"])
            unhandled += result["unhandled"]
    lat.sort()
    return {
        "view": view,
        "tokens": tokens,
        "cli_tokens_per_s": round(statistics.median(cli), 1),
        "tui_tokens_per_s": round(statistics.median(tui), 1),
        "ratio": round(statistics.median(tui) / statistics.median(cli), 3),
        "key_presses": len(lat) + unhandled,
        "key_presses_unhandled": unhandled,
        "key_latency_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "key_latency_p95_ms": round(lat[math.ceil(0.95 * len(lat)) - 1], 1) if lat else None,  # nearest rank
        "key_latency_max_ms": round(lat[-1], 1) if lat else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--view", choices=("lm", "chat"), default="lm")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(args.tokens, args.repeats, args.view)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['view']} view, streaming {r['tokens']} tokens: TUI {r['tui_tokens_per_s']} tok/s vs CLI {r['cli_tokens_per_s']} tok/s "
          f"(ratio {r['ratio']})")
    print(f"key latency over {r['key_presses']} presses ({r['key_presses_unhandled']} unhandled): "
          f"p50 {r['key_latency_p50_ms']} ms, p95 {r['key_latency_p95_ms']} ms, "
          f"max {r['key_latency_max_ms']} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
