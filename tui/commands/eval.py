"""`smallgpt eval RUN`: validation loss and perplexity of a checkpoint over the validation split."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from engine.runs import resolve_run


def run(args: argparse.Namespace, console: Console) -> int:
    run_dir = resolve_run(args.run)  # before importing torch: a wrong name fails fast
    from engine.evaluate import evaluate_run

    with Console(stderr=True).status(f"evaluating {run_dir.name} ({args.checkpoint})..."):
        result = evaluate_run(run_dir, args.checkpoint)
    if args.json:
        console.print_json(json.dumps(result))
    else:
        console.print(f"{run_dir.name} ({args.checkpoint}): val loss [bold]{result['val_loss']:.4f}[/], "
                      f"perplexity [bold]{result['perplexity']:.2f}[/] over {result['tokens']:,} tokens")
    return 0
