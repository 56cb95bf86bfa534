"""`smallgpt runs list|stop|tail`: the runs under checkpoints/, stopping one, following its events."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import runs
from engine.events import Start, parse_event

_STATUS_STYLE = {"running": "green", "finished": "bold", "failed": "red", "stopped": "yellow", "new": "dim",
                 "imported": "magenta"}


def run(args: argparse.Namespace, console: Console) -> int:
    if args.action == "list":
        infos = runs.list_runs()
        if args.json:
            console.print_json(json.dumps({"runs": [i.to_dict() for i in infos]}))
            return 0
        if not infos:
            console.print("no runs yet: start one with [bold]smallgpt train --corpus python-docs[/]")
            return 0
        serving = any(i.serving for i in infos)
        table = Table("run", "status", "kind", "step", "best val", "params", "started", *(["serving at"] * serving))
        for i in infos:
            table.add_row(escape(i.name), f"[{_STATUS_STYLE[i.status]}]{i.status}[/]", i.model_kind,
                          f"{i.step}/{i.max_steps}", "-" if i.best_val_loss is None else f"{i.best_val_loss:.4f}",
                          "-" if i.params is None else f"{i.params / 1e6:.2f}M",
                          "-" if i.started is None else time.strftime("%m-%d %H:%M", time.localtime(i.started)),
                          *([escape(i.serving or "-")] * serving))
        console.print(table)
        return 0
    run_dir = runs.resolve_run(args.run)
    if args.action == "stop":
        if runs.server_info(run_dir) is not None:  # a server of the run: stopped first, then any training
            with console.status(f"stopping the server of {run_dir.name}..."):
                stopped = runs.stop_server(run_dir)
            console.print(f"{escape(run_dir.name)}: server stopped" if stopped else
                          f"{escape(run_dir.name)}: the server is still finishing its requests")
            if not runs.is_running(run_dir):
                return 0
        pid = runs.stop_run(run_dir)
        with console.status(f"asked {run_dir.name} (pid {pid}) to stop; waiting for its checkpoint..."):
            stopped = runs.wait_stopped(run_dir, timeout=120)
        console.print(f"{escape(run_dir.name)} stopped" if stopped else
                      f"{escape(run_dir.name)} is still finishing; check again with [bold]smallgpt runs list[/]")
        return 0
    for event in runs.tail(run_dir, follow=args.follow):
        console.print(format_event(event), highlight=False, soft_wrap=True)
    return 0


def format_event(e: dict[str, Any]) -> str:
    """One readable line per event: time, step, kind, then its fields (samples as their text)."""
    head = f"{e.get('time', 0):9.1f}s step {e.get('step', 0):>6} {e['event']:<10} "
    if e["event"] == "sample":
        return head + escape(str(e.get("text", "")))
    start = parse_event(e)
    if isinstance(start, Start):
        fields = {"device": start.device, "dtype": start.dtype, "resumed_from": start.resumed_from,
                  "params": start.total_params}
    else:
        fields = {k: v for k, v in e.items() if k not in ("event", "step", "time", "wall")}
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
             if not isinstance(v, (dict, list))]
    return head + escape(" ".join(parts))
