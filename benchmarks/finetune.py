"""Fine-tuning rows (issue 18): every row compares two things measured here, back to back.

    python benchmarks/finetune.py [--rows lora,transfer] [--quick] [--json]

- lora: a GPT-2 124M shape (random weights, built offline), one batch of 2 x 256 tokens: training steps
  (forward, backward, AdamW) with LoRA rank 8 on c_attn,c_proj,c_fc vs full fine-tuning; tokens/s and
  peak RSS, each mode in its own process (alternated, best of two rounds); in the trainer's default dtype
  (bf16 autocast where the CPU has it) and in fp32.
- transfer: a small GPT pretrained on python-docs (bpe) vs the same model from random init, fine-tuned for
  the same steps: the classifier's test accuracy on python-kinds (and the seed's recipe: last block +
  final LayerNorm + head), the instruct run's response loss on python-instruct; `curve` is the val
  accuracy (classify) or response loss (instruct) at each eval.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def lora_step_speed(mode: str, steps: int, dtype: str) -> dict[str, float]:
    """In this process: tokens/s of `steps` training steps after one warm-up, and peak RSS."""
    import torch

    from engine.config import ModelConfig, RunConfig
    from engine.lora import apply_lora, frozen_base_to, trainable_counts
    from engine.models import build_model
    from engine.trainer import make_optimizer, pick_dtype

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304))
    if mode == "lora":
        apply_lora(model, 8, 16.0, 0.0, "c_attn,c_proj,c_fc")
    optimizer = make_optimizer(model, RunConfig(), "cpu")
    x = torch.randint(50257, (2, 257))
    dtype = pick_dtype(dtype, "cpu")
    if dtype == "bf16":  # as the trainer does
        frozen_base_to(model, torch.bfloat16)
    model.train()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            _, loss = model(x[:, :-1].contiguous(), x[:, 1:].contiguous())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"tokens_per_s": 512 * steps / sum(times[1:]), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable_share": trainable_counts(model)["share"], "dtype": dtype}


def row_lora(quick: bool, dtype: str) -> dict:
    steps = 1 if quick else 2
    best: dict[str, dict] = {}
    for _ in range(2):
        for mode in ("full", "lora"):
            out = subprocess.run([sys.executable, __file__, "--_mode", mode, "--_steps", str(steps), "--_dtype", dtype],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            prev = best.get(mode)
            best[mode] = r if prev is None or r["tokens_per_s"] > prev["tokens_per_s"] else \
                {**prev, "peak_rss_mb": min(prev["peak_rss_mb"], r["peak_rss_mb"])}
    return {"row": f"lora-{dtype}", "full": best["full"], "lora": best["lora"],
            "speedup": best["lora"]["tokens_per_s"] / best["full"]["tokens_per_s"],
            "rss_ratio": best["lora"]["peak_rss_mb"] / best["full"]["peak_rss_mb"]}


def row_transfer(quick: bool) -> dict:
    os.environ.setdefault("SMALLGPT_HOME", tempfile.mkdtemp(prefix="smallgpt-ft-bench-"))
    from engine import runs
    from engine.config import RunConfig, apply_overrides
    from engine.events import read_events
    from engine.config import finetune_config
    from engine.finetune import create_finetune_run
    from engine.trainer import train

    pre_steps, steps = (60, 30) if quick else (800, 300)
    t0 = time.perf_counter()
    cfg = apply_overrides(RunConfig(), {
        "model": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
        "data": dict(corpus="python-docs", tokenizer_kind="bpe", vocab_size=2048),
        "train": dict(max_steps=pre_steps, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                      eval_interval=pre_steps, eval_batches=4, sample_tokens=0)})
    base = runs.create_run(cfg, name="base")
    pretrain = train(base)
    out: dict = {"row": "transfer", "pretrain_steps": pre_steps, "pretrain_val_loss": pretrain["val_loss"],
                 "pretrain_s": round(time.perf_counter() - t0, 1), "steps": steps}

    def tune(kind: str, data: str, name: str, random_init: bool, scope: str) -> dict:
        run_dir = create_finetune_run(finetune_config(kind, "base", data, {
            "task": {"train": scope}, "train": {"max_steps": steps, "eval_interval": steps // 6, "sample_tokens": 0}}),
            name=name)
        if random_init:  # the same model, tokenizer, data and recipe; only the starting weights differ
            c = RunConfig.load(run_dir / "config.toml")
            c.task.init_from = ""
            c.save(run_dir / "config.toml")
        t = time.perf_counter()
        summary = train(run_dir)
        events = read_events(run_dir)
        report = next((e for e in events if e["event"] == "report"), {})
        curve = {e["step"]: round(e.get("val_accuracy", e["val_loss"]), 4) for e in events if e["event"] == "eval"}
        return {"val_loss": summary["val_loss"], "seconds": round(time.perf_counter() - t, 1), "curve": curve,
                **({"test_accuracy": report["test"]["accuracy"], "majority_baseline": report["test"]["majority_baseline"]}
                   if report else {})}

    out["classify_pretrained"] = tune("classify", "python-kinds", "cls-pre", False, "all")
    out["classify_random"] = tune("classify", "python-kinds", "cls-rand", True, "all")
    out["classify_pretrained_last1"] = tune("classify", "python-kinds", "cls-seed", False, "last-1")
    out["instruct_pretrained"] = tune("instruct", "python-instruct", "ins-pre", False, "all")
    out["instruct_random"] = tune("instruct", "python-instruct", "ins-rand", True, "all")
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default="lora,transfer")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--_mode")
    p.add_argument("--_steps", type=int, default=3)
    p.add_argument("--_dtype", default="auto")
    args = p.parse_args()
    if args._mode:
        print(json.dumps(lora_step_speed(args._mode, args._steps, args._dtype)))
        return 0
    rows = {"lora": lambda: [row_lora(args.quick, "auto"), row_lora(args.quick, "fp32")],
            "transfer": lambda: [row_transfer(args.quick)]}
    print(json.dumps([row for r in args.rows.split(",") for row in rows[r]()], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
