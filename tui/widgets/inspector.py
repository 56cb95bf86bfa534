"""Inspector: the Inspect tab's background work. It inspects a prompt with a run's checkpoint (or compares
it with a second checkpoint B) in a thread worker and posts InspectionReady; it draws nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.widget import Widget

from tui import model_cache
from tui.workers import ReportsWorkerErrors, engine_work

DEFAULT_PROMPT_TOKENS = 48


@dataclass
class InspectResult:
    run_dir: Path
    checkpoint: str
    prompt: str
    inspection: Any  # engine.inspection.Inspection (of A in compare mode)
    requested: bool = True  # by the user (False: a live-mode refresh)
    comparison: Any = None  # engine.compare.Comparison with checkpoint B, in compare mode


@dataclass
class InspectionReady(Message):
    result: InspectResult


class Inspector(ReportsWorkerErrors, Widget):
    DEFAULT_CSS = "Inspector { display: none; }"

    @engine_work("inspect")
    def inspect(self, run_dir: Path, checkpoint: str, prompt: str, requested: bool = True,
                against: tuple[Path, str] | None = None) -> None:
        """Inspect the prompt with the run's checkpoint, or compare it with checkpoint `against`."""
        from engine.compare import compare_prompt
        from engine.inspection import inspect_prompt

        model, cfg, tokenizer = model_cache.load(run_dir, checkpoint)
        if not prompt:
            prompt = default_prompt(cfg, tokenizer)
        if against is None:
            result = InspectResult(run_dir, checkpoint, prompt, inspect_prompt(model, tokenizer, prompt), requested)
        else:
            model_b, _, tokenizer_b = model_cache.load(*against)
            cmp = compare_prompt(model, tokenizer, model_b, tokenizer_b, prompt, label(run_dir, checkpoint),
                                 label(*against))
            result = InspectResult(run_dir, checkpoint, prompt, cmp.a, requested, comparison=cmp)
        self.post_message(InspectionReady(result))


def label(run_dir: Path, checkpoint: str) -> str:
    return f"{run_dir.name}/{checkpoint}"


def default_prompt(cfg: Any, tokenizer: Any) -> str:
    """DEFAULT_PROMPT_TOKENS tokens (capped at the block size) of what the run's model reads: the start of its
    corpus, or the end of a task run's first held-out record, where its model answers."""
    from engine.tasks import sample_text

    n = min(DEFAULT_PROMPT_TOKENS, cfg.model.block_size)
    ids = tokenizer.encode(sample_text(cfg))
    return tokenizer.decode(ids[:n] if cfg.task.kind == "lm" else ids[-n:])
