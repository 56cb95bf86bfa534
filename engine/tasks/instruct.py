"""Instruction tuning: records rendered with a prompt template, an end-of-text token after each response,
and the loss on response tokens only (prompt and padding targets are -1, the ignore index, so they add
exactly nothing to the loss or its gradient). Batches are length-bucketed and padded to their longest.

Templates are data, stored in RUN/task.json, so `smallgpt chat` renders exactly what the run was tuned on:
seed 004's Alpaca template for {instruction, input, output} records, a chat template for {messages}.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from ..config import RunConfig
from ..errors import CorpusError
from ..sampler import SamplingConfig, generate_text
from ..tokenizer import SPECIAL_TOKENS, Tokenizer
from .base import Batch, Task, bucketed
from .records import TaskData

TEMPLATES: dict[str, dict[str, str]] = {
    "alpaca": {"name": "alpaca",
               "user": "Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n### Instruction:\n{content}{input}\n\n### Response:\n",
               "input": "\n\n### Input:\n{input}", "system": "", "assistant": ""},
    "chat": {"name": "chat", "system": "### System:\n{content}\n\n", "user": "### User:\n{content}\n\n",
             "input": "\n\n{input}", "assistant": "### Assistant:\n"},
}
Segment = tuple[str | None, bool]  # (text, or None for the end-of-text token; is it a response part)


def messages_of(record: dict[str, Any]) -> list[dict[str, str]]:
    """A record as messages: an Alpaca record is one user turn (with its input) and one assistant turn."""
    if "messages" in record:
        return record["messages"]
    return [{"role": "user", "content": record["instruction"], "input": record.get("input", "")},
            {"role": "assistant", "content": record["output"]}]


def render(template: dict[str, str], messages: list[dict[str, str]], generation_prompt: bool = False
           ) -> list[Segment]:
    """The template applied to messages: prompt text (not learned), responses and end-of-text (learned).
    generation_prompt adds the header that asks for the next assistant turn."""
    out: list[Segment] = []

    def prompt(text: str) -> None:
        if out and out[-1][1] is False and out[-1][0] is not None:
            out[-1] = (out[-1][0] + text, False)  # one prompt segment: encoded as a whole, as when chatting
        elif text:
            out.append((text, False))

    for m in messages:
        if m["role"] == "assistant":
            prompt(template["assistant"])
            out += [(m["content"], True), (None, True)]
        elif template[m["role"]]:
            extra = template["input"].format(input=m["input"]) if m.get("input") else ""
            prompt(template[m["role"]].format(content=m["content"], input=extra))
    if generation_prompt:
        prompt(template["assistant"])
    return out


def encode(tokenizer: Tokenizer, segments: list[Segment]) -> tuple[list[int], list[bool]]:
    return encode_many(tokenizer, [segments])[0]


def encode_many(tokenizer: Tokenizer, records: list[list[Segment]]) -> list[tuple[list[int], list[bool]]]:
    """(ids, is-target per id) of each record's segments; the texts are encoded in one batch."""
    texts = [text for segments in records for text, _ in segments if text is not None]
    pieces = iter(tokenizer.encode_batch(texts))
    out = []
    for segments in records:
        ids: list[int] = []
        target: list[bool] = []
        for text, learned in segments:
            piece = [tokenizer.eos_id] if text is None else next(pieces)
            ids += piece
            target += [learned] * len(piece)
        out.append((ids, target))
    return out


def prompt_text(template: dict[str, str], messages: list[dict[str, str]]) -> str:
    """What the model is given to answer the last user turn of messages (responses joined by end-of-text)."""
    return "".join(SPECIAL_TOKENS[0] if text is None else text
                   for text, _ in render(template, messages, generation_prompt=True))


def collate(seqs: list[tuple[list[int], list[bool]]], pad_id: int) -> Batch:
    """x [B, L] right-padded, y [B, L] the next token where it is a response token, else -1."""
    width = max(len(ids) for ids, _ in seqs) - 1
    x = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), width), -1, dtype=torch.long)
    for i, (ids, target) in enumerate(seqs):
        n = len(ids) - 1
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, :n] = torch.where(torch.tensor(target[1:]), torch.tensor(ids[1:]), -1)
    return x, y


class InstructTask(Task):
    kind = "instruct"

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer, data: TaskData, info: dict[str, Any]):
        self.tokenizer, self.info, self.template = tokenizer, info, info["template"]
        self.n_samples = cfg.task.eval_samples
        self.records = data.records
        limit = cfg.model.block_size + 1  # x and y are the first and last block_size of block_size + 1 tokens
        self.split: dict[str, list[tuple[list[int], list[bool]]]] = {}
        self.heldout = [data.records[i] for i in data.parts["val"]]
        self.dropped = 0
        for name, part in data.parts.items():
            seqs = []
            encoded = encode_many(tokenizer, [render(self.template, messages_of(data.records[i])) for i in part])
            for ids, target in encoded:
                ids, target = ids[:limit], target[:limit]
                if any(target[1:]):
                    seqs.append((ids, target))
                else:  # the prompt alone fills the block: nothing of the response would be learned
                    self.dropped += 1
            if not seqs and part:
                need = min(t.index(True) if True in t else len(t) for _, t in encoded)  # the first response token's index
                raise CorpusError(f"Every {name} record's prompt is longer than the base's block size "
                                  f"({cfg.model.block_size} tokens; the shortest needs {need}): fine-tune a run "
                                  f"trained with a block size of {need} or more (--block-size), or shorten the "
                                  f"records.")
            self.split[name] = seqs
        self.order = {n: sorted(range(len(s)), key=lambda i: len(s[i][0])) for n, s in self.split.items()}

    def start_fields(self) -> dict[str, Any]:
        return {"template": self.template["name"], "split": self.info["split"], "dropped_too_long": self.dropped}

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        seqs = self.split["train"]
        return collate([seqs[i] for i in bucketed(self.order["train"], batch_size, gen)], self.tokenizer.pad_id)

    def eval_sets(self, batch_size: int, n_batches: int, gen: torch.Generator) -> dict[str, list[Batch]]:
        return {name: [collate([self.split[name][i] for i in bucketed(self.order[name], batch_size, gen)],
                               self.tokenizer.pad_id) for _ in range(n_batches)]
                for name in ("val", "train")}

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        seqs, order = self.split["val"], self.order["val"]
        return (collate([seqs[i] for i in order[j:j + batch_size]], self.tokenizer.pad_id)
                for j in range(0, len(order), batch_size))

    def sample(self, model: torch.nn.Module, max_tokens: int) -> str | None:
        """Greedy answers to the first held-out instructions, each after its question."""
        scfg = SamplingConfig(max_new_tokens=max_tokens, temperature=0.0)
        out = []
        for record in self.heldout[:self.n_samples]:
            messages = messages_of(record)
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            question = messages[last - 1]["content"] if last else ""
            answer = generate_text(model, self.tokenizer, prompt_text(self.template, messages[:last]), scfg)
            out.append(f"> {question}\n{answer.strip()}")
        return "\n\n".join(out) or None
