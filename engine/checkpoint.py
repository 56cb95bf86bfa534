"""Atomic checkpoints of a run: RUN/ckpt/<which>/{model.safetensors, optim.safetensors, state.json}, and
`load_model`, the one way to load a run's model by checkpoint name (latest, best, int8).

Nothing here is ever unpickled: weights and optimizer tensors are safetensors, everything else is JSON
(the optimizer's param groups ride in the safetensors metadata; RNG states are base64 of their bytes).

A checkpoint is written into a temp dir inside ckpt/, every file and the dir fsynced, then renamed into
place. Replacing an existing one renames the old away first, then the new in, then deletes the old, so a
reader always finds either the complete new checkpoint or the complete previous one (`checkpoint_dir`), even
after a kill -9 between the two renames. state.json is written last: a dir without it is incomplete.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import safetensors.torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import ModelConfig, RunConfig
from .errors import CheckpointError, ConfigError
from .lora import adapter_tensors, is_adapted, load_adapters, merge, set_trainable
from .models import build_model
from .quantize import FORMAT as INT8_FORMAT
from .quantize import quantize_model
from .rundir import CHECKPOINTS, STATE_FILE, RunDir
from .runs import resolve_run
from .tokenizer import Tokenizer

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"


def checkpoint_dir(run_dir: Path, which: str) -> Path | None:
    """The complete checkpoint `which` of a run (or the previous one a crash left), or None."""
    return RunDir(run_dir).complete_checkpoint(which)


def find(run_dir: Path, which: str) -> Path | None:
    """The directory `load_model(run_dir, which)` reads: "best" falls back to "latest" before the first
    eval has written a best."""
    return checkpoint_dir(run_dir, which) or (checkpoint_dir(run_dir, "latest") if which == "best" else None)


def save_checkpoint(run_dir: Path, which: str, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any]) -> Path:
    """Write model, optimizer and state.json atomically to RUN/ckpt/<which>/ and return that path."""
    root = RunDir(run_dir).checkpoints
    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root, which)
    tmp = root / f".tmp-{which}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model_path = tmp / MODEL_FILE
        adapters = adapter_tensors(model)  # a LoRA run saves its adapters only: the base is its init_from
        if adapters is not None:
            safetensors.torch.save_file(adapters, str(model_path), metadata={"format": "pt", "adapters": "lora"})
        else:  # save_model drops the duplicate name of tied weights (the GPT's head shares the embedding)
            safetensors.torch.save_model(model, str(model_path), metadata={"format": "pt"})
        _fsync_file(model_path)
        if optimizer is not None:
            tensors, meta = _flatten_optimizer(optimizer.state_dict())
            safetensors.torch.save_file(tensors, str(tmp / OPTIM_FILE), metadata={"optim": json.dumps(meta)})
            _fsync_file(tmp / OPTIM_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        _fsync_file(tmp / STATE_FILE)
        _fsync_dir(tmp)
    except Exception as e:  # disk full, permissions: the previous checkpoint stays untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"Could not write the {which} checkpoint in {root} ({e}): free some disk space "
                              f"or fix permissions, then resume; the previous checkpoint is kept.") from e
    target = root / which
    old = root / f".old-{which}-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(root)
    for p in root.glob(f".old-{which}-*"):  # this one, and any a crashed save left
        shutil.rmtree(p, ignore_errors=True)
    return target


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint file {ckpt / STATE_FILE} is unreadable ({e}): "
                              f"resume from another checkpoint or start a new run.") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"Checkpoint file {ckpt / STATE_FILE} has no step: "
                              f"resume from another checkpoint or start a new run.")
    return state


def load_weights(model: nn.Module, path: Path, device: str = "cpu") -> None:
    """Load model.safetensors into model; a corrupt, truncated or mismatched file names itself."""
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} is missing: train the run first or pick another checkpoint.")
    try:
        safetensors.torch.load_model(model, str(path), strict=True, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint file {path} is corrupt or truncated ({e}): "
                              f"use another checkpoint (latest/best) or retrain.") from None
    except RuntimeError as e:  # missing/unexpected keys or shape mismatch
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"Checkpoint file {path} does not match the run's model config ({first}): "
                              f"restore the run's config.toml or start a new run.") from None


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    try:
        tensors = safetensors.torch.load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["optim"])
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint file {path} is missing: start the run again without --resume.") from None
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"Checkpoint file {path} is corrupt or truncated ({e}): "
                              f"start the run again without --resume.") from None


def load_training_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        device: str = "cpu") -> dict[str, Any]:
    """Restore model and optimizer from RUN/ckpt/latest for resuming; return its state.json.

    Refuses (ConfigError) when the run's config.toml [model] differs from the one the checkpoint was
    trained with: the weights could not be loaded into it, or would silently mean something else.
    """
    run_dir = Path(run_dir)
    ckpt = checkpoint_dir(run_dir, "latest")
    if ckpt is None:
        raise CheckpointError(f"Run {run_dir} has no checkpoint to resume from: start it without --resume.")
    state = read_state(ckpt)
    check_model_config(state.get("model_config", {}), asdict(model.config), run_dir)
    (load_adapters if is_adapted(model) else load_weights)(model, ckpt / MODEL_FILE, device)
    load_optimizer(optimizer, ckpt / OPTIM_FILE)
    return state


def check_model_config(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """ConfigError naming the changed [model] fields, if any. A field the saved config lacks (a checkpoint
    older than the field) counts as its default."""
    saved = {**asdict(ModelConfig()), **saved}
    changed = [f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
               if saved.get(k) != current.get(k) and k != "dropout"]  # dropout only shapes training noise
    if changed:
        raise ConfigError(f"The model config of run {run_dir} changed since its checkpoint ({', '.join(changed)}): "
                          f"restore those values to resume, or start a new run.")


def load_model(run_dir: Path, which: str = "best", device: str = "cpu") -> tuple[nn.Module, RunConfig, Tokenizer]:
    """The model of a run's checkpoint (eval mode), its config and its tokenizer.

    which: "latest", "best" (falls back to latest when no eval has written a best yet) or "int8" (the
    quantized model engine.int8.save_int8 wrote; its layers are engine.quantize's).
    """
    rd = RunDir(run_dir)
    run_dir = rd.path
    if not rd.is_run():
        raise CheckpointError(f"{run_dir} is not a run directory (no {rd.config.name}): "
                              f"pick a run from `smallgpt runs list`.")
    cfg = RunConfig.load(rd.config)
    if not rd.tokenizer.is_file():
        raise CheckpointError(f"Run {run_dir} has no {rd.tokenizer.name}: copy the tokenizer it was trained with there.")
    tokenizer = Tokenizer.load(rd.tokenizer)
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise CheckpointError(f"The tokenizer {rd.tokenizer} has {tokenizer.vocab_size} tokens but the run's model "
                              f"was trained with {cfg.model.vocab_size}: restore the tokenizer.json the run was "
                              f"trained with.")
    if which not in CHECKPOINTS:
        raise CheckpointError(f"Unknown checkpoint '{which}': use latest, best or int8.")
    ckpt = find(run_dir, which)
    if ckpt is None and which == "int8":
        raise CheckpointError(f"Run {run_dir} has no int8 checkpoint yet: quantize it first (ctrl+t in the "
                              f"TUI's Generate tab, or `smallgpt quantize {rd.name}`).")
    if ckpt is None:
        raise CheckpointError(f"Run {run_dir} has no {which} checkpoint yet: train it (or wait for its first eval).")
    if cfg.lora.rank and which != "int8":  # adapters over the base run's weights, merged for inference
        model = build_for_training(cfg, fresh=False)
        load_adapters(model, ckpt / MODEL_FILE)
        return merge(model).to(device).eval(), cfg, tokenizer
    model = build_model(cfg.model)
    if which == "int8":
        state = read_state(ckpt)
        if state.get("format") != INT8_FORMAT:
            raise CheckpointError(f"Checkpoint {ckpt} is not a {INT8_FORMAT} checkpoint: run `smallgpt quantize` again.")
        check_model_config(state.get("model_config", {}), asdict(cfg.model), run_dir)
        model = quantize_model(model)
    load_weights(model, ckpt / MODEL_FILE, device)
    model.to(device).eval()
    return model, cfg, tokenizer


def checkpoint_stamp(run_dir: Path, which: str) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the directory `which` loads from, or None when there is none yet. A checkpoint is
    renamed into place (see the module docstring), so a new one has a new stamp."""
    path = find(run_dir, which)
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns) if st else None


class ModelCache:
    """Models a process keeps loaded, one per (run, checkpoint), each loaded once per version of its files:
    a view asking again after the trainer wrote a new checkpoint gets the new one, with no invalidation.
    Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str], tuple[tuple[int, int] | None, Any]] = {}

    def load(self, run_dir: Path, which: str) -> tuple[nn.Module, RunConfig, Tokenizer]:
        """load_model(run_dir, which), from memory while the checkpoint's files are unchanged."""
        key = (str(Path(run_dir).resolve()), which)
        stamp = checkpoint_stamp(run_dir, which)
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None and stamp is not None and hit[0] == stamp:
                return hit[1]
        loaded = load_model(run_dir, which)  # raises CheckpointError naming what is missing
        with self._lock:
            self._loaded[key] = (stamp, loaded)
        return loaded


def build_for_training(cfg: RunConfig, fresh: bool) -> nn.Module:
    """A run's model with its trainable scope set (engine.lora.set_trainable): base weights loaded from
    task.init_from for a fresh start, and always for LoRA (its checkpoints hold only the adapters)."""
    model = build_model(cfg.model)
    if cfg.task.init_from and (fresh or cfg.lora.rank):
        load_base(model, cfg.task.init_from)
    set_trainable(model, cfg)
    return model


def parse_init_from(spec: str) -> tuple[Path, str]:
    """"RUN[:latest|best]" -> (the run directory, the checkpoint; best by default)."""
    name, _, which = spec.rpartition(":")
    return (resolve_run(name), which) if which in ("best", "latest") else (resolve_run(spec), "best")


def init_source(init_from: str) -> dict[str, Any]:
    """The provenance of a run's starting weights for its start event: the base's run dir, checkpoint, step
    and (an imported base) its import record."""
    base_dir, which = parse_init_from(init_from)
    ckpt = find(base_dir, which)
    state = read_state(ckpt) if ckpt is not None else {}
    return {"run": str(base_dir), "checkpoint": which, "step": state.get("step"), "import": state.get("import")}


def load_base(model: nn.Module, init_from: str) -> None:
    """Copy the base run's weights (a LoRA base merged) into model; a task head of either side is skipped."""
    base_dir, which = parse_init_from(init_from)
    base, _, _ = load_model(base_dir, which)
    own = model.state_dict()
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("score.")}
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"The base run {base_dir} does not fit this run's model ({wrong[0]}): fine-tune a new "
                              f"run from it with `smallgpt finetune`.")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def encode_bytes(t: torch.Tensor) -> str:
    """A uint8 tensor (an RNG state) as base64 text for state.json."""
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def decode_bytes(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """optimizer.state_dict() -> (flat tensors "state.<param>.<key>", JSON metadata for everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, per_param in sd["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _clean_leftovers(root: Path, which: str) -> None:
    """Remove temp dirs of crashed saves; keep an .old dir while it is the only complete copy."""
    for p in root.glob(f".tmp-{which}-*"):
        shutil.rmtree(p, ignore_errors=True)
    if (root / which / STATE_FILE).is_file():
        for p in root.glob(f".old-{which}-*"):
            shutil.rmtree(p, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
