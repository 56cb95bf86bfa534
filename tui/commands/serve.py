"""`smallgpt serve RUN`: serve a run over an OpenAI-compatible HTTP API (serve/), here or detached."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console
from rich.markup import escape

from engine.errors import ConfigError
from engine.runs import resolve_run

API_KEY_ENV = "SMALLGPT_API_KEY"


def run(args: argparse.Namespace, console: Console) -> int:
    from serve import server

    run_dir = resolve_run(args.run)
    # The key travels in the environment, never in argv, where `ps` would show it to every local user.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be 0 or more (got {args.max_queue}).")
    server.check_host(args.host, api_key)

    def ready(info: dict) -> None:
        if args.json:
            console.print_json(json.dumps(info))
        else:
            console.print(f"serving [bold]{escape(run_dir.name)}[/] ({args.checkpoint}) at "
                          f"[bold]{escape(info['url'])}[/] (pid {info['pid']})"
                          + ("; ctrl+c stops" if sys.stdout.isatty() and not args.detach else ""))

    if args.detach:
        if api_key:
            os.environ[API_KEY_ENV] = api_key
        ready(server.launch(run_dir, ["--checkpoint", args.checkpoint, "--host", args.host, "--port", str(args.port),
                                      "--max-queue", str(args.max_queue), "--max-batch", str(args.max_batch)]))
        if not args.json:
            console.print(f"stop it with [bold]smallgpt runs stop {escape(run_dir.name)}[/]")
        return 0
    server.serve(run_dir, args.checkpoint, args.host, args.port, api_key, args.max_queue, args.max_batch,
                 on_ready=ready)
    return 0
