"""`smallgpt quantize RUN`: write RUN/ckpt/int8/ and compare it with the fp32 checkpoint it came from."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from engine.runs import resolve_run


def run(args: argparse.Namespace, console: Console) -> int:
    from engine.int8 import save_int8

    run_dir = resolve_run(args.run)
    with Progress(TextColumn("quantizing {task.description}"), BarColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(run_dir.name, total=1.0)
        report = save_int8(run_dir, progress=lambda frac, label: bar.update(task, completed=frac,
                                                                           description=f"{run_dir.name}: {label}"))
    if args.json:
        console.print_json(json.dumps(report))
        return 0
    table = Table("", "fp32", "int8", "int8 / fp32", title=f"{run_dir.name}: int8 checkpoint written")
    rows = [("size (MB)", "bytes", 1e-6, "{:.2f}"), ("val loss", "val_loss", 1.0, "{:.4f}"),
            ("perplexity", "perplexity", 1.0, "{:.3f}"), ("prefill tokens/s", "prefill_tokens_per_s", 1.0, "{:,.0f}"),
            ("decode tokens/s", "decode_tokens_per_s", 1.0, "{:,.1f}")]
    for label, key, unit, fmt in rows:
        fp32, int8 = report[f"fp32_{key}"], report[f"int8_{key}"]
        table.add_row(label, fmt.format(fp32 * unit), fmt.format(int8 * unit), f"{int8 / fp32:.2f}x" if fp32 else "-")
    console.print(table)
    matmul = "torch._int_mm" if report["int_mm"] else "dequantize + fp32 matmul (no _int_mm here)"
    console.print(f"int8 matmul: {matmul}; validation over {report['eval_tokens']:,} tokens; {report['path']}",
                  style="dim", soft_wrap=True)
    return 0
