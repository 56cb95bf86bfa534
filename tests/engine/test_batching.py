"""Continuous batching: requests that share decode steps (joining a running batch at different times,
sliding their windows, stopping at different points) give the text `sampler.generate` gives alone, for
the same seed; a batched step's logits equal one-sequence steps'; a cancelled request frees its row."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.batching import Batcher, QueueFull, Request
from engine.config import ModelConfig
from engine.models import build_model
from engine.sampler import SamplingConfig, generate_text

from test_sampler import TOK  # tests/engine is on sys.path (no packages under tests/)


def tiny(kind: str = "gpt", block_size: int = 16):
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=TOK.vocab_size,
                      dropout=0.0)
    return build_model(cfg).eval()


class Collector:
    """A request's deliveries, and an event set when it finishes."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.finish = ""
        self.done = threading.Event()

    def __call__(self, tokens, finish: str) -> None:
        self.pieces += [t.text for t in tokens]
        if finish:
            self.finish = finish
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(self.pieces)


CASES = [  # prompt, sampling: different lengths, sliding past block_size 16, greedy, top-p, stop strings
    ("hello", SamplingConfig(max_new_tokens=40, temperature=1.0, seed=1)),
    ("", SamplingConfig(max_new_tokens=5, temperature=0.0)),
    ("a much longer prompt than the block", SamplingConfig(max_new_tokens=30, temperature=0.9, top_p=0.9, seed=7)),
    ("xy", SamplingConfig(max_new_tokens=25, temperature=1.2, top_k=20, repetition_penalty=1.3, seed=3)),
    ("stop", SamplingConfig(max_new_tokens=60, temperature=1.0, seed=5, stop=["e", "q"])),
]


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_batched_requests_match_generate(kind):
    model = tiny(kind)
    expected = [generate_text(model, TOK, p, cfg) for p, cfg in CASES]
    batcher = Batcher(model, TOK, rows=3, max_queue=8)  # fewer rows than requests: some wait, then join
    collectors = [Collector() for _ in CASES]
    for (prompt, cfg), c in zip(CASES, collectors):
        batcher.submit(Request(prompt, cfg, c))
    batcher.start()
    try:
        for c in collectors:
            assert c.done.wait(60)
    finally:
        batcher.close()
    assert [c.text for c in collectors] == expected
    assert collectors[1].finish in ("stop", "length")
    assert batcher.live == [] and not batcher.waiting


def test_step_rows_equals_one_sequence_steps():
    """Rows at different positions in one step: each row's logits are those of its own B=1 cache."""
    model = tiny("gpt", block_size=32)
    prompts = [[1, 2, 3, 4, 5], [9], [7, 7, 7, 7, 7, 7, 7, 7, 7]]
    nxt = [11, 12, 13]
    state = model.init_state(4)
    with torch.inference_mode():
        for row, p in enumerate(prompts):
            model.prefill_row(torch.tensor([p]), state, row)
        batched = model.step_rows(torch.tensor(nxt), state, torch.tensor([len(p) for p in prompts]))
        for row, (p, t) in enumerate(zip(prompts, nxt)):
            alone, _ = model.step(torch.tensor([p + [t]]), model.init_state(1))
            torch.testing.assert_close(batched[row], alone[0, -1], atol=1e-5, rtol=1e-4)


def test_cancel_frees_the_row_and_the_queue_is_bounded():
    model = tiny("gpt")
    batcher = Batcher(model, TOK, rows=1, max_queue=1)
    gate = threading.Event()
    first = Collector()

    def slow(tokens, finish):  # holds the batcher's thread until the test has queued the others
        gate.wait(10)
        first(tokens, finish)

    r1 = batcher.submit(Request("a", SamplingConfig(max_new_tokens=10_000, temperature=1.0), slow))
    waiting = Collector()
    batcher.submit(Request("b", SamplingConfig(max_new_tokens=3, temperature=0.0), waiting))
    with pytest.raises(QueueFull):
        batcher.submit(Request("c", SamplingConfig(max_new_tokens=3), Collector()))
    batcher.start()
    gate.set()
    r1.cancel()
    try:
        assert first.done.wait(30) and first.finish == "cancelled"
        assert waiting.done.wait(30) and waiting.finish in ("stop", "length")
        assert len(first.pieces) < 10_000
    finally:
        batcher.close()
    assert batcher.live == []
