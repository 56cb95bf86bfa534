"""Fine-tuned runs: created from a base run (`init_from`), their trainable scope (all, head, last-N blocks,
or LoRA adapters on a frozen base), and LoRA runs' merge and PEFT export.

A fine-tuned run is an ordinary run: its config.toml is the base's [model] (plus n_classes for a
classifier) with [task] and [lora] filled in, its tokenizer.json the base's, and RUN/task.json what its task
needs. Its checkpoints hold the whole model, except a LoRA run's, which hold only the adapters and the task
head and are loaded over the base run's weights.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

from . import checkpoint as ckpt
from .config import RunConfig
from .errors import CheckpointError, ConfigError, RunError
from .events import EventWriter
from .lora import export_peft, load_adapters
from .models import count_params
from .rundir import FP32_CHECKPOINTS, RunDir
from .runs import run_path, stamped
from .tasks import task_info, write_task_info
from .tasks.instruct import InstructTask
from .tokenizer import Tokenizer


def create_finetune_run(cfg: RunConfig, name: str | None = None, run_dir: Path | None = None) -> Path:
    """A new run fine-tuning cfg.task.init_from on cfg.data.corpus (the task data): the base's [model] and
    tokenizer, the task's labels/template/split in RUN/task.json."""
    base_dir, _ = ckpt.parse_init_from(cfg.task.init_from)
    base_rd = RunDir(base_dir)
    base = RunConfig.load(base_rd.config)
    cfg = replace(cfg, model=replace(base.model, n_classes=0, dropout=cfg.model.dropout),
                  data=replace(base.data, corpus=cfg.data.corpus, val_ratio=cfg.data.val_ratio, tokenizer=""))
    data, info = task_info(cfg) if cfg.task.kind != "lm" else (None, {})
    if cfg.task.kind == "classify":
        cfg.model.n_classes = len(info["labels"])
    cfg.validate()
    if cfg.task.kind == "instruct":  # prompts that fill the base's block are refused now, not when it starts
        InstructTask(cfg, Tokenizer.load(base_rd.tokenizer), data, info)
    path = Path(run_dir) if run_dir is not None else run_path(name or _default_name(cfg, base_dir))
    rd = RunDir(path)
    if rd.is_run():
        raise RunError(f"Run directory {path} already holds a run: choose another name.")
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base_rd.tokenizer, rd.tokenizer)
    if info:
        write_task_info(path, info)
    cfg.save(rd.config)
    return path


def _default_name(cfg: RunConfig, base_dir: Path) -> str:
    lora = "-lora" if cfg.lora.rank else ""
    return stamped(base_dir.name, f"{cfg.task.kind}{lora}")


def merge_run(run_dir: Path, which: str = "best", name: str | None = None) -> Path:
    """A new ordinary run holding a LoRA run's adapters folded into its weights (quantize, export and
    serve it as any run)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.load(RunDir(run_dir).config)
    if not cfg.lora.rank:
        raise ConfigError(f"Run {run_dir} has no LoRA adapters to merge: it already holds whole weights.")
    model, _, _ = ckpt.load_model(run_dir, which)
    source = ckpt.checkpoint_dir(run_dir, which) or ckpt.checkpoint_dir(run_dir, "latest")
    state = ckpt.read_state(source)
    out = run_path(name or f"{run_dir.name[:80]}-merged")
    out_rd = RunDir(out)
    if out_rd.is_run():
        raise RunError(f"Run directory {out} already holds a run: choose another name with --out.")
    out.mkdir(parents=True, exist_ok=True)
    merged = replace(cfg, lora=replace(cfg.lora, rank=0), task=replace(cfg.task, init_from=f"{run_dir}:{which}"))
    for name in ("tokenizer", "task"):
        if getattr(RunDir(run_dir), name).is_file():
            shutil.copyfile(getattr(RunDir(run_dir), name), getattr(out_rd, name))
    merged.save(out_rd.config)
    keep = {k: state[k] for k in ("step", "tokens_seen", "best_val_loss", "train_loss", "val_loss") if k in state}
    for kind in FP32_CHECKPOINTS:
        ckpt.save_checkpoint(out, kind, model, None, {**keep, "model_config": asdict(merged.model),
                                                       "merged_from": str(source)})
    writer = EventWriter(out)
    writer.emit("start", state["step"], config=merged.to_dict(), params=count_params(model), device="cpu",
                dtype="fp32", resumed_from=None, task=merged.task.kind, init_from=merged.task.init_from)
    reason = "max_steps" if state["step"] >= cfg.train.max_steps else "stopped"  # the source's standing
    writer.emit("done", state["step"], reason=reason, tokens_seen=state.get("tokens_seen", 0), merged_from=str(source))
    writer.close()
    return out


def export_adapters(run_dir: Path, out_dir: Path, which: str = "best") -> Path:
    """A LoRA run's adapters in PEFT format (adapter_config.json + adapter_model.safetensors) for the
    HF GPT-2 layout of its base."""
    run_dir = Path(run_dir)
    cfg = RunConfig.load(RunDir(run_dir).config)
    if not cfg.lora.rank:
        raise ConfigError(f"Run {run_dir} has no LoRA adapters: fine-tune with --lora-rank to export adapters.")
    source = ckpt.checkpoint_dir(run_dir, which) or ckpt.checkpoint_dir(run_dir, "latest")
    if source is None:
        raise CheckpointError(f"Run {run_dir} has no checkpoint yet: train it first.")
    model = ckpt.build_for_training(cfg, fresh=False)
    load_adapters(model, source / ckpt.MODEL_FILE)
    lo = cfg.lora
    task_type = "SEQ_CLS" if cfg.task.kind == "classify" else "CAUSAL_LM"
    return export_peft(model, out_dir, lo.rank, lo.alpha, lo.dropout, base=cfg.task.init_from, task_type=task_type)
