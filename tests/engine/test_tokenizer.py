"""engine.tokenizer: the three kinds, lossless byte-level BPE, save/load, reports, vocab-size errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.corpora import load_corpus, prepare_builtin
from engine.errors import TokenizerError
from engine.tokenizer import SPECIAL_TOKENS, UNK_TOKEN, Tokenizer, train_tokenizer

TRAIN_CHARS = 120_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A slice of python-docs as a file corpus, shared by the module (training is the slow part)."""
    with prepare_builtin("python-docs").open(encoding="utf-8") as f:
        text = f.read(TRAIN_CHARS)
    path = tmp_path_factory.mktemp("tok") / "docs.txt"
    path.write_text(text, encoding="utf-8")
    return load_corpus(str(path))


@pytest.fixture(scope="module")
def trained(corpus):
    return {"char": train_tokenizer(corpus, "char"), "word": train_tokenizer(corpus, "word", 2000),
            "bpe": train_tokenizer(corpus, "bpe", 600)}


def test_special_tokens_come_first(trained):
    for kind, tok in trained.items():
        assert tok.kind == kind
        assert (tok.eos_id, tok.pad_id) == (0, 1)
        assert [tok.id_to_token(i) for i in (0, 1)] == list(SPECIAL_TOKENS)
        assert (tok.unk_id is None) == (kind == "bpe")


BPE_EXAMPLES = ["", "hello world", "  leading and trailing  ", "tabs\tand\r\nnewlines\n\n", "emoji 🎉👩‍👩‍👧 ok",
                "中文字符 and 日本語", "unseen: ∮ Ʃ ǅ \x00 \x7f", "<|endoftext|>between<|pad|>", "<|endof"]


@pytest.mark.parametrize("text", BPE_EXAMPLES)
def test_bpe_round_trips_examples(trained, text):
    tok = trained["bpe"]
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_bpe_round_trips_any_utf8(trained, text):
    tok = trained["bpe"]
    assert tok.decode(tok.encode(text)) == text


def test_bpe_learns_merges(trained, corpus):
    tok = trained["bpe"]
    assert tok.vocab_size == 600
    report = tok.training_report
    assert report["unk_rate"] == 0.0 and report["chars_per_token"] > 2.0
    assert 0 < report["chars"] <= TRAIN_CHARS * 0.1 + 1


def test_bpe_shows_partial_utf8_bytes_as_hex(trained):
    tok = trained["bpe"]
    ids = tok.encode("🎉")
    assert tok.decode(ids) == "🎉"
    assert "".join(tok.id_to_token(i) for i in ids) == "<0xF0><0x9F><0x8E><0x89>"


def test_char_vocab_is_the_corpus_alphabet(trained, corpus):
    tok = trained["char"]
    alphabet = set(corpus.read_text())
    assert tok.vocab_size == len(alphabet) + 3
    text = corpus.read_text()[:5000]
    assert tok.decode(tok.encode(text)) == text and len(tok.encode(text)) == len(text)
    assert tok.training_report["unk_rate"] == 0.0 and tok.training_report["chars_per_token"] == 1.0


def test_char_maps_unseen_characters_to_unk(trained):
    tok = trained["char"]
    ids = tok.encode("a🎉b")
    assert ids[1] == tok.unk_id and tok.decode(ids) == f"a{UNK_TOKEN}b"
    assert tok.report("a🎉b")["unk_rate"] == pytest.approx(1 / 3)


def test_word_decode_keeps_spacing_and_marks_unknown_words(trained):
    tok = trained["word"]
    known = "The value of the string is\n    returned  as is."
    ids = tok.encode(known)
    assert tok.unk_id not in ids and tok.decode(ids) == known
    assert tok.decode(tok.encode("the zxqwv object")) == f"the{UNK_TOKEN} object"
    assert 0 < tok.training_report["unk_rate"] < 0.5 and tok.training_report["chars_per_token"] > 2.0


def test_save_and_load_keep_kind_ids_and_hash(trained, tmp_path):
    for kind, tok in trained.items():
        path = tmp_path / f"{kind}.json"
        tok.save(path)
        json.loads(path.read_text())  # one plain tokenizer.json
        loaded = Tokenizer.load(path)
        text = "Return the value, ok?\n"
        assert loaded.kind == kind and loaded.vocab_size == tok.vocab_size
        assert loaded.encode(text) == tok.encode(text) and loaded.sha256() == tok.sha256()
    assert len({t.sha256() for t in trained.values()}) == 3


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TokenizerError, match="No tokenizer at"):
        Tokenizer.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": ')
    with pytest.raises(TokenizerError, match="is not a valid tokenizer.json"):
        Tokenizer.load(bad)


@pytest.mark.parametrize("kind, size, message", [
    ("bpe", 200, "A bpe vocab size of 200 is too small: it needs 256 bytes plus 2 special tokens, so choose 258"),
    ("char", 10, "distinct characters, so a char tokenizer needs a vocab size of at least"),
    ("word", 3, "A word vocab size of 3 is too small"),
    ("bpe", 200_000, "supports only"),
    ("word", 200_000, "supports only"),
])
def test_vocab_size_the_corpus_cannot_hold_is_refused(corpus, kind, size, message):
    with pytest.raises(TokenizerError, match=message):
        train_tokenizer(corpus, kind, size)


def test_default_vocab_shrinks_to_what_the_corpus_supports(home):
    path = home / "tiny.txt"
    path.write_text("one two three one two one\n" * 20)
    tok = train_tokenizer(load_corpus(str(path)), "word")
    assert tok.vocab_size < 20 and tok.decode(tok.encode("one two")) == "one two"


def test_unknown_kind_is_refused(corpus):
    with pytest.raises(TokenizerError, match="choose char, word or bpe"):
        train_tokenizer(corpus, "sentencepiece")


def test_training_reports_progress_to_the_end(corpus):
    seen = []
    train_tokenizer(corpus, "bpe", 300, progress=lambda f, label: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3
