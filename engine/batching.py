"""Continuous batching: many generations share each decode step.

A `Batcher` owns a model and one batch state of `rows` rows, and runs in its own thread. Requests wait in a
bounded queue; before each decode step the waiting ones are prefilled into free rows, then one
`model.step_rows` feeds the next token of every live row at once, each row at its own position. So a
request joins a running batch instead of waiting for it, and n streams cost one pass over the weights per
step instead of n. Each row is sampled by its own `sampler.Sequence` (its seed, its stop strings), so a
request gives the same tokens as `sampler.generate` with the same settings, up to the float rounding of a
batched matmul.

Live rows are always rows 0..n-1 (a finished row takes the last live row's cache), so a step reads a
contiguous slice and gathers nothing. A cancelled request leaves before the next step.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import SmallGPTError
from .process import torch_threads
from .sampler import GeneratedToken, SamplingConfig, Sequence, window

log = logging.getLogger(__name__)


class QueueFull(SmallGPTError):
    """Every row is busy and the waiting queue is at its bound."""


@dataclass(eq=False)
class Request:
    """One generation. `deliver(tokens, finish)` is called from the batcher's thread with the tokens whose
    text resolved, finish "" while more may come, then once with "stop", "length", "cancelled" or "error"."""

    prompt: str
    cfg: SamplingConfig
    deliver: Callable[[list[GeneratedToken], str], None]
    seq: Sequence | None = None  # made on submit (it tokenizes the prompt)
    prompt_dropped: int = 0  # prompt tokens cut from the left to fit the model's context
    cancelled: bool = field(default=False, repr=False)

    def cancel(self) -> None:
        """Stop at the next step (from any thread); deliver gets "cancelled" unless it already finished."""
        self.cancelled = True


class Batcher:
    def __init__(self, model: Any, tokenizer: Any, rows: int = 8, max_queue: int = 32):
        if rows < 1 or max_queue < 0:
            raise ValueError("rows must be >= 1 and max_queue >= 0")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.rows, self.max_queue = rows, max_queue
        self.device = next(model.parameters()).device
        self.limit: int | None = model.max_state_len
        self.state = model.init_state(rows)
        self.live: list[Request] = []  # live[i] is in row i
        self.lengths: list[int] = []  # tokens cached in row i
        self.waiting: deque[Request] = deque()
        self.steps = 0  # decode steps taken (tests watch it to see generation stop)
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    # --- the caller's side (any thread) ---

    def start(self) -> "Batcher":
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()
        return self

    def submit(self, request: Request) -> Request:
        """Queue a request; QueueFull when every row is busy and max_queue requests already wait."""
        request.seq = Sequence(self.tokenizer, request.prompt, request.cfg, self.device)
        if self.limit is not None:
            request.prompt_dropped = max(0, request.seq.prompt_tokens - self.limit)
        with self._wake:
            if self._closing:
                raise QueueFull("The server is shutting down: try again once it is back.")
            if self.busy >= self.rows + self.max_queue:
                raise QueueFull(f"All {self.rows} generation slots are busy and {self.max_queue} requests wait "
                                f"already: retry in a moment.")
            self.waiting.append(request)
            self._wake.notify()
        return request

    @property
    def busy(self) -> int:
        """Requests live or waiting."""
        return len(self.live) + len(self.waiting)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything still live or waiting and stop the thread."""
        with self._wake:
            self._closing = True
            for r in (*self.live, *self.waiting):
                r.cancel()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the batcher's thread ---

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self.live and not self.waiting:
                    self._wake.wait()
                if self._closing and not self.live and not self.waiting:
                    return
                # Free rows go to the oldest waiting requests; cancelled ones leave the queue at once.
                admitted, kept = [], deque()
                for r in self.waiting:
                    fits = len(self.live) + sum(not a.cancelled for a in admitted) < self.rows
                    (admitted if r.cancelled or fits else kept).append(r)
                self.waiting = kept
            try:
                with torch.inference_mode():
                    self._tick(admitted)
            except Exception:  # a bug: fail what is in flight, keep serving
                log.exception("batched decoding failed")
                for r in (*self.live, *admitted):
                    if not r.seq.done:
                        r.deliver([], "error")
                self.live, self.lengths = [], []

    def _tick(self, admitted: list[Request]) -> None:
        """Admit the new requests into rows, drop finished or cancelled ones, then one decode step."""
        for r in admitted:
            if r.cancelled or r.seq.done:  # cancelled while waiting, or max_tokens 0
                r.deliver([], "cancelled" if r.cancelled else r.seq.finish_reason)
                continue
            row = len(self.live)
            ids = window(r.seq.context, len(r.seq.context), 0, self.limit) or r.seq.context
            logits = self.model.prefill_row(self._tensor(ids).view(1, -1), self.state, row)
            self.live.append(r)
            self.lengths.append(len(ids))
            self._advance(r, logits[-1])
        self._drop_finished()
        if not self.live:
            return
        for i, r in enumerate(self.live):
            # Slide a full row as sampler.generate does: re-prefill the window but its last id, which the
            # step feeds.
            ids = window(r.seq.context, 1, self.lengths[i], self.limit)
            if ids is not None:
                if len(ids) > 1:
                    self.model.prefill_row(self._tensor(ids[:-1]).view(1, -1), self.state, i)
                self.lengths[i] = len(ids) - 1
        n = len(self.live)
        tokens = self._tensor([r.seq.context[-1] for r in self.live])
        positions = self._tensor(self.lengths)
        # One thread, as the sampler's decode steps (see engine.sampler): a step's ops are too small to share.
        with torch_threads(1 if self.device.type == "cpu" else None):
            logits = self.model.step_rows(tokens, self.state, positions)
        self.steps += 1
        for i in range(n):
            self.lengths[i] += 1
            self._advance(self.live[i], logits[i])
        self._drop_finished()

    def _advance(self, r: Request, logits: torch.Tensor) -> None:
        if r.cancelled:
            return
        tokens = r.seq.advance(logits)
        if tokens or r.seq.done:
            r.deliver(tokens, r.seq.finish_reason)

    def _drop_finished(self) -> None:
        """Free the rows of finished and cancelled requests; the last live rows move into the gaps."""
        for i in reversed(range(len(self.live))):
            r = self.live[i]
            if not (r.seq.done or r.cancelled):
                continue
            if r.cancelled and not r.seq.done:
                r.deliver([], "cancelled")
            last = len(self.live) - 1
            if i != last:
                self.model.move_row(self.state, last, i, self.lengths[last])
                self.live[i], self.lengths[i] = self.live[last], self.lengths[last]
            self.live.pop()
            self.lengths.pop()

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.device)
