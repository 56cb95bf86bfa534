"""Char-level, word-level and byte-level BPE tokenizers (HF `tokenizers`), each saved as one tokenizer.json.

The kind is read back from the JSON's structure, so any tokenizer.json loads (a GPT-2 one is `bpe`):
  char  BPE model with no merges and no pre-tokenizer: one token per character. The alphabet is every
        character of the whole corpus; a character never seen maps to <|unk|>.
  word  WordLevel over GPT-2-style pieces (" word", "word", " ..." punctuation runs, whitespace runs): the
        spaces live inside the tokens, so decode reproduces the text exactly, except that a word outside the
        vocabulary comes back as <|unk|> (the only loss).
  bpe   byte-level BPE (GPT-2 style): every byte is in the base vocabulary, so decode(encode(x)) == x for any
        UTF-8 text, characters never seen in training included; there is no <|unk|>.
Special tokens: <|endoftext|> (id 0) and <|pad|> (id 1), then <|unk|> (id 2) for char and word. A tokenizer
made elsewhere needs only <|endoftext|>: GPT-2's (id 50256, no pad token) loads as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from .errors import TokenizerError

# HF `tokenizers` is imported where a tokenizer is built or read, so listing runs never loads it.
if TYPE_CHECKING:
    import tokenizers

    from .corpora import Corpus

Progress = Callable[[float, str], None]

SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")
UNK_TOKEN = "<|unk|>"
KINDS = ("char", "word", "bpe")
DEFAULT_VOCAB_SIZE = {"word": 8192, "bpe": 4096}
# GPT-2's pre-tokenization pattern: a word keeps its leading space, whitespace runs stand alone.
_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SURROGATE = re.compile("[\ud800-\udfff]")
_REPORT_MAX_CHARS = 1 << 20  # the held-out report encodes at most this much text: enough for stable rates


class Tokenizer:
    """A trained tokenizer: encode/decode, special-token ids, save/load as one tokenizer.json."""

    def __init__(self, hf: tokenizers.Tokenizer):
        self._tk = hf
        self.kind = _infer_kind(json.loads(hf.to_str()))
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.eos_id = self._special_id(SPECIAL_TOKENS[0])
        self.pad_id: int | None = hf.token_to_id(SPECIAL_TOKENS[1])  # None in GPT-2's: nothing requires it
        self.unk_id: int | None = hf.token_to_id(UNK_TOKEN)
        # Set by train_tokenizer: report() on the held-out tail of the corpus it was trained on.
        self.training_report: dict | None = None
        self._byte_decoder = _unicode_to_byte() if self.kind == "bpe" else None
        # Added tokens (ours, or a foreign tokenizer's) are whole strings, not byte-level pieces.
        self._added = {t.content for t in hf.get_added_tokens_decoder().values()}

    def _special_id(self, token: str) -> int:
        i = self._tk.token_to_id(token)
        if i is None:
            raise TokenizerError(f"This tokenizer has no {token} token: train one with `smallgpt tokenizer train`.")
        return i

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(_no_surrogates(text), add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once (the Rust side runs them in parallel)."""
        return [e.ids for e in self._tk.encode_batch([_no_surrogates(t) for t in texts], add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        # Special tokens are kept: a text holding "<|endoftext|>" must round-trip too.
        return self._tk.decode(list(ids), skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        """The display form of one token: its text; a byte-level piece that is not whole UTF-8 as <0xNN>."""
        token = self._tk.id_to_token(i)
        if token is None:
            raise TokenizerError(f"Token id {i} is outside this tokenizer's vocabulary of {self.vocab_size}.")
        if self._byte_decoder is None or token in self._added:
            return token
        raw = bytes(self._byte_decoder[c] for c in token)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{b:02X}>" for b in raw)

    def save(self, path: Path) -> None:
        """Written atomically: a reader never sees half a tokenizer.json."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self._tk.to_str(pretty=True))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"No tokenizer at '{path}': train one with `smallgpt tokenizer train`.")
        try:
            hf = HFTokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception:  # the Rust side raises a bare Exception for any malformed file
            raise TokenizerError(f"'{path}' is not a valid tokenizer.json: train a new one with "
                                 "`smallgpt tokenizer train`.") from None
        return cls(hf)

    def to_json(self) -> str:
        return self._tk.to_str()

    def sha256(self) -> str:
        """Hash of the tokenizer's JSON: a dataset encoded with it is valid exactly while this is unchanged."""
        return hashlib.sha256(self._tk.to_str().encode("utf-8")).hexdigest()

    def report(self, text: str) -> dict:
        """vocab_size, chars_per_token and unk_rate (share of <|unk|> tokens) of text."""
        ids = self.encode(text)
        n = max(1, len(ids))
        unk = ids.count(self.unk_id) if self.unk_id is not None else 0
        return {"vocab_size": self.vocab_size, "chars_per_token": len(text) / n, "unk_rate": unk / n,
                "tokens": len(ids), "chars": len(text)}


def train_tokenizer(corpus: "Corpus", kind: str, vocab_size: int | None = None, progress: Progress | None = None,
                    *, holdout: float = 0.1) -> Tokenizer:
    """Train a tokenizer of `kind` on the corpus, fed as a stream (never the whole text at once).

    word and bpe learn from all but the last `holdout` of the text; char takes its alphabet from the whole
    text (an unseen character would be an <|unk|> the model could never get right). `training_report` is
    report() on (at most 1M characters of) that held-out tail. vocab_size None means the kind's default,
    shrunk to what the corpus supports; a given vocab_size the corpus cannot fill is an error.
    """
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    if kind not in KINDS:
        raise TokenizerError(f"Unknown tokenizer kind '{kind}': choose char, word or bpe.")
    if not 0.0 <= holdout < 1.0:
        raise TokenizerError(f"The held-out share must be at least 0 and below 1 (got {holdout}).")
    # Pass 1 counts characters (and, for char, which ones), so the held-out tail can be cut exactly.
    alphabet: Counter[str] = Counter()
    total = 0
    blank = True
    for chunk in corpus.iter_text(progress=_scaled(progress, 0.0, 0.3, "reading")):
        total += len(chunk)
        blank = blank and chunk.isspace()
        if kind == "char":
            alphabet.update(chunk)
    if blank:
        raise TokenizerError(f"The corpus '{corpus.name}' is empty: a tokenizer needs some text to learn from.")
    n_train = total - int(total * holdout)
    heldout: list[str] = []

    def training_text() -> Iterator[str]:
        seen = 0
        kept = 0
        for chunk in corpus.iter_text(progress=_scaled(progress, 0.3, 0.9, "training")):
            head, tail = chunk[:max(0, n_train - seen)], chunk[max(0, n_train - seen):]
            seen += len(chunk)
            if head:
                yield head
            if tail and kept < _REPORT_MAX_CHARS:
                heldout.append(tail[:_REPORT_MAX_CHARS - kept])
                kept += len(heldout[-1])

    specials = [*SPECIAL_TOKENS, UNK_TOKEN] if kind != "bpe" else list(SPECIAL_TOKENS)
    if kind == "char":
        chars = sorted(alphabet)
        needed = len(chars) + len(specials)
        if vocab_size is not None and vocab_size < needed:
            raise TokenizerError(f"The corpus has {len(chars)} distinct characters, so a char tokenizer needs a vocab "
                                 f"size of at least {needed} (with the special tokens): choose {needed} or more.")
        vocab = {t: i for i, t in enumerate([*specials, *chars])}
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(specials)
        for _ in training_text():  # the held-out tail for the report
            pass
    else:
        if kind == "bpe":
            minimum = 256 + len(specials)
            hf = HFTokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
        else:
            minimum = len(specials) + 1
            hf = HFTokenizer(models.WordLevel(unk_token=UNK_TOKEN))
            hf.pre_tokenizer = pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated")
            hf.decoder = decoders.Fuse()
        if vocab_size is not None and vocab_size < minimum:
            what = "256 bytes" if kind == "bpe" else "at least one word"
            raise TokenizerError(f"A {kind} vocab size of {vocab_size} is too small: it needs {what} plus "
                                 f"{len(specials)} special tokens, so choose {minimum} or more.")
        target = vocab_size or DEFAULT_VOCAB_SIZE[kind]
        if kind == "bpe":
            trainer = trainers.BpeTrainer(vocab_size=target, special_tokens=specials, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        else:
            trainer = trainers.WordLevelTrainer(vocab_size=target, special_tokens=specials, show_progress=False)
        hf.train_from_iterator(training_text(), trainer=trainer)
        got = hf.get_vocab_size(with_added_tokens=True)
        if vocab_size is not None and got < vocab_size:
            unit = "distinct words" if kind == "word" else "tokens worth merging"
            raise TokenizerError(f"The corpus '{corpus.name}' supports only {got} {kind} tokens ({unit}), fewer "
                                 f"than the vocab size {vocab_size}: choose --vocab-size {got} or less, or a bigger "
                                 "corpus.")
    tok = Tokenizer(hf)
    if progress:
        progress(0.95, "measuring")
    report_text = "".join(heldout)
    if report_text:
        tok.training_report = tok.report(report_text)
    if progress:
        progress(1.0, "done")
    return tok


def _scaled(progress: Progress | None, lo: float, hi: float, label: str) -> Progress | None:
    """A sub-phase's progress mapped into [lo, hi] of the whole."""
    if progress is None:
        return None
    return lambda f, _label: progress(lo + (hi - lo) * f, label)


def _infer_kind(spec: dict) -> str:
    model = spec.get("model", {}).get("type")
    pre = spec.get("pre_tokenizer") or {}
    if model == "WordLevel":
        return "word"
    if model == "BPE":
        if pre.get("type") == "ByteLevel" or (spec.get("decoder") or {}).get("type") == "ByteLevel":
            return "bpe"
        if not pre:
            return "char"
    raise TokenizerError(f"Unsupported tokenizer ({model} model with a {pre.get('type', 'missing')} pre-tokenizer): "
                         "train one with `smallgpt tokenizer train --kind char|word|bpe`.")


def _unicode_to_byte() -> dict[str, int]:
    """Byte-level BPE writes each byte as one printable character (GPT-2's table); this inverts it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _no_surrogates(text: str) -> str:
    """Lone surrogates (invalid UTF-8 in argv or a file name, decoded with surrogateescape) are no text the
    Rust side accepts (it raises a bare TypeError): U+FFFD instead, as the corpus reader does."""
    return _SURROGATE.sub("\ufffd", text)
