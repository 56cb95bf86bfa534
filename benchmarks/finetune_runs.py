"""Task data and fine-tuned runs for the fine-tuning TUI tests and ui_generate.py's chat view: small files in
the tiny run's alphabet, and runs made with engine.finetune without a training process (seeded, so screens
repeat)."""

from __future__ import annotations

import json
from pathlib import Path

ANIMALS = ["cat", "dog"]
PLACES = ["mat", "log", "rug", "box", "bed"]


def write_classify_data(home: Path) -> Path:
    """40 labelled texts (text,label CSV): which animal sat."""
    rows = ["text,label"]
    for i in range(40):
        animal, place = ANIMALS[i % 2], PLACES[i % 5]
        rows.append(f"the {animal} sat on the {place},{animal}")
    path = home / "animals.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def write_chat_data(home: Path) -> Path:
    """40 chat records (JSONL messages): a question about a place and its animal as the answer."""
    lines = []
    for i in range(40):
        animal, place = ANIMALS[i % 2], PLACES[i % 5]
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"who sat on the {place}"},
                                              {"role": "assistant", "content": f"the {animal}"}]}))
    path = home / "chat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_finetuned_run(base: Path, kind: str, data: Path, name: str, seed: int = 0) -> Path:
    """A classify (head trained) or instruct run from `base`, its checkpoints the untrained start."""
    import torch

    from engine import checkpoint
    from engine.config import RunConfig
    from engine.config import finetune_config
    from engine.finetune import create_finetune_run

    cfg = finetune_config(kind, f"{base}:best", str(data), {"task": {"train": "head" if kind == "classify" else ""}})
    run = create_finetune_run(cfg, name=name)
    cfg = RunConfig.load(run / "config.toml")
    torch.manual_seed(seed)
    model = checkpoint.build_for_training(cfg, fresh=True)
    state = {"step": 0, "model_config": cfg.to_dict()["model"]}
    for which in ("latest", "best"):
        checkpoint.save_checkpoint(run, which, model, None, state)
    return run
