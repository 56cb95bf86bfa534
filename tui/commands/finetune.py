"""`smallgpt finetune`: a new run fine-tuned from a base run for a task (classify, instruct, lm), LoRA
optional; trained in the foreground with the train verb's progress bar, or detached. Resume it like any
run: `smallgpt train --resume --run NAME`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from engine import runs
from engine.config import dumps_toml
from engine.events import Eval, Report, Start, parse_event
from engine.process import training_process_settings

from tui.cli import knob_overrides

from .train import _fmt, _TrainProgress

def run(args: argparse.Namespace, console: Console) -> int:
    from engine.config import finetune_config
    from engine.finetune import create_finetune_run

    out = Console(stderr=True, highlight=False) if args.json else console
    cfg = finetune_config(args.task, args.init_from, args.data, knob_overrides(args, "finetune"))
    with out.status("preparing the run (task data)..."):
        run_dir = create_finetune_run(cfg, name=args.run, run_dir=Path(args.run_dir).expanduser() if args.run_dir
                                      else None)
    out.print(f"[bold]run[/] {escape(str(run_dir))}")
    out.print(escape(dumps_toml({k: v for k, v in cfg.to_dict().items() if k in ("task", "lora")}).rstrip()),
              style="dim")
    if args.detach:
        with out.status("starting the training process..."):
            pid = runs.launch(run_dir, wait=120)
        if args.json:
            console.print_json(json.dumps({"run_dir": str(run_dir), "pid": pid, "detached": True}))
        else:
            out.print(f"started in the background (pid {pid}); follow it with "
                      f"[bold]smallgpt runs tail {escape(str(run_dir))} -f[/]")
        return 0

    training_process_settings()
    from engine.trainer import train  # imports torch

    progress = _FinetuneProgress(out, cfg.train.max_steps)
    with progress:
        summary = train(run_dir, on_event=progress.on_event)
    summary["report"] = progress.report
    if args.json:
        console.print_json(json.dumps(summary))
        return 0
    verb = {"classify": f"smallgpt classify {run_dir} TEXT", "instruct": f"smallgpt chat {run_dir}"}.get(
        args.task, f"smallgpt generate {run_dir}")
    out.print(f"[bold]{summary['reason']}[/] at step {summary['steps']}: val loss {_fmt(summary['val_loss'])}; "
              f"try [bold]{escape(verb)}[/]")
    return 0


class _FinetuneProgress(_TrainProgress):
    """The train verb's progress, plus what fine-tuning adds: the trainable share, accuracy, the report."""

    report: dict[str, Any] | None = None

    def on_event(self, e: dict[str, Any]) -> None:
        super().on_event(e)
        event = parse_event(e)
        if isinstance(event, Start) and event.trainable:
            t = event.trainable
            self.console.print(f"training {t['trainable']:,} of {t['total']:,} parameters ({t['share']:.2%})"
                               + (f"; labels {', '.join(event.labels)}" if event.labels else ""))
        elif isinstance(event, Eval) and event.val_accuracy is not None:
            self.console.print(f"step {event.step}: val accuracy {event.val_accuracy:.1%}")
        elif isinstance(event, Report):
            self.report = {"labels": event.labels, "val": event.val, "test": event.test}
            for split, metrics in (("val", event.val), ("test", event.test)):
                if metrics:
                    self.console.print(format_report(split, event.labels, metrics))


def format_report(split: str, labels: list[str], m: dict[str, Any]) -> str:
    width = max(map(len, labels)) + 2
    lines = [f"{split}: accuracy {m['accuracy']:.1%} on {m['records']} records "
             f"(majority class {m['majority_baseline']:.1%})",
             " " * width + "precision  recall   confusion (rows true, columns predicted)"]
    for i, name in enumerate(labels):
        p, r = m["precision"][i], m["recall"][i]
        lines.append(f"{name:<{width}}{_fmt(p, '.1%'):>9}  {_fmt(r, '.1%'):>6}   "
                     + " ".join(f"{n:6d}" for n in m["confusion"][i]))
    return "\n".join(lines)
