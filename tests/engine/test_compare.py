"""Checkpoint comparison: the JS distance on textbook cases, a head whose weights were not touched ranks at
distance 0 and a deliberately changed one first, and mismatched models are refused in one sentence."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine.compare import compare_prompt, head_distances, js_distance, rank_heads, row_distances
from engine.config import ModelConfig
from engine.errors import ConfigError
from engine.models import build_model

PROMPT = "the cat sat on the mat. the dog sat on the log."


class CharTok:
    """What compare_prompt uses of a tokenizer, over a fixed alphabet."""

    def __init__(self, alphabet: str = "abcdefghijklmnopqrstuvwxyz .\n") -> None:
        self.alphabet = alphabet

    def encode(self, text: str) -> list[int]:
        return [self.alphabet.index(c) for c in text]

    def id_to_token(self, i: int) -> str:
        return self.alphabet[i]

    def sha256(self) -> str:
        return self.alphabet


def gpt(seed: int = 0, **over) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"kind": "gpt", "vocab_size": 29, "n_layer": 2, "n_head": 3, "n_embd": 24, "block_size": 64,
                         **over})
    model = build_model(cfg).eval()
    with torch.no_grad():  # weights well above the init scale, so attention is far from uniform
        for p in model.parameters():
            p.mul_(8.0)
    return model


def test_js_distance_on_textbook_cases():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    q = np.array([[0.0, 1.0], [0.5, 0.5], [0.75, 0.25]])
    d = js_distance(p, q)
    # Disjoint supports: 1 bit of divergence; identical: 0; the third by hand: 1 - H2(0.25) bits.
    h = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))
    np.testing.assert_allclose(d, [1.0, 0.0, np.sqrt(1 - h)], atol=1e-12)
    np.testing.assert_allclose(js_distance(q, p), d)  # symmetric
    # Row 0 of a causal map is [1, 0, ...] in every head: it never counts towards a head's change.
    rows = row_distances(np.eye(3)[None, None], np.tril(np.ones((3, 3)))[None, None] / np.arange(1, 4)[:, None])
    assert rows[0, 0, 0] == 0 and np.all(rows[0, 0, 1:] > 0)
    assert head_distances(rows)[0, 0] == pytest.approx(rows[0, 0, 1:].mean())


def test_rank_heads_puts_the_largest_change_first_and_keeps_ties_in_order():
    assert rank_heads(np.array([[0.0, 0.3], [0.3, 0.9]])) == [(1, 1), (0, 1), (1, 0), (0, 0)]


def test_an_untouched_head_is_at_distance_zero_and_the_changed_one_ranks_first():
    a = gpt()
    b = copy.deepcopy(a)
    n_embd, hd = 24, 8
    layer, head = 1, 2  # the last layer: no other head sees its output, so only it can change
    with torch.no_grad():
        w = b.transformer.h[layer].attn.c_attn.weight  # rows: q [0, C), k [C, 2C), v [2C, 3C)
        g = torch.Generator().manual_seed(1)
        for part in (0, 1):  # q and k of that head
            rows = slice(part * n_embd + head * hd, part * n_embd + (head + 1) * hd)
            w[rows] = torch.randn(w[rows].shape, generator=g) * 8 * w[rows].std()
    tok = CharTok()
    cmp = compare_prompt(a, tok, b, tok, PROMPT, label_a="base", label_b="tuned")
    assert cmp.ranking[0] == (layer, head)
    assert cmp.distance[layer, head] > 0.1
    untouched = [(l, h) for l in range(2) for h in range(3) if (l, h) != (layer, head)]
    for l, h in untouched:
        assert cmp.distance[l, h] == pytest.approx(0.0, abs=1e-6), (l, h)
    assert cmp.rank_of(layer, head) == 0
    np.testing.assert_allclose(cmp.diff, cmp.a.attn - cmp.b.attn)
    assert cmp.a.tokens == cmp.b.tokens
    arrays = cmp.to_arrays()
    assert arrays["js_distance"].shape == (2, 3) and arrays["js_rows"].shape == (2, 3, len(PROMPT))
    assert tuple(arrays["ranking"][0]) == (layer, head) and str(arrays["label_b"]) == "tuned"


def test_the_same_checkpoint_twice_changes_nothing():
    a = gpt()
    cmp = compare_prompt(a, CharTok(), a, CharTok(), PROMPT)
    assert np.all(cmp.distance == 0)


@pytest.mark.parametrize("b, tok_b, words", [
    (lambda: gpt(n_head=2), CharTok(), "differ in shape (layers x heads, block size: 2x3, 64 vs 2x2, 64)"),
    (lambda: gpt(block_size=32), CharTok(), "2x3, 64 vs 2x3, 32"),
    (lambda: gpt(), CharTok("zyxwvutsrqponmlkjihgfedcba .\n"), "use different tokenizers"),
    (lambda: build_model(ModelConfig(kind="lstm", vocab_size=29, n_layer=1, n_embd=16, block_size=64)), CharTok(),
     "B is an LSTM"),
])
def test_mismatched_models_are_refused_in_one_sentence(b, tok_b, words):
    with pytest.raises(ConfigError) as e:
        compare_prompt(gpt(), CharTok(), b(), tok_b, PROMPT)
    message = str(e.value)
    assert words in message and message.count(". ") == 0 and message.endswith(".")
