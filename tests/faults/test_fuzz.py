"""Bad input, fuzzed: whatever arrives, the answer is a result or the module's own one-sentence error.

Example counts stay modest (the machine is shared): each property runs tens of examples, seeded by
hypothesis' database-free default so a failure prints the example that triggered it.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.corpora import Corpus, corpus_stats, load_corpus
from engine.errors import ConfigError, CorpusError
from engine.models import build_model
from engine.sampler import SamplingConfig, generate
from engine.tokenizer import Tokenizer, train_tokenizer
from tests.conftest import smallgpt

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

# --- byte-level BPE -------------------------------------------------------------------------------------

TRAIN_TEXT = ("The quick brown fox jumps over the lazy dog. Ünïcödé, 日本語のテキスト, emoji 🙂 and tabs\t. "
              * 40)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, Tokenizer]:
    path = tmp_path_factory.mktemp("tok") / "train.txt"
    path.write_text(TRAIN_TEXT, encoding="utf-8")
    corpus = Corpus(str(path), "train.txt", [path])
    return {"bpe": train_tokenizer(corpus, "bpe", 300), "char": train_tokenizer(corpus, "char")}


ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300)


@FUZZ
@given(text=ANY_TEXT)
@example(text="<|endoftext|><|pad|>\x00\r\n")
@example(text="a\udcffb\ud800")  # lone surrogates: invalid UTF-8 from argv, decoded with surrogateescape
def test_byte_level_bpe_round_trips_any_text(tokenizers, text):
    """Unseen characters, NULs, special-token strings, control characters: decode(encode(x)) == x, lone
    surrogates (which no UTF-8 holds) coming back as U+FFFD."""
    tok = tokenizers["bpe"]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    assert tok.decode(ids) == expected
    assert tok.encode_batch([text, text]) == [ids, ids]


@FUZZ
@given(text=ANY_TEXT)
def test_char_tokenizer_never_fails_and_maps_unseen_characters_to_unk(tokenizers, text):
    tok = tokenizers["char"]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    known = set(TRAIN_TEXT)
    if set(text) <= known:
        assert tok.decode(ids) == text


# --- corpus loaders -------------------------------------------------------------------------------------

def load_and_read(path: Path) -> tuple[Any, str]:
    """Everything a corpus goes through before a tokenizer sees it; ("error", msg) for a CorpusError."""
    try:
        corpus = load_corpus(str(path))
        stats = corpus_stats(corpus)
        head = corpus.head(3)
    except CorpusError as e:
        assert "\n" not in str(e) and str(e).endswith((".", ")")), str(e)
        return "error", str(e)
    assert stats.chars > 0 and len(head) <= 3
    return stats, ""


@FUZZ
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".txt", ".md", ".jsonl"]))
@example(data=b"\x00" * 10, suffix=".txt")
@example(data=b"text\n" * 2000 + b"\x00 late NUL", suffix=".txt")  # NUL past the 8 KB sniff: read as text
@example(data=b'{"text": "\xff\xfe ok"}\n{"text": 3}\n', suffix=".jsonl")
@example(data=b"\n\n  \t\n", suffix=".md")
def test_corpus_loaders_on_random_bytes(home, data, suffix):
    path = home / f"fuzz{suffix}"
    path.write_bytes(data)
    stats, error = load_and_read(path)
    if stats == "error" or suffix == ".jsonl":
        return
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    # Invalid bytes are counted and warned about; valid text loads without a word.
    assert (stats.replaced_bytes > 0) == (not valid) and bool(stats.warnings) == (not valid)


MIXED = {
    "latin-1": "café naïve über".encode("latin-1"),
    "cp1252 quotes": "“smart” quotes – dash".encode("cp1252"),
    "shift_jis": "日本語のテキスト".encode("shift_jis"),
    "utf-8 then latin-1": "ünïcode ".encode() + "ünïcode".encode("latin-1"),
    "utf-16": "hello world".encode("utf-16"),  # NUL bytes: refused as binary
    "truncated utf-8": "日本".encode()[:-1],
}


def test_a_utf8_byte_order_mark_is_dropped(home):
    path = home / "bom.txt"
    path.write_bytes("\ufeffhello\n".encode() + b"world\n" * 20)
    stats, _ = load_and_read(path)
    assert stats.replaced_bytes == 0 and load_corpus(str(path)).read_text().startswith("hello\nworld")


@pytest.mark.parametrize("name", MIXED)
def test_mixed_encodings_load_with_a_replacement_warning_or_a_clear_error(home, name):
    path = home / "mixed.txt"
    path.write_bytes(MIXED[name] * 50 + b"\n")
    stats, error = load_and_read(path)
    if name == "utf-16":
        assert stats == "error" and "binary" in error
    else:
        assert stats.replaced_bytes > 0 and stats.warnings == [f"mixed.txt: {stats.replaced_bytes} bytes of "
                                                               f"invalid UTF-8 replaced with U+FFFD."]


def test_a_10_mb_line_is_streamed(home):
    path = home / "long.txt"
    with path.open("w") as f:
        f.write("word " * 2_000_000 + "\nshort line\n")
    corpus = load_corpus(str(path))
    chunk_sizes = [len(c) for c in corpus.iter_text(chunk_chars=1 << 20)]
    assert max(chunk_sizes) <= 1 << 20 and sum(chunk_sizes) == 10_000_012  # never held whole
    stats = corpus_stats(corpus)
    assert stats.max_line_length == 10_000_000 and stats.lines == 2 and stats.words == 2_000_002
    assert corpus.head(2)[1] == "short line"


# --- config files ---------------------------------------------------------------------------------------

KNOWN_KEYS = {table: [f.name for f in fields(cls)] for table, cls in
              (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))}
SCALARS = st.one_of(st.integers(), st.integers(min_value=-2**80, max_value=2**80) | st.just(10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=12),
                    st.sampled_from(["gpt", "lstm", "char", "bpe", "word", "auto", "cpu", "fp32", "bf16"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=2), max_leaves=4)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string (lone surrogates make it invalid TOML: also a case)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def config_tables(draw) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for table in draw(st.lists(st.sampled_from(["model", "data", "train", "extra"]), unique=True, max_size=3)):
        keys = KNOWN_KEYS.get(table, ["x"])
        tables[table] = draw(st.dictionaries(st.sampled_from(keys) | st.text(min_size=1, max_size=8), VALUES,
                                             max_size=4))
    return tables


def to_toml(tables: dict[str, Any]) -> str:
    out = []
    for table, values in tables.items():
        out.append(f"[{table}]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(out) + "\n"


@FUZZ
@given(tables=config_tables())
@example(tables={"train": {"lr": 10**400}})  # an integer beyond any float
@example(tables={"train": {"lr": float("nan"), "min_lr": float("inf")}})
@example(tables={"model": {"n_embd": 10, "n_head": 3}})
@example(tables={"model": {"dropout": float("nan")}, "data": {"val_ratio": -0.0}})
@example(tables={"data": {"corpus": "dir\x1b[31m/\x00a\rb\u2028.txt", "tokenizer": "\x7f"}})  # control characters
def test_config_files_give_a_valid_config_or_one_config_error(tmp_path, tables):
    path = tmp_path / "cfg.toml"
    path.write_text(to_toml(tables), encoding="utf-8")
    try:
        cfg = RunConfig.load(path).validate()
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 600
        return
    cfg.save(tmp_path / "saved.toml")  # what a run directory keeps must load back the same
    assert RunConfig.load(tmp_path / "saved.toml").to_dict() == cfg.to_dict()


@FUZZ
@given(data=st.binary(max_size=400))
def test_config_files_of_random_bytes(tmp_path, data):
    path = tmp_path / "cfg.toml"
    path.write_bytes(data)
    try:
        RunConfig.load(path).validate()
    except ConfigError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("text", ['[train]\nlr = 1' + "0" * 400 + "\n", "[model]\nn_head = 'four'\n",
                                  "[train\nlr = ", "[model]\nn_embd = 100\nn_head = 3\n"])
def test_cli_train_with_a_bad_config_is_one_error_line(home, text):
    (home / "bad.toml").write_text(text)
    proc = smallgpt(home, "train", "--corpus", "python-docs", "--config", "bad.toml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stdout + proc.stderr
    assert not (home / "checkpoints").exists() or not any((home / "checkpoints").iterdir())


# --- sampler parameters ---------------------------------------------------------------------------------

class ByteTok:
    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return [1 + b % 15 for b in text.encode("utf-8", "replace")]

    def decode(self, ids) -> str:
        return "".join(chr(96 + i) for i in ids)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=16, n_layer=1, n_head=1, n_embd=8, block_size=8))


NUMBERS = st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 0.0, -0.0, 1e-300, 5e-324, 1e300, 1.0 + 1e-16]), st.text(max_size=3))


@FUZZ
@given(temperature=NUMBERS, top_k=NUMBERS, top_p=NUMBERS, repetition_penalty=NUMBERS,
       max_new_tokens=st.one_of(st.integers(-2, 24), NUMBERS), seed=st.one_of(st.integers(0, 2**63), NUMBERS),
       stop=st.one_of(st.lists(st.text(max_size=2), max_size=2), st.text(max_size=2)))
@example(temperature=1e-300, top_k=None, top_p=None, repetition_penalty=1.0, max_new_tokens=8, seed=0, stop=[])
@example(temperature=1.0, top_k=None, top_p=5e-324, repetition_penalty=1.0, max_new_tokens=8, seed=0, stop=[])
@example(temperature=0.8, top_k=None, top_p=None, repetition_penalty=1e-300, max_new_tokens=8, seed=0, stop=[])
def test_sampler_parameters_give_tokens_or_one_config_error(tiny_model, temperature, top_k, top_p,
                                                            repetition_penalty, max_new_tokens, seed, stop):
    try:
        cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, stop=stop, seed=seed)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    tokens = list(generate(tiny_model, ByteTok(), "abc", cfg))
    assert len(tokens) <= max_new_tokens and all(0 < t.id < 16 and 0.0 <= t.prob <= 1.0 for t in tokens)


@pytest.mark.parametrize("extreme", [dict(temperature=1e-300), dict(temperature=5e-324),
                                     dict(temperature=1.0, top_p=1e-300), dict(temperature=1.0, top_k=1),
                                     dict(temperature=1.0, top_p=5e-324, top_k=10**9)])
def test_vanishing_temperature_or_nucleus_is_greedy(tiny_model, extreme):
    """The limits of the documented knobs: they must become greedy decoding, not NaN probabilities."""
    greedy = [t.id for t in generate(tiny_model, ByteTok(), "abc", SamplingConfig(max_new_tokens=12, temperature=0))]
    for seed in (0, 1):
        got = [t.id for t in generate(tiny_model, ByteTok(), "abc", SamplingConfig(max_new_tokens=12, seed=seed,
                                                                                    **extreme))]
        assert got == greedy
