"""`smallgpt generate RUN`: stream a sample to stdout token by token (--json: one object at the end)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console

from engine.runs import resolve_run
from tui.cli import knob_overrides


def run(args: argparse.Namespace, console: Console) -> int:
    run_dir = resolve_run(args.run)  # before importing torch: a wrong name fails fast
    from engine.checkpoint import load_model
    from engine.process import share_cpu
    from engine.sampler import SamplingConfig, generate

    share_cpu()  # a core left for what else runs (a training run, the UI)
    model, _, tokenizer = load_model(run_dir, args.checkpoint)
    scfg = SamplingConfig(**knob_overrides(args, "generate").get("sample", {}))
    pieces: list[str] = []
    stream = not args.json
    if stream:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    t0 = time.perf_counter()
    for token in generate(model, tokenizer, args.prompt, scfg):
        pieces.append(token.text)
        if stream:  # plain writes, no Rich markup: generated text may contain anything
            sys.stdout.write(token.text)
            sys.stdout.flush()
    elapsed = time.perf_counter() - t0
    tps = len(pieces) / elapsed if elapsed > 0 else 0.0
    if stream:
        sys.stdout.write("\n")
        sys.stdout.flush()
        Console(stderr=True, highlight=False).print(f"{len(pieces)} tokens, {tps:.1f} tokens/s", style="dim")
    else:
        console.print_json(json.dumps({"text": "".join(pieces), "tokens": len(pieces),
                                       "tokens_per_s": round(tps, 1), "prompt": args.prompt}))
    return 0
