"""Training tasks behind one small interface the trainer calls.

    lm        next-token prediction on a corpus (fixed windows)
    classify  labelled texts -> a class head on the last real token; accuracy, confusion matrix
    instruct  instruction/chat records -> a prompt template; loss on response tokens only

A task builds batches (tuples of tensors: `model(*batch) -> (logits, loss)`), draws its fixed eval
batches, adds its metrics to the eval event, writes samples and, at the end, a report. Every draw uses
only the generator it is given, so a run resumes exactly. A classify/instruct run keeps what its task
needs in RUN/task.json (labels, template, data fingerprint, the seeded split), written when the run is
created and checked against the data when it trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..corpora import load_corpus
from ..errors import ConfigError, RunError
from ..rundir import RunDir, read_task_info  # noqa: F401 (engine.tasks.read_task_info for its callers)
from ..tokenizer import Tokenizer
from .base import Batch, Task, bucketed
from .classify import ClassifyTask, balanced
from .instruct import TEMPLATES, InstructTask, messages_of, prompt_text
from .lm import LMTask
from .records import TaskData, load_task_data, split

__all__ = ["Batch", "Task", "bucketed", "make_task", "task_info", "read_task_info", "write_task_info", "sample_text"]


def make_task(cfg: RunConfig, tokenizer: Tokenizer, run_dir: Path | None = None) -> Task:
    """The run's task, its data loaded (and, given the run, checked against RUN/task.json)."""
    if cfg.task.kind == "lm":
        return LMTask(cfg, tokenizer)
    data, info = task_info(cfg)
    if run_dir is not None:
        saved = read_task_info(run_dir)
        for key in ("fingerprint", "labels", "split"):
            if info.get(key) != saved.get(key):
                raise RunError(f"The task data {cfg.data.corpus} changed since run {run_dir} was created ({key} "
                               f"differs): restore it, or fine-tune a new run.")
    if cfg.task.kind == "classify":
        return ClassifyTask(cfg, tokenizer, data, info)
    return InstructTask(cfg, tokenizer, data, info)


def task_info(cfg: RunConfig) -> tuple[TaskData, dict[str, Any]]:
    """(the task data, what RUN/task.json records about it): format, fingerprint, labels, template, split."""
    t = cfg.task
    data = load_task_data(cfg.data.corpus, t.kind, t.text_col, t.label_col)
    records = data.records
    info: dict[str, Any] = {"task": t.kind, "data": cfg.data.corpus, "format": data.fmt}
    if t.kind == "classify":
        info["labels"] = sorted({r["label"] for r in records})
        if len(info["labels"]) < 2:
            raise ConfigError(f"{cfg.data.corpus} has one label ({info['labels'][0]}): a classifier needs two or "
                              f"more.")
        if t.balance:
            records = data.records = balanced(records, cfg.train.seed)
    else:
        info["template"] = TEMPLATES["chat" if data.fmt == "chat" else "alpaca"]
    parts = split(len(records), cfg.data.val_ratio, t.test_ratio, cfg.train.seed)
    info["fingerprint"] = data.fingerprint()
    info["split"] = {"seed": cfg.train.seed, **{k: len(v) for k, v in parts.items()}}
    data.parts = parts
    return data, info


def write_task_info(run_dir: Path, info: dict[str, Any]) -> None:
    RunDir(run_dir).task.write_text(json.dumps(info, indent=1, ensure_ascii=False))


def sample_text(cfg: RunConfig) -> str:
    """A text the run reads, for a view that needs one (Inspect's empty prompt): the start of a language model's
    corpus; a task run's first held-out record as its model sees it (a classify text, an instruct prompt)."""
    if cfg.task.kind == "lm":
        return next(iter(load_corpus(cfg.data.corpus).iter_text(chunk_chars=4096)), "")
    data, info = task_info(cfg)
    record = data.records[(data.parts["val"] or data.parts["train"])[0]]
    if cfg.task.kind == "classify":
        return record["text"]
    return prompt_text(info["template"], messages_of(record)[:-1])  # up to where the response starts
