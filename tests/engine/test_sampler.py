"""Sampler: allowed sets of top-k/top-p, penalty, stop strings and EOS, incremental UTF-8 text, sliding
window, determinism, and one clear sentence for each bad setting."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from engine.config import ModelConfig
from engine.errors import ConfigError
from engine.models import build_model
from engine.sampler import SamplingConfig, generate, generate_text


class ByteTokenizer:
    """Byte-level stand-in: one token per UTF-8 byte (so a token can be part of a character) + EOS."""

    eos_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


TOK = ByteTokenizer()


class TableModel(nn.Module):
    """A stand-in LM whose logits after consuming n tokens are row min(n - 1, last) of a fixed table,
    so a test sets the distribution exactly. Records what it is fed."""

    max_state_len = None

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(rows.float(), requires_grad=False)
        self.fed: list[list[int]] = []

    def init_state(self, batch_size: int) -> int:
        return 0

    def step(self, idx: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
        self.fed.append(idx[0].tolist())
        end = n + idx.size(1)
        rows = [self.table[min(i, len(self.table) - 1)] for i in range(n, end)]
        return torch.stack(rows)[None], end

    def state_len(self, n: int) -> int:
        return n


def script_model(text: str, prompt_len: int = 1) -> TableModel:
    """Greedily writes `text` byte by byte after a prompt of prompt_len tokens, then EOS."""
    targets = [*text.encode("utf-8"), TOK.eos_id]
    rows = torch.zeros(prompt_len - 1 + len(targets), TOK.vocab_size)
    for i, t in enumerate(targets):
        rows[prompt_len - 1 + i, t] = 20.0
    return TableModel(rows)


def fixed_model(logits: torch.Tensor) -> TableModel:
    """The same next-token logits at every position."""
    return TableModel(logits[None])


def tiny_gpt(block_size: int = 64, **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="gpt", vocab_size=TOK.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=block_size)
    model = build_model(replace(cfg, **kw))
    with torch.no_grad():  # a random init is nearly uniform; sharpen it so greedy paths are clear-cut
        model.lm_head.weight.mul_(20)
    return model


GREEDY = SamplingConfig(temperature=0.0)


def test_multibyte_characters_are_held_until_complete_and_pieces_join_to_the_decoded_text():
    text = "hé€ x"
    tokens = list(generate(script_model(text), TOK, "a", GREEDY))
    assert [t.id for t in tokens] == list(text.encode())  # EOS ends it and is not yielded
    assert [t.text for t in tokens] == ["h", "", "é", "", "", "€", " ", "x"]
    assert all(t.prob > 0.99 for t in tokens)


def test_stop_string_cuts_the_text_before_it_even_across_tokens():
    model = script_model("abc\n\ndef")
    assert generate_text(model, TOK, "a", SamplingConfig(temperature=0, stop=["\n\n"])) == "abc"
    assert generate_text(model, TOK, "a", SamplingConfig(temperature=0, stop=["cd", "c\n"])) == "ab"
    # A false start of a stop string is held back, then released intact.
    tokens = list(generate(model, TOK, "a", SamplingConfig(temperature=0, stop=["\nX"])))
    assert [t.text for t in tokens] == ["a", "b", "c", "", "\n", "\nd", "e", "f"]
    assert generate_text(model, TOK, "a", SamplingConfig(temperature=0, stop=["a"])) == ""


def test_max_new_tokens_and_empty_prompt_starting_from_eos():
    model = script_model("abcdef")
    assert generate_text(model, TOK, "", SamplingConfig(temperature=0, max_new_tokens=3)) == "abc"
    assert model.fed[0] == [TOK.eos_id]
    assert len(model.fed) == 3  # the prompt, then one step per token except after the last
    assert list(generate(model, TOK, "x", SamplingConfig(max_new_tokens=0))) == []


def test_top_k_never_emits_a_token_outside_the_k_best():
    logits = -0.01 * torch.arange(TOK.vocab_size, dtype=torch.float)  # nearly uniform, ordered by id
    ids = [t.id for t in generate(fixed_model(logits), TOK, "x", SamplingConfig(max_new_tokens=300, temperature=1.0,
                                                                                 top_k=5, seed=1))]
    assert len(ids) == 300
    assert set(ids) == {0, 1, 2, 3, 4}


def test_top_p_keeps_the_smallest_set_reaching_p_and_reports_the_model_probability():
    head = torch.tensor([0.5, 0.3, 0.1, 0.05])
    probs = torch.cat([head, torch.full((TOK.vocab_size - 4,), 0.05 / (TOK.vocab_size - 4))])
    model = fixed_model(probs.log())
    for top_p, allowed in [(0.7, {0, 1}), (0.85, {0, 1, 2}), (0.3, {0})]:
        tokens = list(generate(model, TOK, "x", SamplingConfig(max_new_tokens=300, temperature=1.0, top_p=top_p)))
        assert {t.id for t in tokens} == allowed
        for t in tokens:
            assert t.prob == pytest.approx(float(probs[t.id]), rel=1e-4)


def test_top_k_above_the_vocab_is_clamped():
    model = tiny_gpt()
    base = SamplingConfig(max_new_tokens=20, temperature=1.0, seed=5)
    assert generate_text(model, TOK, "hi", replace(base, top_k=10_000)) == generate_text(model, TOK, "hi", base)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_ids():
    logits = torch.full((TOK.vocab_size,), -5.0)
    logits[[ord("A"), ord("B"), ord("C")]] = torch.tensor([2.0, 1.5, 1.2])
    cfg = SamplingConfig(max_new_tokens=6, temperature=0, repetition_penalty=2.0)
    assert generate_text(fixed_model(logits), TOK, "x", cfg) == "ABCAAA"
    assert generate_text(fixed_model(logits), TOK, "x", replace(cfg, repetition_penalty=1.0)) == "AAAAAA"

    logits = torch.full((TOK.vocab_size,), -5.0)
    logits[[ord("D"), ord("E")]] = torch.tensor([-0.1, -0.15])
    cfg = SamplingConfig(max_new_tokens=1, temperature=0, repetition_penalty=2.0)
    assert generate_text(fixed_model(logits), TOK, "D", cfg) == "E"  # D: -0.1 * 2 < -0.15
    assert generate_text(fixed_model(logits), TOK, "D", replace(cfg, repetition_penalty=1.0)) == "D"


def test_streamed_equals_non_streamed_with_the_same_seed_and_seeds_matter():
    model = tiny_gpt()
    cfg = SamplingConfig(max_new_tokens=60, temperature=1.5, top_k=100, seed=3)
    tokens = list(generate(model, TOK, "The", cfg))
    again = list(generate(model, TOK, "The", cfg))
    assert [t.id for t in tokens] == [t.id for t in again]
    text = "".join(t.text for t in tokens)
    assert text == generate_text(model, TOK, "The", cfg) == TOK.decode([t.id for t in tokens])
    other = [t.id for t in generate(model, TOK, "The", replace(cfg, seed=4))]
    assert other != [t.id for t in tokens]


def test_greedy_ignores_the_seed():
    model = tiny_gpt()
    a = generate_text(model, TOK, "ab", SamplingConfig(max_new_tokens=20, temperature=0, seed=1))
    b = generate_text(model, TOK, "ab", SamplingConfig(max_new_tokens=20, temperature=0, seed=2))
    assert a == b


def _reference_greedy(model: nn.Module, prompt: list[int], n: int, limit: int) -> list[int]:
    """Full recompute with the sampler's documented window: at most block_size tokens; on overflow the
    context restarts from its last block_size // 2 tokens."""
    ctx, out = list(prompt), []
    start = max(0, len(ctx) - limit)
    with torch.no_grad():
        for _ in range(n):
            if len(ctx) - start > limit:
                start = len(ctx) - limit // 2
            token = int(model(torch.tensor([ctx[start:]]))[0][0, -1].argmax())
            if token == TOK.eos_id:
                break
            out.append(token)
            ctx.append(token)
    return out


@pytest.mark.parametrize("prompt", ["abc", "a prompt longer than the block"])
def test_sliding_window_matches_full_recompute_on_the_same_window(prompt):
    model = tiny_gpt(block_size=8).eval()
    ids = [t.id for t in generate(model, TOK, prompt, SamplingConfig(max_new_tokens=30, temperature=0))]
    assert len(ids) > 8  # long enough to slide more than once
    assert ids == _reference_greedy(model, TOK.encode(prompt), 30, limit=8)


def test_lstm_generation_carries_its_state():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=TOK.vocab_size, n_layer=2, n_head=1, n_embd=32))
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    ids = [t.id for t in generate(model, TOK, "abc", SamplingConfig(max_new_tokens=100, temperature=0))]
    assert ids == _reference_greedy(model.eval(), TOK.encode("abc"), 100, limit=10_000)


def test_mode_is_restored_and_inference_mode_does_not_leak_between_tokens():
    model = tiny_gpt(dropout=0.5).train()
    cfg = SamplingConfig(max_new_tokens=10, temperature=0)
    for _ in generate(model, TOK, "ab", cfg):
        assert not model.training  # dropout off while generating
        assert not torch.is_inference_mode_enabled()
    assert model.training
    assert generate_text(model, TOK, "ab", cfg) == generate_text(model, TOK, "ab", cfg)


def test_one_token_steps_run_on_one_thread_and_the_thread_count_is_restored():
    model = script_model("hello", prompt_len=3)
    seen: list[tuple[int, int]] = []
    step = model.step
    model.step = lambda idx, n: (seen.append((idx.size(1), torch.get_num_threads())), step(idx, n))[1]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert generate_text(model, TOK, "abc", GREEDY) == "hello"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen[0] == (3, 2)  # the prompt's prefill keeps torch's threads
    assert seen[1:] and all(s == (1, 1) for s in seen[1:])


def test_real_bpe_tokenizer_pieces_join_to_its_decode(tmp_path):
    from engine.corpora import load_corpus
    from engine.tokenizer import train_tokenizer

    path = tmp_path / "text.txt"
    path.write_text("Café crème, naïve façade — 日本語のテキスト, emoji 🙂 and plain words.\n" * 50, encoding="utf-8")
    tokenizer = train_tokenizer(load_corpus(str(path)), "bpe", vocab_size=300)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="gpt", vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16,
                                    block_size=32))
    windows: list[int] = []

    class Counting:  # the real tokenizer, noting how many ids each decode call covers
        eos_id, vocab_size, pad_id, unk_id = tokenizer.eos_id, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.unk_id
        encode = staticmethod(tokenizer.encode)

        @staticmethod
        def decode(ids):
            windows.append(len(ids))
            return tokenizer.decode(ids)

    for seed in range(4):
        # Uniform-ish sampling over the byte tokens produces plenty of incomplete and invalid UTF-8.
        cfg = SamplingConfig(max_new_tokens=300, temperature=2.0, seed=seed, stop=["zq"] if seed % 2 else [])
        tokens = list(generate(model, Counting, "Café", cfg))
        ids = [t.id for t in tokens if t.id != tokenizer.eos_id]
        assert "".join(t.text for t in tokens) == tokenizer.decode(ids)
        assert any(t.text == "" for t in tokens)  # some pieces really were held back
        assert len(ids) > 100 and max(windows) < 20  # the decode window stays short: no quadratic cost
        windows.clear()


@pytest.mark.parametrize("field,value,message", [
    ("temperature", -0.1, "temperature must be a finite number >= 0"),
    ("temperature", float("nan"), "temperature must be a finite number >= 0"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("top_k", 0, "top_k must be a whole number >= 1"),
    ("repetition_penalty", 0.0, "repetition_penalty must be a number > 0"),
    ("max_new_tokens", -1, "max_new_tokens must be a whole number >= 0"),
    ("stop", [""], "stop must be a list of non-empty strings"),
    ("stop", "\n", "stop must be a list of non-empty strings"),
])
def test_bad_settings_are_refused_in_one_sentence(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**{field: value})
    cfg = SamplingConfig()
    setattr(cfg, field, value)  # edited after construction: generate validates again
    with pytest.raises(ConfigError, match=message):
        next(generate(script_model("a"), TOK, "x", cfg))


class PaddedTokenizer(ByteTokenizer):
    """A byte tokenizer with padding and unknown-token ids, and a model vocab padded past it."""

    pad_id = 65  # "A"
    unk_id = 66  # "B"
    vocab_size = 257


def test_padding_unknown_and_ids_past_the_vocab_are_never_sampled():
    logits = torch.zeros(300)
    logits[[65, 66, 280]] = 5.0  # the model prefers exactly the ids that must never appear
    tokens = list(generate(fixed_model(logits), PaddedTokenizer(), "x",
                           SamplingConfig(max_new_tokens=200, temperature=1.0, seed=3)))
    ids = {t.id for t in tokens}
    assert len(tokens) == 200 and not ids & {65, 66, 280}
    greedy = list(generate(fixed_model(logits), PaddedTokenizer(), "x", SamplingConfig(max_new_tokens=5, temperature=0)))
    assert not {t.id for t in greedy} & {65, 66, 280}
