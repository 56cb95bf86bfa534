"""`python -m engine train --run-dir R [--resume]`: the process that trains a run.

The TUI and `smallgpt train --detach` start it detached with stdout/stderr going to RUN/train.log; it
also runs as is under `torchrun`. Exit status: 0 finished or stopped; 1 an error: a clear one is one line
on stderr, a bug a traceback (both reach RUN/train.log, and the events as `error`).
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import SmallGPTError
from .process import training_process_settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine", description="Run the smallgpt training process.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the run in a run directory")
    t.add_argument("--run-dir", required=True, help="the run directory (holds config.toml)")
    t.add_argument("--resume", action="store_true", help="continue from ckpt/latest")
    args = p.parse_args(argv)

    training_process_settings()
    from .trainer import train  # after the settings: they must precede torch's import

    try:
        summary = train(args.run_dir, resume=args.resume)
    except SmallGPTError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"done: {summary['reason']} at step {summary['steps']}", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        # A torchrun rank: DDP keeps gloo's process group, and its worker threads, alive past
        # destroy_process_group, and the interpreter's teardown of them can abort a rank that finished
        # cleanly ("terminate called without an active exception", exit -6). Everything is written and
        # closed by now, so leave without that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
