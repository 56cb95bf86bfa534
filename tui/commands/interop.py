"""`smallgpt import SRC` and `smallgpt export RUN --format hf --out DIR` (engine.interop does the work)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from engine.runs import resolve_run


def run(args: argparse.Namespace, console: Console) -> int:
    return _import(args, console) if args.verb == "import" else _export(args, console)


def _import(args: argparse.Namespace, console: Console) -> int:
    from engine.interop import import_model

    with Progress(TextColumn("importing {task.description}"), BarColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(args.src, total=1.0)
        summary = import_model(args.src, args.run, progress=lambda frac, label: bar.update(
            task, completed=frac, description=f"{args.src}: {label}"))
    if args.json:
        console.print_json(json.dumps(summary))
        return 0
    m = summary["model"]
    console.print(f"[bold]imported[/] {escape(summary['source'])} as run [bold]{escape(summary['run'])}[/]: "
                  f"{summary['params']:,} parameters, {m['n_layer']} layers x {m['n_head']} heads, {m['n_embd']} wide, "
                  f"{m['block_size']} positions, {summary['tokenizer']['kind']} tokenizer of "
                  f"{summary['tokenizer']['vocab_size']:,} ({summary['seconds']:.1f} s)", soft_wrap=True)
    console.print(f"try it: [bold]smallgpt generate {escape(summary['run'])} --prompt ...[/], "
                  f"[bold]smallgpt inspect {escape(summary['run'])} --prompt ...[/]", soft_wrap=True)
    return 0


def _export(args: argparse.Namespace, console: Console) -> int:
    from engine.interop import export_model

    summary = export_model(resolve_run(args.run), args.out, args.checkpoint)
    if args.json:
        console.print_json(json.dumps(summary))
    else:
        console.print(f"[bold]exported[/] {escape(summary['run'])} ({summary['checkpoint']}, step {summary['step']}) "
                      f"to {escape(summary['out'])}: {', '.join(summary['files'])}; load it with transformers' "
                      f"AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained", soft_wrap=True)
    return 0
