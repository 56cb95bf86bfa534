"""Inspection: attention maps are proper distributions, head metrics and badges recognise hand-built
previous-token and induction heads, the logit lens agrees with the model, the trainer logs `heads`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine.config import ModelConfig, apply_overrides, preset
from engine.errors import TokenizerError
from engine.inspection import (HeadMetrics, attention_maps, attention_metrics, badge, head_metrics, heads_event,
                               induction_probe, induction_scores, inspect_prompt)
from engine.models import build_model


class CharTok:
    """The two methods inspect_prompt uses, over a fixed alphabet (no training needed)."""

    alphabet = "abcdefghijklmnopqrstuvwxyz .\n"

    def encode(self, text: str) -> list[int]:
        return [self.alphabet.index(c) for c in text]

    def id_to_token(self, i: int) -> str:
        return self.alphabet[i]


def random_gpt(seed: int = 0, **over) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind="gpt", vocab_size=len(CharTok.alphabet), n_layer=2, n_head=2, n_embd=32, block_size=32)
    for k, v in over.items():
        setattr(cfg, k, v)
    model = build_model(cfg).eval()
    # Random weights 10x the init scale, so attention is far from uniform and the checks below bite.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10.0)
    return model


# ---- metrics on attention arrays --------------------------------------------------------------------


def test_metrics_of_textbook_patterns():
    t = 10
    prev = np.eye(t, k=-1)
    prev[0, 0] = 1.0
    sink = np.zeros((t, t))
    sink[:, 0] = 1.0
    uniform = np.tril(np.ones((t, t)))
    uniform /= uniform.sum(1, keepdims=True)
    m = attention_metrics(np.stack([prev, sink, uniform]))
    np.testing.assert_allclose(m["prev_token"], [1.0, 1 / (t - 1), np.mean(1 / np.arange(2, t + 1))])
    np.testing.assert_allclose(m["sink"], [1 / (t - 1), 1.0, np.mean(1 / np.arange(2, t + 1))])
    np.testing.assert_allclose(m["entropy"], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(m["distance"][:2], [1.0, np.mean(np.arange(1, t))])
    badges = [badge(HeadMetrics(0, h, m["entropy"][h], m["prev_token"][h], m["sink"][h], m["distance"][h], 0.0))
              for h in range(3)]
    assert badges == ["P", "S", "D"]
    assert badge(HeadMetrics(0, 0, 0.3, 0.2, 0.2, 3.0, 0.1)) == ""  # a mix of everything earns nothing


def test_induction_score_reads_the_token_after_the_previous_occurrence():
    n = 6
    a = np.zeros((2 * n, 2 * n))
    a[np.arange(2 * n), 0] = 1.0  # first copy: park on the first token
    for i in range(n, 2 * n):
        a[i] = 0.0
        a[i, i - n + 1] = 1.0
    assert induction_scores(a, n)[0] == pytest.approx(1.0)
    shifted = np.eye(2 * n, k=-1)  # a previous-token head is not an induction head
    assert induction_scores(shifted, n)[0] == pytest.approx(0.0)
    probe = induction_probe(vocab_size=50, n=n, seed=3)
    assert probe.shape == (1, 2 * n)
    assert torch.equal(probe[0, :n], probe[0, n:]) and len(set(probe[0, :n].tolist())) == n


def test_one_position_has_nothing_to_measure():
    m = attention_metrics(np.ones((2, 1, 1)))
    assert all(np.isnan(v).all() for v in m.values())
    hm = HeadMetrics(0, 0, *(float("nan"),) * 4, 0.1)
    assert badge(hm) == "" and json.dumps(hm.to_dict())  # NaN becomes null, valid JSON


# ---- attention of a real model ----------------------------------------------------------------------


def test_attention_rows_are_distributions_over_the_past():
    model = random_gpt()
    maps = attention_maps(model, CharTok().encode("the cat sat on the mat.\nthe end"))
    t = maps.shape[-1]
    assert maps.shape == (2, 2, t, t)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(maps, k=1) == 0.0)
    assert maps.min() >= 0.0
    assert not np.allclose(maps[0, 0], maps[0, 1])  # the heads differ: the maps are really per head


def _code(*dims: tuple[int, float], c: int) -> torch.Tensor:
    """A residual-stream vector with zero mean (each feature +v at d and -v at d + c/2): LayerNorm then only
    rescales it, by a factor the hand-set weights below undo."""
    x = torch.zeros(c)
    for d, v in dims:
        x[d] += v
        x[d + c // 2] -= v
    return x


def previous_token_gpt() -> torch.nn.Module:
    """1 layer, 2 heads: head 0 is wired to attend from each position to the one before; head 1 is all zeros
    (uniform attention). Positions are one-hot features, tokens contribute nothing."""
    c, block, hd = 32, 8, 16
    model = build_model(ModelConfig(kind="gpt", vocab_size=5, n_layer=1, n_head=2, n_embd=c, block_size=block))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2, model.transformer.ln_f):
            ln.weight.fill_(1.0)
        for pos in range(block):
            model.transformer.wpe.weight[pos] = _code((pos, 1.0), c=c)
        w = model.transformer.h[0].attn.c_attn.weight  # rows: q (0..c), k (c..2c), v (2c..3c)
        for pos in range(block):
            w[pos, pos] = 3.0  # query of position i: direction i
            w[c + pos + 1, pos] = 3.0  # key of position j: direction j + 1, so query i meets key i - 1
    return model.eval()


def test_hand_built_previous_token_head_scores_near_one_and_reads_p():
    model = previous_token_gpt()
    metrics = head_metrics(model, [i % 5 for i in range(8)])
    assert metrics[0][0].prev_token > 0.99
    assert metrics[0][0].badge == "P"
    assert metrics[0][0].distance == pytest.approx(1.0, abs=0.02)
    assert metrics[0][1].entropy == pytest.approx(1.0) and metrics[0][1].badge == "D"  # the zeroed head


def induction_gpt() -> torch.nn.Module:
    """The two-layer induction circuit by hand. Residual features: token t (dims 0..7), position p (8..23),
    previous token t (24..31). Layer 0 head 0 attends to the previous position and copies its token into the
    previous-token features; layer 1 head 0 attends from token t to the position whose previous token is t,
    the one after t's previous occurrence."""
    v, block, c, hd = 8, 16, 64, 32
    tok, pos, prev = 0, v, v + block
    model = build_model(ModelConfig(kind="gpt", vocab_size=v, n_layer=2, n_head=2, n_embd=c, block_size=block))
    sigma0 = math.sqrt(4 / c)  # std of token + position codes: LayerNorm divides by it
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [b.ln_1 for b in model.transformer.h] + [b.ln_2 for b in model.transformer.h] + [model.transformer.ln_f]:
            ln.weight.fill_(1.0)
        for t in range(v):
            model.transformer.wte.weight[t] = _code((tok + t, 1.0), c=c)
        for p in range(block):
            model.transformer.wpe.weight[p] = _code((pos + p, 1.0), c=c)
        a0 = model.transformer.h[0].attn
        for p in range(block):
            a0.c_attn.weight[p, pos + p] = 2.0
            a0.c_attn.weight[c + p + 1, pos + p] = 2.0
        for t in range(v):
            a0.c_attn.weight[2 * c + t, tok + t] = sigma0  # value: exactly 1 on the token's direction
            a0.c_proj.weight[prev + t, t] = 1.0
            a0.c_proj.weight[prev + t + c // 2, t] = -1.0
        a1 = model.transformer.h[1].attn
        for t in range(v):
            a1.c_attn.weight[t, tok + t] = 3.0
            a1.c_attn.weight[c + t, prev + t] = 3.0
    return model.eval()


def test_hand_built_induction_head_scores_high_and_reads_i():
    model = induction_gpt()
    metrics = head_metrics(model, induction_probe(8, 8)[0])
    assert metrics[0][0].badge == "P"
    assert metrics[1][0].induction > 0.85  # one query of the 8 splits its weight with position 0
    assert metrics[1][0].badge == "I"
    assert metrics[1][1].induction < 0.2  # the zeroed head attends uniformly


# ---- a whole inspection ----------------------------------------------------------------------------


def test_logit_lens_at_the_last_layer_is_the_models_own_distribution():
    model = random_gpt()
    ins = inspect_prompt(model, CharTok(), "the cat sat on the mat", top_k=5)
    t = len(ins.tokens)
    assert ins.attn.shape == (2, 2, t, t) and ins.lens_probs.shape == (3, t)  # embedding + 2 blocks
    np.testing.assert_array_equal(ins.lens_ids[-1], ins.topk_ids[:, 0])
    np.testing.assert_allclose(ins.lens_probs[-1], ins.topk_probs[:, 0], rtol=1e-5)
    with torch.no_grad():
        logits, _ = model(torch.tensor([CharTok().encode("the cat sat on the mat")]))
    probs = torch.softmax(logits[0], -1).numpy()
    np.testing.assert_allclose(ins.topk_probs[:, 0], probs.max(-1), rtol=1e-5)
    np.testing.assert_allclose(ins.entropy, -(probs * np.log(probs)).sum(-1), rtol=1e-4)
    assert np.all(np.diff(ins.topk_probs, axis=1) <= 0)  # best first
    assert ins.tokens[:3] == ["t", "h", "e"] and ins.topk_tokens[0][0] == CharTok.alphabet[ins.topk_ids[0, 0]]
    assert [len(row) for row in ins.badges] == [2, 2]
    d = json.loads(json.dumps(ins.to_dict()))
    assert set(d) >= {"tokens", "top_k", "entropy", "heads", "logit_lens"}
    assert len(d["logit_lens"]) == 3 and len(d["top_k"][0]) == 5


def test_long_prompts_keep_the_last_block_and_empty_ones_are_refused():
    model = random_gpt()
    ins = inspect_prompt(model, CharTok(), "abcdefghij" * 5)  # 50 tokens, block size 32
    assert len(ins.tokens) == 32 and "".join(ins.tokens) == ("abcdefghij" * 5)[-32:]
    with pytest.raises(TokenizerError, match="empty"):
        inspect_prompt(model, CharTok(), "")


def test_lstm_inspection_has_hidden_states_and_the_same_next_token_view():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=len(CharTok.alphabet), n_layer=2, n_embd=24)).eval()
    ins = inspect_prompt(model, CharTok(), "the cat", top_k=3)
    assert ins.kind == "lstm" and ins.attn is None and ins.metrics == []
    assert ins.hidden.shape == (1, 7, 24)
    # The last layer's real h after each token, fed one at a time through the model's recurrent state.
    state, expected = model.init_state(1), []
    with torch.no_grad():
        for i in CharTok().encode("the cat"):
            _, state = model.step(torch.tensor([[i]]), state)
            expected.append(state.hc[0][-1, 0].numpy())
    np.testing.assert_allclose(ins.hidden[0], np.stack(expected), atol=1e-5)
    assert ins.topk_probs.shape == (7, 3) and np.all(ins.entropy > 0)
    assert heads_event(model, torch.zeros(1, 4, dtype=torch.long)) is None
    assert json.dumps(ins.to_dict())


def test_heads_event_carries_every_layer_and_head_and_restores_training_mode():
    model = random_gpt().train()
    fields = heads_event(model, torch.tensor([CharTok().encode("the cat sat")]))
    assert model.training
    assert fields["probe_tokens"] == 11
    assert [len(layer) for layer in fields["layers"]] == [2, 2]
    head = fields["layers"][1][0]
    assert set(head) == {"layer", "head", "entropy", "prev_token", "sink", "distance", "induction", "badge"}
    assert head["layer"] == 1 and 0.0 <= head["entropy"] <= 1.0


def test_trainer_writes_a_heads_event_at_each_eval(home, small_corpus):
    from engine import runs
    from engine.events import read_events
    from engine.trainer import train

    cfg = apply_overrides(preset("tiny"), {
        "model": dict(n_layer=2, n_head=2, n_embd=32, block_size=32),
        "data": dict(corpus=str(small_corpus), tokenizer_kind="char"),
        "train": dict(batch_size=4, max_steps=4, warmup_steps=1, eval_interval=2, eval_batches=1, sample_tokens=0)})
    run_dir = runs.create_run(cfg, name="heads")
    train(run_dir)
    events = read_events(run_dir)
    heads = [e for e in events if e["event"] == "heads"]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in heads] == [e["step"] for e in evals] == [2, 4]
    assert [len(layer) for layer in heads[-1]["layers"]] == [2, 2]
    assert all(h["badge"] in ("", "P", "I", "S", "D") for layer in heads[-1]["layers"] for h in layer)
