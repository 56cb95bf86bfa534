"""`smallgpt classify RUN TEXT`: class probabilities from a classifier run (--json: one object)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape

from engine.errors import RunError
from engine.runs import resolve_run


def run(args: argparse.Namespace, console: Console) -> int:
    run_dir = resolve_run(args.run)  # before importing torch: a wrong name fails fast
    from engine.checkpoint import load_model
    from engine.tasks import read_task_info
    from engine.tasks.classify import classify_texts

    model, cfg, tokenizer = load_model(run_dir, args.checkpoint)
    if cfg.task.kind != "classify":
        raise RunError(f"Run {run_dir} is not a classifier (task {cfg.task.kind}): fine-tune one with "
                       f"`smallgpt finetune --task classify`.")
    probs = classify_texts(model, tokenizer, read_task_info(run_dir)["labels"], [args.text])[0]
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    if args.json:
        console.print_json(json.dumps({"text": args.text, "label": ranked[0][0], "probabilities": probs}))
    else:
        for label, p in ranked:
            console.print(f"{escape(label):<20} {p:7.1%}  {'#' * round(p * 40)}")
    return 0
