"""`smallgpt lora merge|export RUN`: fold a LoRA run's adapters into a new ordinary run, or write them in
PEFT format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from engine.runs import resolve_run


def run(args: argparse.Namespace, console: Console) -> int:
    run_dir = resolve_run(args.run)
    from engine.finetune import export_adapters, merge_run

    if args.action == "merge":
        path = merge_run(run_dir, args.checkpoint, args.out)
        message = f"merged into run {escape(str(path))}: quantize, export or serve it as any run"
    else:
        path = export_adapters(run_dir, Path(args.out).expanduser(), args.checkpoint)
        message = f"PEFT adapter written to {escape(str(path))} (adapter_config.json, adapter_model.safetensors)"
    if args.json:
        console.print_json(json.dumps({"path": str(path)}))
    else:
        console.print(message)
    return 0
