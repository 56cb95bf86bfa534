"""GPT and LSTM: cache == recompute, causality, inspection path, learning, parameter counts, bad configs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from engine.config import ModelConfig, preset
from engine.errors import ConfigError
from engine.models import GPT, LSTM, build_model, count_params

V = 23


def gpt(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="gpt", vocab_size=V, n_layer=2, n_head=4, n_embd=32, block_size=16)
    return build_model(replace(cfg, **kw)).eval()


def lstm(**kw) -> LSTM:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="lstm", vocab_size=V, n_layer=2, n_head=1, n_embd=32, block_size=16)
    return build_model(replace(cfg, **kw)).eval()


@torch.no_grad()
def test_gpt_kv_cache_matches_full_recompute_over_100_decode_steps():
    model = gpt(block_size=128)
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(0, V, (2, 10), generator=g)
    state = model.init_state(2)
    logits, state = model.step(seq, state)
    torch.testing.assert_close(logits, model(seq)[0], atol=1e-5, rtol=1e-5)
    for _ in range(100):
        nxt = torch.randint(0, V, (2, 1), generator=g)
        seq = torch.cat([seq, nxt], dim=1)
        logits, state = model.step(nxt, state)
        torch.testing.assert_close(logits[:, -1], model(seq)[0][:, -1], atol=1e-5, rtol=1e-5)
    assert model.state_len(state) == 110


@torch.no_grad()
def test_gpt_one_token_steps_read_transposed_copies_made_once_per_cache():
    model = gpt()
    seq = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(6))
    state = model.init_state(1)
    _, state = model.step(seq[:, :5], state)
    assert state.transposed == {}  # a prefill reads the weights as they are
    _, state = model.step(seq[:, 5:], state)
    wide = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features > m.in_features]
    assert len(wide) == 4 and set(state.transposed) == set(wide)  # c_attn and c_fc of both blocks
    for layer, w_t in state.transposed.items():
        assert w_t.is_contiguous() and torch.equal(w_t, layer.weight.t())
    # Weights changed after a cache was made (an optimizer step between samples): a new cache sees them.
    for p in model.parameters():
        p.mul_(1.5)
    state = model.init_state(1)
    _, state = model.step(seq[:, :5], state)
    logits, state = model.step(seq[:, 5:], state)
    torch.testing.assert_close(logits[:, -1], model(seq)[0][:, -1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_gpt_chunk_after_cached_tokens_gets_the_right_causal_mask():
    model = gpt()
    seq = torch.randint(0, V, (1, 14), generator=torch.Generator().manual_seed(2))
    state = model.init_state(1)
    _, state = model.step(seq[:, :5], state)
    chunk, state = model.step(seq[:, 5:12], state)  # 7 tokens at positions 5..11
    torch.testing.assert_close(chunk, model(seq[:, :12])[0][:, 5:12], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_gpt_cache_refuses_to_outgrow_block_size():
    model = gpt(block_size=8)
    state = model.init_state(1)
    _, state = model.step(torch.zeros(1, 8, dtype=torch.long), state)
    with pytest.raises(ValueError, match="block_size 8"):
        model.step(torch.zeros(1, 1, dtype=torch.long), state)
    with pytest.raises(ValueError, match="block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@torch.no_grad()
@pytest.mark.parametrize("make", [gpt, lstm])
def test_changing_a_future_token_leaves_past_logits_alone(make):
    model = make()
    a = torch.randint(0, V, (1, 16), generator=torch.Generator().manual_seed(3))
    b = a.clone()
    b[0, 9] = (a[0, 9] + 1) % V
    la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :9], lb[:, :9], atol=0, rtol=0)
    assert not torch.allclose(la[:, 9:], lb[:, 9:])


@torch.no_grad()
def test_lstm_carried_state_matches_full_forward():
    model = lstm()
    seq = torch.randint(0, V, (2, 40), generator=torch.Generator().manual_seed(4))
    full = model(seq)[0]
    state = model.init_state(2)
    logits, state = model.step(seq[:, :7], state)
    pieces = [logits]
    for t in range(7, 40):
        logits, state = model.step(seq[:, t:t + 1], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert model.state_len(state) == 40
    assert model.max_state_len is None  # no window: the state summarises any length


@torch.no_grad()
def test_gpt_forward_inspect_matches_forward_and_returns_causal_attention():
    model = gpt()
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(5))
    logits, attn, residuals = model.forward_inspect(idx)
    torch.testing.assert_close(logits, model(idx)[0], atol=1e-5, rtol=1e-5)
    assert len(attn) == 2 and len(residuals) == 3
    for a in attn:
        assert a.shape == (2, 4, 12, 12)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 12))
        assert torch.all(a.triu(diagonal=1) == 0)
        assert torch.all(a.diagonal(dim1=-2, dim2=-1)[..., 1:] < 1)  # rows really mix positions
    assert all(r.shape == (2, 12, 32) for r in residuals)
    torch.testing.assert_close(model.lens_logits(residuals[-1]), logits, atol=0, rtol=0)


def lstm_hidden_by_hand(model: LSTM, idx: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's h_t at every position, from the LSTM equations and the layers' weights (PyTorch's gate
    order i, f, g, o): an oracle independent of nn.LSTM's kernel."""
    x, layers = model.wte(idx), []
    batch, steps, _ = x.shape
    for layer in range(model.lstm.num_layers):
        w_ih, w_hh = getattr(model.lstm, f"weight_ih_l{layer}"), getattr(model.lstm, f"weight_hh_l{layer}")
        bias = getattr(model.lstm, f"bias_ih_l{layer}") + getattr(model.lstm, f"bias_hh_l{layer}")
        h = c = torch.zeros(batch, model.lstm.hidden_size)
        outputs = []
        for t in range(steps):
            i, f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + bias).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        x = torch.stack(outputs, dim=1)
        layers.append(x)
    return layers


@torch.no_grad()
def test_lstm_forward_inspect_returns_last_layer_hidden_states():
    model = lstm()
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(6))
    logits, hidden = model.forward_inspect(idx)
    torch.testing.assert_close(logits, model(idx)[0])
    first, last = lstm_hidden_by_hand(model, idx)
    torch.testing.assert_close(hidden, last, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hidden, first, atol=1e-2)  # the last layer's, not the first's


@pytest.mark.parametrize("make,lr", [(gpt, 1e-2), (lstm, 3e-2)])  # the LSTM wants a larger step
def test_a_tiny_model_overfits_a_fixed_batch(make, lr):
    model = make(dropout=0.1).train()
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, V, (4, 16), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:, -1] = -1  # ignored position
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    first = None
    for _ in range(60):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.5  # about ln(23) = 3.1 at initialisation
    model.eval()
    assert model(x, y)[1].item() < 0.3


def test_ignore_index_positions_do_not_count():
    model = gpt()
    x = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(8))
    y = x.clone()
    half = y.clone()
    half[:, 4:] = -1
    logits, _ = model(x)
    expected = torch.nn.functional.cross_entropy(logits[0, :4], y[0, :4])
    torch.testing.assert_close(model(x, half)[1], expected)


def test_output_head_is_tied_to_the_token_embedding():
    g, l_ = gpt(), lstm()
    assert g.lm_head.weight is g.transformer.wte.weight
    assert l_.lm_head.weight is l_.wte.weight


def _gpt_params(v: int, c: int, layers: int, block: int, ratio: int) -> tuple[int, int]:
    """(total, non_embedding) from the shapes, biases included, head tied; block = 0: no position table."""
    block_params = (2 * 2 * c                  # ln_1, ln_2
                    + c * 3 * c + 3 * c        # c_attn
                    + c * c + c                # attn c_proj
                    + c * ratio * c + ratio * c  # c_fc
                    + ratio * c * c + c)       # mlp c_proj
    total = v * c + block * c + layers * block_params + 2 * c
    return total, total - block * c


@pytest.mark.parametrize("name,vocab", [("tiny", 65), ("small", 65), ("medium", 65), ("seed19m", 8192),
                                        ("gpt2", 50304)])
def test_preset_parameter_counts_match_the_formula(name, vocab):
    m = preset(name).model
    cfg = replace(m, vocab_size=vocab)
    with torch.device("meta"):  # shapes only: gpt2 is 124M parameters
        model = build_model(cfg)
    assert m.tie_head
    table = m.block_size if m.positions == "learned" else 0  # rotary positions have no weights
    total, non_embedding = _gpt_params(vocab, m.n_embd, m.n_layer, table, m.mlp_ratio)
    assert count_params(model) == {"total": total, "non_embedding": non_embedding}


def test_known_preset_sizes():
    with torch.device("meta"):
        medium = count_params(build_model(replace(preset("medium").model, vocab_size=65)))
        gpt2 = count_params(build_model(replace(preset("gpt2").model, vocab_size=50304)))
    assert 12.4e6 < medium["non_embedding"] < 12.5e6  # the nanoGPT comparison shape
    assert 124.3e6 < gpt2["total"] < 124.5e6  # nanoGPT's GPT-2 small with the padded vocab


def test_lstm_parameter_count():
    with torch.device("meta"):
        model = build_model(replace(preset("lstm").model, vocab_size=65))
    h, layers = 512, 2
    lstm_params = layers * (4 * h * (h + h) + 2 * 4 * h)  # W_ih, W_hh and two bias vectors per layer
    total = 65 * h + lstm_params + 65  # tied head keeps only its bias
    assert count_params(model) == {"total": total, "non_embedding": total}


def test_n_embd_not_divisible_by_n_head_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match=r"n_embd \(384\) must be divisible by n_head \(7\)"):
        build_model(ModelConfig(vocab_size=65, n_embd=384, n_head=7))


def test_bad_kind_and_missing_vocab_are_refused():
    with pytest.raises(ConfigError, match="vocab_size must be positive"):
        build_model(ModelConfig(vocab_size=0))
    with pytest.raises(ConfigError, match="model.kind must be one of gpt, lstm"):
        build_model(ModelConfig(kind="rnn", vocab_size=65))


# --- the GPT's options beyond GPT-2 (the speedruns' choices) -----------------------------------------
OPTIONS = [dict(positions="rotary"), dict(qk_norm=True), dict(activation="relu2"), dict(tie_head=False),
           dict(logit_softcap=5.0),
           dict(positions="rotary", qk_norm=True, activation="relu2", tie_head=False, logit_softcap=5.0)]


def trained_like(model: GPT) -> GPT:
    """Weights of a trained model's scale (initial ones leave attention nearly uniform, hiding position bugs)."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@torch.no_grad()
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
def test_each_option_keeps_cache_decode_chunks_and_batched_rows_equal_to_the_full_forward(options):
    model = trained_like(gpt(**options))
    seq = torch.randint(0, V, (2, 14), generator=torch.Generator().manual_seed(12))
    full = model(seq)[0]
    state = model.init_state(2)
    pieces = [model.step(seq[:, :5], state)[0], model.step(seq[:, 5:9], state)[0]]  # a prefill, then a chunk
    pieces += [model.step(seq[:, t:t + 1], state)[0] for t in range(9, 14)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-4)
    # Batched serving: two unrelated rows at different positions in one cache.
    batch = model.init_state(2)
    model.prefill_row(seq[:1, :6], batch, 0)
    model.prefill_row(seq[1:, :3], batch, 1)
    logits = model.step_rows(torch.stack([seq[0, 6], seq[1, 3]]), batch, torch.tensor([6, 3]))
    torch.testing.assert_close(logits, torch.stack([full[0, 6], model(seq[1:, :4])[0][0, 3]]), atol=1e-4, rtol=1e-4)
    logits_i, attn, residuals = model.forward_inspect(seq)
    torch.testing.assert_close(logits_i, full, atol=1e-4, rtol=1e-4)
    assert all(torch.all(a.triu(diagonal=1) == 0) for a in attn)


def test_rotary_scores_depend_only_on_the_distance_between_positions():
    attn = gpt(positions="rotary").transformer.h[0].attn
    g = torch.Generator().manual_seed(13)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)
    score = lambda i, j: (attn._rotate(q, i) * attn._rotate(k, j)).sum().item()  # noqa: E731
    assert score(7, 3) == pytest.approx(score(4, 0), abs=1e-5) == pytest.approx(score(12, 8), abs=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)
    assert "wpe" not in gpt(positions="rotary").transformer  # positions live in attention only


@pytest.mark.parametrize("norm", [True, False])
def test_rotary_with_qk_norm_is_the_plain_formula_and_its_hand_written_backward_is_its_derivative(norm):
    from engine.models.gpt import _NormRotate, _rotary_tables

    c, s = (t.unsqueeze(1).double() for t in _rotary_tables(8, 6))  # [T, 1, hd / 2] as attention uses them
    x = (3 * torch.randn(2, 6, 4, 8, generator=torch.Generator().manual_seed(16), dtype=torch.float64))
    x.requires_grad_()
    n1, n2 = (F.rms_norm(x, (8,)) if norm else x).chunk(2, dim=-1)  # the pair (i, i + 4) turns by angle i
    torch.testing.assert_close(_NormRotate.apply(x, c, s, norm), torch.cat((n1 * c - n2 * s, n2 * c + n1 * s), -1))
    assert torch.autograd.gradcheck(lambda t: _NormRotate.apply(t, c, s, norm), (x,))


def test_rotary_needs_an_even_head_dimension():
    from engine.config import RunConfig, validate

    cfg = RunConfig(model=ModelConfig(vocab_size=V, n_embd=36, n_head=4, positions="rotary"))
    with pytest.raises(ConfigError, match=r"n_embd / n_head = 9 is odd"):
        validate(cfg)


@torch.no_grad()
@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(qk_norm):
    model = trained_like(gpt(qk_norm=qk_norm))
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(14))
    before = model(idx)[0]
    for block in model.transformer.h:
        block.attn.c_attn.weight[:64] *= 3.0  # the query and key rows (n_embd = 32 each)
        block.attn.c_attn.bias[:64] *= 3.0
    after = model(idx)[0]
    assert torch.allclose(before, after, atol=1e-4) == qk_norm


@torch.no_grad()
def test_relu2_mlp_is_the_square_of_relu():
    mlp = trained_like(gpt(activation="relu2")).transformer.h[0].mlp
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(15))
    by_hand = torch.clamp(x @ mlp.c_fc.weight.T + mlp.c_fc.bias, min=0) ** 2 @ mlp.c_proj.weight.T + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), by_hand)


@torch.no_grad()
def test_logit_softcap_bounds_the_logits_and_is_tanh_of_the_plain_head():
    model = trained_like(gpt(logit_softcap=1.0))
    idx = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(16))
    _, _, residuals = model.forward_inspect(idx)
    plain = model.lm_head(model.transformer.ln_f(residuals[-1]))
    logits = model(idx)[0]
    assert plain.abs().max() > 1.0 and logits.abs().max() < 1.0
    torch.testing.assert_close(logits, torch.tanh(plain))


def test_untied_zero_initialised_model_starts_uniform_with_blocks_as_identity():
    model = gpt(tie_head=False, zero_init=True)
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith(("c_proj.weight", "lm_head.weight")))
    idx = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(17))
    _, loss = model(idx, idx)
    assert loss.item() == pytest.approx(math.log(V), abs=1e-6)  # every token equally likely
    with torch.device("meta"):
        tied, untied = count_params(gpt()), count_params(gpt(tie_head=False, positions="rotary"))
    assert untied["total"] == tied["total"] + V * 32 - 16 * 32  # a head of its own, no position table
    assert untied["non_embedding"] == untied["total"]
