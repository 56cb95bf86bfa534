"""`smallgpt`: the headless CLI. Names here are a contract: add, don't rename.

Argument parsing and error handling live here; each verb's work is in tui/commands/<verb>.py, imported
only when that verb runs so `smallgpt corpus list` never pays for `import torch`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

from engine.config import CHECKPOINTS, TASK_KINDS, DEFAULT_PRESET, PRESETS, TOKENIZER_KINDS, Knob, knobs_for
from engine.errors import SmallGPTError
from engine.paths import log_path
from engine.rundir import FP32_CHECKPOINTS

log = logging.getLogger("smallgpt")


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {s})")
    return v


def add_knob_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """A flag for each knob `command` takes (engine.config declares them). A flag left out is None, so it
    overrides nothing: the preset, the --config file or the sampler's default stands."""
    for k in knobs_for(command):
        help = k.help
        if k.table == "sample" and k.type is not list:  # a run's knobs default to its preset's values
            help += f" (default {'off' if k.default is None else k.default})"
        if k.type is bool:
            parser.add_argument(k.flag, action="store_true", default=None, help=help)
        elif k.type is list:
            parser.add_argument(k.flag, action="append", help=help)
        else:
            parser.add_argument(k.flag, type=_flag_type(k), choices=k.choices or None, help=help)


def knob_overrides(args: argparse.Namespace, command: str) -> dict[str, dict[str, Any]]:
    """{table: {knob: value}} of the knob flags given on the command line."""
    out: dict[str, dict[str, Any]] = {}
    for k in knobs_for(command):
        value = getattr(args, k.dest, None)
        if value is not None:
            out.setdefault(k.table, {})[k.name] = value
    return out


def _flag_type(k: Knob):
    if k.type is int and k.bounds.startswith("[1,"):
        return _positive_int
    return k.type


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smallgpt", description="Build small language models from scratch.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    corpus = sub.add_parser("corpus", help="list built-in and catalog corpora, show statistics")
    csub = corpus.add_subparsers(dest="action", required=True)
    c = csub.add_parser("list", help="built-in and catalog corpora")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("stats", help="statistics of a corpus")
    c.add_argument("source", help="built-in name, catalog name, file, folder, glob or http(s) URL")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("show", help="print the first lines of a corpus")
    c.add_argument("source")
    c.add_argument("--lines", type=_positive_int, default=20)

    tok = sub.add_parser("tokenizer", help="train or try a tokenizer")
    tsub = tok.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("train", help="train a tokenizer on a corpus")
    t.add_argument("--corpus", required=True)
    t.add_argument("--kind", choices=TOKENIZER_KINDS, required=True)
    t.add_argument("--vocab-size", type=_positive_int)
    t.add_argument("--out", required=True, help="where to write tokenizer.json")
    t.add_argument("--json", action="store_true")
    t = tsub.add_parser("encode", help="encode text with a tokenizer")
    t.add_argument("--tokenizer", required=True)
    t.add_argument("text")
    t.add_argument("--json", action="store_true")

    tr = sub.add_parser("train", help="train a GPT or LSTM (foreground, or --detach)")
    tr.add_argument("--preset", help=f"model shape and recipe: {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    tr.add_argument("--config", help="a TOML config ([model], [data], [train]); flags override it")
    where = tr.add_mutually_exclusive_group()
    where.add_argument("--run", help="run name under checkpoints/")
    where.add_argument("--run-dir", help="run directory path")
    tr.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    tr.add_argument("--detach", action="store_true", help="start in the background and return")
    add_knob_flags(tr, "train")
    tr.add_argument("--json", action="store_true")

    g = sub.add_parser("generate", help="stream text from a run")
    g.add_argument("run", help="run name under checkpoints/ or a run directory")
    g.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    g.add_argument("--prompt", default="")
    add_knob_flags(g, "generate")
    g.add_argument("--json", action="store_true")

    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP API for a run (foreground, or --detach)")
    s.add_argument("run", help="run name under checkpoints/ or a run directory")
    s.add_argument("--checkpoint", choices=["latest", "best", "int8"], default="best")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on; any but loopback needs --api-key")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    s.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY' (default: $SMALLGPT_API_KEY)")
    s.add_argument("--max-queue", type=int, default=16, help="requests that may wait for a slot before 429")
    s.add_argument("--max-batch", type=_positive_int, default=8, help="generations that share each decode step")
    s.add_argument("--detach", action="store_true", help="start in the background and return")
    s.add_argument("--json", action="store_true")

    e = sub.add_parser("eval", help="validation loss and perplexity of a run")
    e.add_argument("run")
    e.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    e.add_argument("--json", action="store_true")

    q = sub.add_parser("quantize", help="write an int8 checkpoint to RUN/ckpt/int8/")
    q.add_argument("run")
    q.add_argument("--json", action="store_true")

    i = sub.add_parser("inspect", help="attention heatmaps and head metrics")
    i.add_argument("run")
    i.add_argument("--prompt", required=True)
    i.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    i.add_argument("--layer", type=int, default=0)
    i.add_argument("--head", type=int, default=0)
    i.add_argument("--json", action="store_true")

    m = sub.add_parser("import", help="import a GPT-2 model folder (Hugging Face format) as a run")
    m.add_argument("src", help="a folder with config.json, model.safetensors and the tokenizer files "
                               "(or a hub name, with huggingface_hub and a network)")
    m.add_argument("--run", help="run name under checkpoints/ (default: the folder's name)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(module="interop")
    x = sub.add_parser("export", help="write a GPT run as a Hugging Face GPT-2 folder")
    x.add_argument("run")
    x.add_argument("--format", choices=["hf"], required=True)
    x.add_argument("--out", required=True, help="the folder to write (new or empty)")
    x.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    x.add_argument("--json", action="store_true")
    x.set_defaults(module="interop")
    _add_finetune_verbs(sub)

    r = sub.add_parser("runs", help="list, stop or tail runs")
    rsub = r.add_subparsers(dest="action", required=True)
    x = rsub.add_parser("list")
    x.add_argument("--json", action="store_true")
    x = rsub.add_parser("stop")
    x.add_argument("run")
    x = rsub.add_parser("tail")
    x.add_argument("run")
    x.add_argument("--follow", "-f", action="store_true")
    return p


def _add_finetune_verbs(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("finetune", help="fine-tune a run for a task: classify, instruct or lm (LoRA optional)")
    f.add_argument("--task", choices=TASK_KINDS, required=True)
    f.add_argument("--from", dest="init_from", required=True, metavar="RUN[:latest|best]",
                   help="the run whose weights to start from")
    f.add_argument("--data", required=True, help="task data: a file, a built-in set (python-kinds, "
                                                 "python-instruct) or a catalog name (instruction-data)")
    where = f.add_mutually_exclusive_group()
    where.add_argument("--run", help="name of the new run under checkpoints/")
    where.add_argument("--run-dir", help="directory of the new run")
    add_knob_flags(f, "finetune")
    f.add_argument("--detach", action="store_true", help="start in the background and return")
    f.add_argument("--json", action="store_true")

    c = sub.add_parser("classify", help="class probabilities of a text from a classifier run")
    c.add_argument("run")
    c.add_argument("text")
    c.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    c.add_argument("--json", action="store_true")

    ch = sub.add_parser("chat", help="talk to an instruction-tuned run (its template applied)")
    ch.add_argument("run")
    ch.add_argument("--prompt", help="one message, one reply, then exit")
    ch.add_argument("--system", help="a system message (chat template)")
    ch.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    add_knob_flags(ch, "chat")
    ch.add_argument("--json", action="store_true")

    lo = sub.add_parser("lora", help="merge or export a LoRA run's adapters")
    lsub = lo.add_subparsers(dest="action", required=True)
    x = lsub.add_parser("merge", help="a new run with the adapters folded into the weights")
    x.add_argument("run")
    x.add_argument("--checkpoint", choices=FP32_CHECKPOINTS, default="best")
    x.add_argument("--out", help="name of the merged run (default RUN-merged)")
    x.add_argument("--json", action="store_true")
    x = lsub.add_parser("export", help="the adapters in PEFT format (adapter_config.json, adapter_model.safetensors)")
    x.add_argument("run")
    x.add_argument("--out", required=True, help="folder to write")
    x.add_argument("--checkpoint", choices=FP32_CHECKPOINTS, default="best")
    x.add_argument("--json", action="store_true")


def setup_logging() -> None:
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.markup import escape

    args = build_parser().parse_args(argv)
    setup_logging()
    console = Console(stderr=False, highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        module = importlib.import_module(f"tui.commands.{getattr(args, 'module', args.verb)}")
        return module.run(args, console) or 0
    except SmallGPTError as e:
        log.exception("smallgpt %s failed", args.verb)
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: say so in one line, keep the traceback in the log
        log.exception("smallgpt %s crashed", args.verb)
        err.print(f"[bold red]internal error:[/] {escape(f'{type(e).__name__}: {e}')} (traceback in {log_path()})",
                  soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
