"""LoRA adapters on Linear layers (Hu et al. 2021): y = W x + b + (alpha / r) * B A dropout(x).

A LoRALinear IS an nn.Linear whose weight and bias keep their names (a base checkpoint loads unchanged)
plus lora_A [r, in] (Kaiming-uniform, as PEFT) and lora_B [out, r] (zeros, so a fresh adapter changes
nothing). The base is frozen; the adapters (and a task's own head) train, and a LoRA run's checkpoints hold
only those tensors (`adapter_tensors`): its base is the run's task.init_from. `merge` folds the adapters
into plain Linear layers; `export_peft` writes them as a PEFT adapter for the HF GPT-2 layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from .config import RunConfig
from .errors import CheckpointError, ConfigError

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.plain = type(base)  # what `merge` puts back (the GPT's Linear keeps its CPU decode path)
        self.scaling = alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # Identity at 0: a zero-probability Dropout still draws a mask in training.
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if w.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):  # a bf16 base (frozen_base_to)
            w, b = w.to(x.dtype), None if b is None else b.to(x.dtype)
        # In place: a Linear's backward needs its inputs, not its output, so the sum needs no new tensor.
        return F.linear(x, w, b).add_(
            F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B), alpha=self.scaling)

    def delta(self) -> Tensor:
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling


def targets_of(spec: str) -> list[str]:
    return [t.strip() for t in spec.split(",") if t.strip()]


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: str) -> list[str]:
    """Freeze every parameter of model, then wrap each nn.Linear whose name ends in a target with a
    trainable adapter (in place). Returns the wrapped module names."""
    names = targets_of(targets)
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear)]
    found = [(n, m) for n, m in linears if n.rsplit(".", 1)[-1] in names]
    for n, m in found:
        if id(m.weight) in tied:  # merging would change the embedding too
            raise ConfigError(f"lora.targets names {n}, which shares its weight with the token embedding: "
                              f"leave it out (adapt c_attn, c_proj, c_fc).")
    if not found:
        linear = sorted({n.rsplit(".", 1)[-1] for n, _ in linears})
        raise ConfigError(f"No Linear layer matches lora.targets '{targets}': this model's are "
                          f"{', '.join(linear)}.")
    for p in model.parameters():
        p.requires_grad_(False)
    for n, m in found:
        _set_module(model, n, LoRALinear(m, rank, alpha, dropout))
    return [n for n, _ in found]


def frozen_base_to(model: nn.Module, dtype: torch.dtype) -> None:
    """Store the adapted layers' frozen weights in dtype: training under bf16 autocast casts them to bf16 at
    every forward anyway, and nothing updates them, so an fp32 copy only costs memory (half of the model's)."""
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.weight.data = m.weight.data.to(dtype)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(dtype)


def is_adapted(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight and put a plain nn.Linear back (in place; returns model)."""
    for n, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            plain = m.plain(m.in_features, m.out_features, bias=m.bias is not None,
                              device=m.weight.device, dtype=m.weight.dtype)
            with torch.no_grad():
                plain.weight.copy_((m.weight.float() + m.delta()).to(m.weight.dtype))
                if m.bias is not None:
                    plain.bias.copy_(m.bias)
            plain.weight.requires_grad_(m.weight.requires_grad)
            _set_module(model, n, plain)
    return model


def adapter_tensors(model: nn.Module) -> dict[str, Tensor] | None:
    """What a LoRA run's checkpoint holds: the trainable tensors (adapters, a task head); None without LoRA."""
    if not is_adapted(model):
        return None
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_adapters(model: nn.Module, path: Path, device: str = "cpu") -> None:
    """Load an adapter-only checkpoint into an adapted model: exactly its trainable tensors."""
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"Checkpoint file {path} is missing, corrupt or truncated ({e}): "
                              f"use another checkpoint (latest/best) or retrain.") from None
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != wanted or any(tensors[n].shape != params[n].shape for n in wanted):
        raise CheckpointError(f"Checkpoint file {path} does not hold this run's adapters (its LoRA settings "
                              f"changed?): restore the run's config.toml or start a new run.")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


def trainable_counts(model: nn.Module) -> dict[str, Any]:
    params = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"trainable": trainable, "total": total, "share": trainable / max(total, 1)}


def export_peft(model: nn.Module, out_dir: Path, rank: int, alpha: float, dropout: float,
                base: str, task_type: str = "CAUSAL_LM") -> Path:
    """The adapters as a PEFT LoRA adapter for the HF GPT-2 layout (adapter_config.json +
    adapter_model.safetensors). Module names are GPT-2's already; GPT-2's Conv1D stores weights [in, out],
    which PEFT handles with fan_in_fan_out (the adapters themselves are the same matrices)."""
    tensors: dict[str, Tensor] = {}
    modules: set[str] = set()
    for n, m in model.named_modules():
        if isinstance(m, LoRALinear):
            modules.add(n.rsplit(".", 1)[-1])
            for part in ("lora_A", "lora_B"):
                tensors[f"base_model.model.{n}.{part}.weight"] = getattr(m, part).detach().float().contiguous()
    if not tensors:
        raise ConfigError("This run has no LoRA adapters to export: fine-tune with --lora-rank, or export the "
                          "whole model.")
    saved = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    for n in saved:  # a task head trained with the adapters (PEFT's modules_to_save)
        tensors[f"base_model.model.{n}"] = dict(model.named_parameters())[n].detach().float().contiguous()
    config = {"peft_type": "LORA", "task_type": task_type, "r": rank, "lora_alpha": alpha,
              "lora_dropout": dropout, "target_modules": sorted(modules), "fan_in_fan_out": True,
              "bias": "none", "base_model_name_or_path": base, "inference_mode": True,
              "init_lora_weights": True, "modules_to_save": sorted({n.rsplit(".", 1)[0] for n in saved}) or None,
              "use_rslora": False, "use_dora": False}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / PEFT_WEIGHTS), metadata={"format": "pt"})
    (out_dir / PEFT_CONFIG).write_text(json.dumps(config, indent=2))
    return out_dir


def set_trainable(model: nn.Module, cfg: RunConfig) -> None:
    """requires_grad per the run's [task] train / [lora]: LoRA adapters (+ a classifier's head), the head,
    the last N blocks with the final LayerNorm (+ head), or all."""
    head = getattr(model, "score", None)
    if cfg.lora.rank:
        lo = cfg.lora
        apply_lora(model, lo.rank, lo.alpha, lo.dropout, lo.targets)
    else:
        scope = cfg.task.train or ("last-1" if cfg.task.kind == "classify" else "all")
        if scope == "all":
            return
        for p in model.parameters():
            p.requires_grad_(False)
        if scope.startswith("last-"):
            n, blocks = int(scope[5:]), model.transformer.h
            if n > len(blocks):
                raise ConfigError(f"task.train {scope} asks for more blocks than the model's {len(blocks)}: use "
                                  f"last-{len(blocks)} or all.")
            for m in [*blocks[len(blocks) - n:], model.transformer.ln_f]:
                for p in m.parameters():
                    p.requires_grad_(True)
    if head is not None:
        head.weight.requires_grad_(True)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
