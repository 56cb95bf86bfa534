"""A run's int8 checkpoint: quantize one of its checkpoints, compare it with the fp32 one, write ckpt/int8.

The int8 layers themselves are engine.quantize; loading is `engine.checkpoint.load_model(run_dir, "int8")`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from . import checkpoint as ckpt
from .evaluate import evaluate_model
from .quantize import FORMAT, INT8, QuantLinear, int_mm_min_rows, measure_speed, quantize_model, quantized_names

REPORT_EVAL_TOKENS = 1 << 15  # validation tokens per model in the report: a stable loss in seconds on a CPU

Progress = Callable[[float, str], None]


def save_int8(run_dir: Path, which: str = "best", eval_tokens: int = REPORT_EVAL_TOKENS,
              progress: Progress | None = None, decode_tokens: int = 64, repeats: int = 3) -> dict[str, Any]:
    """Quantize the run's `which` checkpoint, write RUN/ckpt/int8/ atomically and return the report:
    fp32_bytes (of the fp32 model), int8_bytes (of the int8 checkpoint), size_ratio, fp32/int8 val loss and perplexity, prefill and decode tokens/s
    of each (see measure_speed for decode_tokens and repeats), and whether the int8 matmul ran on
    `_int_mm`."""

    def tell(frac: float, label: str) -> None:
        if progress is not None:
            progress(frac, label)

    run_dir = Path(run_dir)
    tell(0.0, "loading")
    model, cfg, tokenizer = ckpt.load_model(run_dir, which)
    source = ckpt.find(run_dir, which)
    source_state = ckpt.read_state(source)
    tell(0.05, "quantizing")
    qmodel = quantize_model(copy.deepcopy(model))

    report: dict[str, Any] = {"source": str(source)}
    models = {"fp32": model, INT8: qmodel}
    for frac, (name, m) in zip((0.1, 0.3), models.items()):
        tell(frac, f"evaluating {name}")
        ev = evaluate_model(m, cfg, tokenizer, max_tokens=eval_tokens)
        report[f"{name}_val_loss"] = ev["val_loss"]
        report[f"{name}_perplexity"] = ev["perplexity"]
    # Timing rounds alternate between the two models, so a burst of load from other processes on a shared
    # machine slows both rather than skewing the ratio; each keeps its best round.
    for r in range(repeats):
        for name, m in models.items():
            tell(0.5 + 0.4 * r / repeats, f"timing {name}")
            for key, value in measure_speed(m, decode_tokens=decode_tokens, repeats=1).items():
                report[f"{name}_{key}"] = max(report.get(f"{name}_{key}", 0.0), value)
    report["eval_tokens"] = ev["tokens"]
    report["perplexity_delta"] = report["int8_perplexity"] / report["fp32_perplexity"] - 1.0
    report["int_mm"] = any(int_mm_min_rows(torch.device("cpu"), m.in_features, m.out_features) is not None
                           for m in qmodel.modules() if isinstance(m, QuantLinear))

    tell(0.95, "writing")
    names = quantized_names(qmodel)
    state = {"step": source_state["step"], "format": FORMAT, "source": which, "source_path": str(source),
             "model_config": asdict(cfg.model), "quantized": names[INT8], "kept_fp32": names["fp32"],
             "report": report}
    path = ckpt.save_checkpoint(run_dir, INT8, qmodel, None, state)
    # The fp32 model's tensors (a tied weight once), not its checkpoint file: a LoRA run's holds only adapters.
    tensors = {t.data_ptr(): t for t in model.state_dict().values() if t.is_floating_point()}
    report["fp32_bytes"] = sum(t.numel() * 4 for t in tensors.values())
    report["int8_bytes"] = (path / ckpt.MODEL_FILE).stat().st_size
    report["size_ratio"] = report["int8_bytes"] / report["fp32_bytes"]
    report["path"] = str(path)
    tell(1.0, "done")
    return report
