"""`smallgpt chat RUN`: a multi-turn conversation with an instruction-tuned run, its prompt template (from
RUN/task.json) applied to the whole conversation. --prompt: one reply and exit; --json: one object per
reply."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from engine.errors import RunError
from engine.runs import resolve_run
from tui.cli import knob_overrides


def run(args: argparse.Namespace, console: Console) -> int:
    run_dir = resolve_run(args.run)
    from engine.checkpoint import load_model
    from engine.process import share_cpu
    from engine.sampler import SamplingConfig, generate
    from engine.tasks import read_task_info
    from engine.tasks.instruct import prompt_text

    share_cpu()  # a core left for what else runs (a training run, the UI)
    model, cfg, tokenizer = load_model(run_dir, args.checkpoint)
    if cfg.task.kind != "instruct":
        raise RunError(f"Run {run_dir} was not instruction-tuned (task {cfg.task.kind}): chat with a run from "
                       f"`smallgpt finetune --task instruct`, or use `smallgpt generate`.")
    template = read_task_info(run_dir)["template"]
    scfg = SamplingConfig(**knob_overrides(args, "chat").get("sample", {}))
    messages: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []

    def reply(text: str) -> None:
        messages.append({"role": "user", "content": text})
        pieces = []
        for token in generate(model, tokenizer, prompt_text(template, messages), scfg):
            pieces.append(token.text)
            if not args.json:  # plain writes, no Rich markup: generated text may contain anything
                sys.stdout.write(token.text)
                sys.stdout.flush()
        answer = "".join(pieces)
        messages.append({"role": "assistant", "content": answer})
        if args.json:
            console.print_json(json.dumps({"prompt": text, "reply": answer, "tokens": len(pieces)}))
        else:
            sys.stdout.write("\n")

    if args.prompt is not None:
        reply(args.prompt)
        return 0
    if not args.json:
        Console(stderr=True, highlight=False).print(f"chatting with {run_dir.name} ({template['name']} template); "
                                                    "an empty line or Ctrl-D ends", style="dim")
    while True:
        try:
            text = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            return 0
        if not text.strip():
            return 0
        reply(text)
