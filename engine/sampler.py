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


def generate(model: Any, tokenizer: TokenizerLike, prompt: str, cfg: SamplingConfig) -> Iterator[GeneratedToken]:
    """Stream up to cfg.max_new_tokens tokens after prompt (an empty prompt starts from EOS).

    Stops at EOS (not yielded) or when a stop string appears (the text before it is emitted). Puts the
    model in eval mode while it runs and restores its mode after. Deterministic for a given cfg.seed.
    """
    cfg.validate()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    context = tokenizer.encode(prompt) or [tokenizer.eos_id]
    limit: int | None = model.max_state_len
    state = model.init_state(1)

    @torch.inference_mode()
    def feed(new: list[int]) -> Tensor:
        """Advance the state by the new ids (already appended to context); logits after the last one."""
        nonlocal state
        if limit is not None and model.state_len(state) + len(new) > limit:
            # Slide: restart from the tail of the context. A whole prompt keeps up to block_size tokens;
            # during decoding half a block is kept, so a re-prefill happens once per block_size // 2 tokens.
            state = model.init_state(1)
            new = context[-max(len(new), limit // 2, 1):][-limit:]
        decode_step = len(new) == 1 and device.type == "cpu"  # one thread (see the module docstring)
        with torch_threads(1 if decode_step else None):
            logits, state = model.step(torch.tensor([new], dtype=torch.long, device=device), state)
        return logits[0, -1]

    @torch.inference_mode()
    def pick(logits: Tensor) -> tuple[int, float]:
        return _pick(logits, seen, banned, cfg, generator)

    if cfg.max_new_tokens == 0:
        return
    was_training = model.training
    model.eval()
    try:
        generated: list[int] = []
        pending: list[tuple[int, float]] = []  # generated tokens whose text is not yet emitted
        # The decode window is generated[base:]; its first `emitted` characters are already yielded. Once all
        # of it is, it restarts at the last token, kept as context for decoders that look at neighbours.
        base = emitted = 0
        logits = feed(context)
        # Sized by the model's vocab, which may be padded beyond the tokenizer's (gpt2: 50304).
        seen = torch.zeros(logits.numel(), dtype=torch.bool, device=device)
        seen[torch.tensor(context, device=device)] = True
        # Never sample padding, the unknown-token placeholder, or ids past the tokenizer's vocabulary:
        # they have no text, and an untrained model still gives them some probability.
        banned = torch.zeros_like(seen)
        banned[getattr(tokenizer, "vocab_size", logits.numel()):] = True
        for special in (getattr(tokenizer, "pad_id", None), getattr(tokenizer, "unk_id", None)):
            if special is not None:
                banned[special] = True
        for n in range(cfg.max_new_tokens):
            token, prob = pick(logits)
            if token == tokenizer.eos_id:
                break
            generated.append(token)
            pending.append((token, prob))
            seen[token] = True
            text = tokenizer.decode(generated[base:])
            hits = [i for i in (text.find(s, emitted) for s in cfg.stop) if i >= 0]
            end = min(hits) if hits else _holdback(text, emitted, cfg.stop)
            if hits or end > emitted:
                yield from _flush(pending, text[emitted:end])
                pending, emitted = [], end
            if hits:
                return
            if emitted == len(text):
                base = len(generated) - 1
                emitted = len(tokenizer.decode(generated[base:]))
            if n + 1 < cfg.max_new_tokens:
                context.append(token)
                logits = feed([token])
        if pending:
            yield from _flush(pending, tokenizer.decode(generated[base:])[emitted:])
    finally:
        model.train(was_training)


def _flush(pending: list[tuple[int, float]], text: str) -> Iterator[GeneratedToken]:
    """Yield the pending tokens, the last carrying the text they completed together."""
    for i, (token, prob) in enumerate(pending):
        yield GeneratedToken(id=token, text=text if i == len(pending) - 1 else "", prob=prob)


def generate_text(model: Any, tokenizer: TokenizerLike, prompt: str, cfg: SamplingConfig) -> str:
    """The non-streamed call: the generated text (the prompt not included)."""
    return "".join(t.text for t in generate(model, tokenizer, prompt, cfg))
