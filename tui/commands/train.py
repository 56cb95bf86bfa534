"""`smallgpt train`: resolve the config (preset, then --config TOML, then flags), create or resume a run,
then train in the foreground with a Rich progress bar, or launch it detached."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from engine import runs
from engine.config import DEFAULT_PRESET, PRESETS, RunConfig, apply_overrides, dumps_toml, load_toml, preset
from engine.errors import ConfigError, RunError
from engine.events import Start, parse_event
from engine.process import training_process_settings
from engine.rundir import RunDir
from tui.cli import knob_overrides

# Taken from the --init-from run, so not settable alongside it.
INIT_FROM_FIXED = ("tokenizer", "tokenizer_kind", "vocab_size", "block_size", "n_layer", "n_head", "n_embd")


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out = knob_overrides(args, "train")
    if out.get("data", {}).get("tokenizer"):  # the run may be trained from another cwd
        out["data"]["tokenizer"] = str(Path(out["data"]["tokenizer"]).expanduser().resolve())
    return out


def resolve_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """base (a resumed run's config) or the preset (default tiny), then --config, then flags."""
    if base is None:
        cfg = preset(args.preset or DEFAULT_PRESET)
    else:
        cfg = base
        if args.preset:
            if args.preset not in PRESETS:
                preset(args.preset)  # raises the unknown-preset error
            cfg = apply_overrides(cfg, PRESETS[args.preset])
    if args.config:
        cfg = apply_overrides(cfg, load_toml(Path(args.config)))
    cfg = apply_overrides(cfg, flag_overrides(args)).validate()
    if base is None and cfg.task.init_from:  # a new run from another's weights (--init-from or [task])
        shaped = [f"--{d.replace('_', '-')}" for d in INIT_FROM_FIXED if getattr(args, d, None) is not None]
        if shaped:
            raise ConfigError(f"{', '.join(shaped)} cannot be set with --init-from: the shape and tokenizer come "
                              f"from the source run.")
    return cfg


def run(args: argparse.Namespace, console: Console) -> int:
    # With --json, stdout carries only the final JSON object: everything human goes to stderr.
    out = Console(stderr=True, highlight=False) if args.json else console
    run_dir = Path(args.run_dir).expanduser() if args.run_dir else runs.run_path(args.run) if args.run else None
    if args.resume:
        if args.init_from:
            raise ConfigError("--resume and --init-from do not go together: --init-from starts a new run.")
        if run_dir is None:
            raise ConfigError("--resume needs the run to continue: pass --run NAME or --run-dir DIR.")
        run_dir = runs.resolve_run(run_dir if args.run_dir else args.run)
        old = RunConfig.load(RunDir(run_dir).config)
        cfg = resolve_config(args, base=old)
        from engine.checkpoint import check_model_config

        check_model_config(asdict(old.model), asdict(cfg.model), run_dir)
        if runs.is_running(run_dir):
            raise RunError(f"Run {run_dir} is already running: follow it with `smallgpt runs tail {run_dir} -f`.")
        cfg.save(RunDir(run_dir).config)
    else:
        cfg = resolve_config(args)
        with out.status("preparing the run (tokenizer)..."):
            if cfg.task.init_from:  # the base's shape and tokenizer (engine.finetune; imports torch)
                from engine.finetune import create_finetune_run

                run_dir = create_finetune_run(cfg, name=args.run, run_dir=run_dir)
            else:
                run_dir = runs.create_run(cfg, name=args.run, run_dir=run_dir)
        cfg = RunConfig.load(RunDir(run_dir).config)
    out.print(f"[bold]run[/] {escape(str(run_dir))}")
    out.print(escape(dumps_toml(cfg.to_dict()).rstrip()), style="dim")

    if args.detach:
        with out.status("starting the training process..."):
            pid = runs.launch(run_dir, resume=args.resume, wait=120)
        if args.json:
            console.print_json(json.dumps({"run_dir": str(run_dir), "pid": pid, "detached": True}))
        else:
            out.print(f"started in the background (pid {pid}); follow it with "
                      f"[bold]smallgpt runs tail {escape(str(run_dir))} -f[/], stop it with "
                      f"[bold]smallgpt runs stop {escape(str(run_dir))}[/]")
        return 0

    training_process_settings()
    from engine.trainer import train  # imports torch

    with _TrainProgress(out, cfg.train.max_steps) as progress:
        summary = train(run_dir, resume=args.resume, on_event=progress.on_event)
    if args.json:
        console.print_json(json.dumps(summary))
    else:
        out.print(f"[bold]{summary['reason']}[/] at step {summary['steps']}: train loss {_fmt(summary['train_loss'])}, "
                  f"val loss {_fmt(summary['val_loss'])}, {_fmt(summary['tokens_per_s'], '.0f')} tokens/s; "
                  f"generate with [bold]smallgpt generate {escape(str(run_dir))}[/]")
    return 0


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


class _TrainProgress:
    """A Rich progress bar (loss, tokens/s, ETA) fed by the trainer's events; evals and samples printed."""

    def __init__(self, console: Console, total: int):
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TextColumn("ETA {task.fields[eta]}"), console=console, transient=False)
        # Encoding a corpus the first time can take a while before the first step: say so.
        self.task = self.progress.add_task("preparing data", total=total, loss="-", tps="-", eta="-")

    def __enter__(self) -> "_TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def on_event(self, e: dict[str, Any]) -> None:
        kind, step = e["event"], e["step"]
        if isinstance(start := parse_event(e), Start):
            resumed = f", resumed from step {start.resumed_from}" if start.resumed_from is not None else ""
            if start.init_source:
                init = start.init_source
                resumed += f", starting from {Path(init['run']).name}:{init['checkpoint']} (its step {init['step']})"
            self.console.print(f"{start.total_params:,} parameters on {start.device} ({start.dtype}){resumed}")
            self.progress.update(self.task, completed=step, description="train")
        elif kind == "step":
            eta = int(e.get("eta_s") or 0)
            self.progress.update(self.task, completed=step, loss=f"{e['loss']:.4f}", tps=f"{e['tokens_per_s']:,.0f}",
                                 eta=f"{eta // 60}:{eta % 60:02d}")
        elif kind == "eval":
            self.console.print(f"step {step}: train loss {e['train_loss']:.4f}, val loss {e['val_loss']:.4f}, "
                               f"perplexity {_fmt(e.get('val_perplexity'), '.2f')}")
        elif kind == "sample":
            self.console.print(escape(e["text"]), style="cyan", highlight=False, soft_wrap=True)
        elif kind == "error":
            self.console.print(f"[red]stopped by an error at step {step}[/]")
