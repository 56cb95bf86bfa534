"""engine.dataset: encode once, split by tail, reuse when unchanged, windows straight from the memmap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import dataset as dataset_mod
from engine.corpora import load_corpus
from engine.dataset import TokenDataset, prepare_dataset
from engine.errors import ConfigError, CorpusError
from engine.tokenizer import Tokenizer, train_tokenizer

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400))


@pytest.fixture
def corpus(home):
    path = home / "fox.txt"
    path.write_text(TEXT)
    return load_corpus(str(path))


@pytest.fixture
def char_tok(corpus):
    return train_tokenizer(corpus, "char")


def test_encodes_train_and_val_as_the_tail(corpus, char_tok, home):
    d = prepare_dataset(corpus, char_tok, val_ratio=0.25)
    assert d.parent == home / "corpora" / "cache" / "encoded"
    meta = json.loads((d / "meta.json").read_text())
    n = len(TEXT)  # char-level: one token per character
    assert meta["train_tokens"] + meta["val_tokens"] == n and meta["val_tokens"] == int(n * 0.25)
    assert meta["dtype"] == "uint16" and meta["tokenizer_sha256"] == char_tok.sha256()
    assert meta["corpus_fingerprint"] == corpus.fingerprint() and meta["val_ratio"] == 0.25
    train, val = TokenDataset(d, "train"), TokenDataset(d, "val")
    assert len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
    assert char_tok.decode(train.tokens.tolist()) + char_tok.decode(val.tokens.tolist()) == TEXT
    assert TEXT.endswith(char_tok.decode(val.tokens.tolist()))
    assert sorted(p.name for p in d.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_bpe_encoding_in_pieces_decodes_to_the_corpus(home, small_corpus, monkeypatch):
    monkeypatch.setattr(dataset_mod, "_PIECE_CHARS", 1000)  # many encode_batch pieces per chunk
    corpus = load_corpus(str(small_corpus))
    tok = train_tokenizer(corpus, "bpe", 400)
    d = prepare_dataset(corpus, tok)
    ids = np.concatenate([TokenDataset(d, "train").tokens, TokenDataset(d, "val").tokens]).tolist()
    assert tok.decode(ids) == small_corpus.read_text()
    assert json.loads((d / "meta.json").read_text())["chars_per_token"] > 1.5  # 400 tokens merge a little


def test_unchanged_inputs_reuse_the_encoding(corpus, char_tok, monkeypatch, tmp_path):
    d = prepare_dataset(corpus, char_tok)
    mtime = (d / "train.bin").stat().st_mtime_ns
    char_tok.save(tmp_path / "tok.json")

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(dataset_mod, "_encode_to", fail)
    # Fresh objects for the same file and the same tokenizer (as a new process would have) find the encoding.
    assert prepare_dataset(load_corpus(corpus.source), Tokenizer.load(tmp_path / "tok.json")) == d
    assert (d / "train.bin").stat().st_mtime_ns == mtime


def test_changed_corpus_tokenizer_or_ratio_encode_afresh(corpus, char_tok, home):
    d = prepare_dataset(corpus, char_tok)
    assert prepare_dataset(corpus, char_tok, val_ratio=0.2) != d
    assert prepare_dataset(corpus, train_tokenizer(corpus, "word")) != d
    (home / "fox.txt").write_text(TEXT + "one more line\n")
    changed = load_corpus(str(home / "fox.txt"))
    d2 = prepare_dataset(changed, char_tok)
    assert d2 != d and TokenDataset(d2, "val").meta["val_tokens"] == int(len(TEXT + "one more line\n") * 0.1)


def test_big_vocab_uses_uint32(home):
    from tokenizers import Tokenizer as HF, decoders, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<|pad|>": 1, "<|unk|>": 2, **{f"w{i}": i + 3 for i in range(70_000)}, " ": 70_003}
    hf = HF(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    hf.pre_tokenizer = pre_tokenizers.Split(" ", behavior="isolated")
    hf.decoder = decoders.Fuse()
    tok = Tokenizer(hf)
    path = home / "big.txt"
    path.write_text(" ".join(f"w{i}" for i in range(69_990, 70_000)) * 3)
    d = prepare_dataset(load_corpus(str(path)), tok)
    assert json.loads((d / "meta.json").read_text())["dtype"] == "uint32"
    assert int(TokenDataset(d, "train").tokens.max()) == 70_003  # the space: would wrap around in uint16


def test_get_batch_windows_are_real_and_shifted(corpus, char_tok):
    data = TokenDataset(prepare_dataset(corpus, char_tok), "train")
    x, y = data.get_batch(8, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    whole = torch.from_numpy(data.tokens.astype(np.int64))
    for row_x, row_y in zip(x, y):
        starts = [s for s in range(len(data) - 32) if torch.equal(whole[s:s + 32], row_x)]
        assert starts and any(torch.equal(whole[s + 1:s + 33], row_y) for s in starts)


def test_get_batch_follows_the_generator_so_runs_resume_exactly(corpus, char_tok):
    data = TokenDataset(prepare_dataset(corpus, char_tok), "train")
    g = torch.Generator().manual_seed(7)
    data.get_batch(4, 16, g)
    state = g.get_state()
    second, _ = data.get_batch(4, 16, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(data.get_batch(4, 16, resumed)[0], second)
    assert not torch.equal(data.get_batch(4, 16, torch.Generator().manual_seed(8))[0],
                           data.get_batch(4, 16, torch.Generator().manual_seed(7))[0])


def test_iter_windows_steps_by_stride(corpus, char_tok):
    data = TokenDataset(prepare_dataset(corpus, char_tok), "val")
    block = 64
    batches = list(data.iter_windows(block, batch_size=5))
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    assert all(x.shape[0] <= 5 for x, _ in batches)
    assert xs.shape[0] == len(range(0, len(data) - block, block))
    whole = torch.from_numpy(data.tokens.astype(np.int64))
    assert torch.equal(xs.flatten(), whole[: xs.numel()]) and torch.equal(ys.flatten(), whole[1: xs.numel() + 1])
    overlapping = torch.cat([x for x, _ in data.iter_windows(block, 5, stride=16)])
    assert torch.equal(overlapping[1, :-16], overlapping[0, 16:])


def test_split_shorter_than_a_block_is_a_clear_error(corpus, char_tok):
    val = TokenDataset(prepare_dataset(corpus, char_tok), "val")
    with pytest.raises(CorpusError, match=rf"val split of 'fox.txt' has {len(val)} tokens, fewer than block size \+ 1"):
        val.get_batch(2, len(val), torch.Generator())
    with pytest.raises(CorpusError, match="smaller block size"):
        next(val.iter_windows(len(val) + 5, 2))


def test_too_little_text_and_bad_ratio_are_refused(home, char_tok, corpus):
    path = home / "one.txt"
    path.write_text("l")
    with pytest.raises(CorpusError, match="encodes to 1 token"):
        prepare_dataset(load_corpus(str(path)), char_tok)
    with pytest.raises(ConfigError, match="val_ratio must be between 0 and 1"):
        prepare_dataset(corpus, char_tok, val_ratio=1.0)


def test_progress_reaches_the_end(corpus, char_tok):
    seen = []
    prepare_dataset(corpus, char_tok, progress=lambda f, label: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0
