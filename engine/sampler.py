"""Text generation: greedy, temperature, top-k, top-p, repetition penalty, stop strings and EOS, seeded.

`generate` is an iterator: the prompt is prefilled through the model's `step` once, then each new token
costs one `step` (GPT: KV cache; LSTM: carried (h, c)). When a GPT's cache would outgrow block_size the
window slides: a fresh state is prefilled with the last block_size // 2 tokens of the context.

On a CPU a one-token step runs on one thread; prefills keep torch's threads. A step's ops are too small
for a second thread to pay for waking it, and the other cores stay free for the TUI or a training run.

Text pieces are decoded incrementally, as text-generation servers do: the ids from one token before the
last fully emitted point are decoded and the new suffix emitted (so a token costs the same at 10,000 as at
10), held back while it ends in an incomplete UTF-8 character (U+FFFD) or in what may be the start of a
stop string, so "".join(pieces) == tokenizer.decode(ids) (cut before the stop string when one appears).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from .config import SamplingConfig  # declared with the other knobs; imported from here too
from .process import torch_threads


class TokenizerLike(Protocol):
    eos_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class GeneratedToken:
    id: int
    text: str  # its piece of the output; "" while a multi-byte character is still incomplete
    prob: float  # the model's probability of this token (softmax of the raw logits, before any sampling rule)


def _pick(logits: Tensor, seen: Tensor, banned: Tensor, cfg: SamplingConfig,
          generator: torch.Generator) -> tuple[int, float]:
    """Choose the next id from one position's logits [V], never a banned one; returns (id, the model's
    probability of it)."""
    model_probs = torch.softmax(logits.float(), dim=-1)
    logits = logits.float().masked_fill(banned, float("-inf"))
    if cfg.repetition_penalty != 1.0:
        # CTRL: shrink the logits of seen ids towards less likely, whatever their sign.
        penalized = torch.where(logits > 0, logits / cfg.repetition_penalty, logits * cfg.repetition_penalty)
        # A tiny penalty can push seen logits to +-inf: keep them finite so the shift below stays a number.
        logits = torch.where(seen, penalized, logits).nan_to_num()
    if cfg.temperature == 0:
        i = int(torch.argmax(logits))
        return i, float(model_probs[i])
    # The largest logit at 0, and a temperature float32 can hold (1e-300 would round to 0): a tiny one sends
    # the rest to -inf, i.e. greedy, never to 0 / 0 or inf - inf.
    logits = (logits - logits.max()) / max(cfg.temperature, torch.finfo(torch.float32).tiny)
    if cfg.top_k is not None and cfg.top_k < logits.numel():
        # Keep exactly k ids (a threshold on the k-th value would let ties through).
        values, keep = torch.topk(logits, cfg.top_k)
        logits = torch.full_like(logits, float("-inf")).scatter_(0, keep, values)
    probs = torch.softmax(logits, dim=-1)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        # The smallest set of most likely ids whose mass reaches top_p: an id stays if the mass before it < p.
        sorted_probs, order = torch.sort(probs, descending=True)
        drop = (torch.cumsum(sorted_probs, dim=0) - sorted_probs) >= cfg.top_p
        drop[0] = False  # the most likely id always stays (a top_p below float32's range compares as 0)
        probs = probs.scatter(0, order[drop], 0.0)
    i = int(torch.multinomial(probs, 1, generator=generator))
    return i, float(model_probs[i])


def _holdback(text: str, start: int, stops: list[str]) -> int:
    """Where the safe-to-emit part of text ends: before a trailing incomplete character (U+FFFD) and
    before a suffix that could grow into a stop string. Never before start (text already emitted)."""
    end = len(text)
    while end > start and text[end - 1] == "\ufffd":
        end -= 1
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, end - start), held, -1):
            if text.endswith(s[:k], 0, end):
                held = k
                break
    return end - held


class Sequence:
    """One generation's sampling and text state, fed the model's logits one position at a time.

    `generate` drives one with its own model calls; engine.batching drives many, their model calls batched.
    The same seed gives the same tokens either way (up to the float rounding of a batched matmul).
    """

    def __init__(self, tokenizer: TokenizerLike, prompt: str, cfg: SamplingConfig, device: torch.device | str = "cpu"):
        cfg.validate()
        self.tokenizer, self.cfg = tokenizer, cfg
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.context: list[int] = tokenizer.encode(prompt) or [tokenizer.eos_id]  # prompt + generated ids
        self.prompt_tokens = len(self.context)
        self.generated: list[int] = []
        self.pending: list[tuple[int, float]] = []  # generated tokens whose text is not yet emitted
        # The decode window is generated[base:]; its first `emitted` characters are already yielded. Once all
        # of it is, it restarts at the last token, kept as context for decoders that look at neighbours.
        self.base = self.emitted = 0
        self.finish_reason = "length" if cfg.max_new_tokens == 0 else ""  # "stop" (EOS or a stop string) | "length"
        self.seen: Tensor | None = None
        self.banned: Tensor | None = None

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)

    def _start(self, logits: Tensor) -> None:
        # Sized by the model's vocab, which may be padded beyond the tokenizer's (gpt2: 50304).
        self.seen = torch.zeros(logits.numel(), dtype=torch.bool, device=logits.device)
        self.seen[torch.tensor(self.context, device=logits.device)] = True
        # Never sample padding, the unknown-token placeholder, or ids past the tokenizer's vocabulary:
        # they have no text, and an untrained model still gives them some probability.
        self.banned = torch.zeros_like(self.seen)
        self.banned[getattr(self.tokenizer, "vocab_size", logits.numel()):] = True
        for special in (getattr(self.tokenizer, "pad_id", None), getattr(self.tokenizer, "unk_id", None)):
            if special is not None:
                self.banned[special] = True

    @torch.inference_mode()
    def advance(self, logits: Tensor) -> list[GeneratedToken]:
        """Pick the next token from logits [V] (the model's output after `context`); return the tokens
        whose text resolved with it. Then either `done` or `context[-1]` is the next id to feed."""
        if self.seen is None:
            self._start(logits)
        token, prob = _pick(logits, self.seen, self.banned, self.cfg, self.generator)
        if token == self.tokenizer.eos_id:
            self.finish_reason = "stop"
            return self._rest()
        self.generated.append(token)
        self.pending.append((token, prob))
        self.seen[token] = True
        text = self.tokenizer.decode(self.generated[self.base:])
        hits = [i for i in (text.find(s, self.emitted) for s in self.cfg.stop) if i >= 0]
        end = min(hits) if hits else _holdback(text, self.emitted, self.cfg.stop)
        out: list[GeneratedToken] = []
        if hits or end > self.emitted:
            out = list(_flush(self.pending, text[self.emitted:end]))
            self.pending, self.emitted = [], end
        if hits:
            self.finish_reason = "stop"
            return out
        if self.emitted == len(text):
            self.base = len(self.generated) - 1
            self.emitted = len(self.tokenizer.decode(self.generated[self.base:]))
        self.context.append(token)
        if len(self.generated) == self.cfg.max_new_tokens:
            self.finish_reason = "length"
            out += self._rest()
        return out

    def _rest(self) -> list[GeneratedToken]:
        """The pending tokens at the end, carrying whatever text is still held back."""
        if not self.pending:
            return []
        return list(_flush(self.pending, self.tokenizer.decode(self.generated[self.base:])[self.emitted:]))


def window(context: list[int], new: int, state_len: int, limit: int | None) -> list[int] | None:
    """The ids to prefill a fresh state with when feeding the last `new` ids of context after state_len
    cached ones would pass limit; None when they fit. A whole prompt keeps up to `limit` tokens; during
    decoding half a window is kept, so a re-prefill happens once per limit // 2 tokens."""
    if limit is None or state_len + new <= limit:
        return None
    return context[-max(new, limit // 2, 1):][-limit:]


def generate(model: Any, tokenizer: TokenizerLike, prompt: str, cfg: SamplingConfig) -> Iterator[GeneratedToken]:
    """Stream up to cfg.max_new_tokens tokens after prompt (an empty prompt starts from EOS).

    Stops at EOS (not yielded) or when a stop string appears (the text before it is emitted). Puts the
    model in eval mode while it runs and restores its mode after. Deterministic for a given cfg.seed.
    """
    device = next(model.parameters()).device
    seq = Sequence(tokenizer, prompt, cfg, device)
    if seq.done:
        return
    state = model.init_state(1)

    @torch.inference_mode()
    def feed(new: list[int]) -> Tensor:
        """Advance the state by the new ids (the tail of the context); logits after the last one."""
        nonlocal state
        slid = window(seq.context, len(new), model.state_len(state), model.max_state_len)
        if slid is not None:
            state, new = model.init_state(1), slid
        decode_step = len(new) == 1 and device.type == "cpu"  # one thread (see the module docstring)
        with torch_threads(1 if decode_step else None):
            logits, state = model.step(torch.tensor([new], dtype=torch.long, device=device), state)
        return logits[0, -1]

    was_training = model.training
    model.eval()
    try:
        logits = feed(seq.context)
        while True:
            yield from seq.advance(logits)
            if seq.done:
                return
            logits = feed(seq.context[-1:])
    finally:
        model.train(was_training)


def _flush(pending: list[tuple[int, float]], text: str) -> Iterator[GeneratedToken]:
    """Yield the pending tokens, the last carrying the text they completed together."""
    for i, (token, prob) in enumerate(pending):
        yield GeneratedToken(id=token, text=text if i == len(pending) - 1 else "", prob=prob)


def generate_text(model: Any, tokenizer: TokenizerLike, prompt: str, cfg: SamplingConfig) -> str:
    """The non-streamed call: the generated text (the prompt not included)."""
    return "".join(t.text for t in generate(model, tokenizer, prompt, cfg))
