"""The decode process's side of engine.decode_process: read requests from the pipe, stream each one's tokens
back in batches, stop at a cancel, exit when the pipe closes.

torch's threads are capped at cores - 1 (engine.process.share_cpu): a one-token step runs on one
thread anyway, and the UI process needs a core to paint what arrives.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from typing import Any

from .checkpoint import ModelCache
from .decode_process import CANCEL, FLUSH_INTERVAL, Batch, DecodeRequest, Failed, Loaded
from .errors import SmallGPTError
from .paths import log_path
from .process import share_cpu
from .sampler import SamplingConfig, generate
from .tasks.instruct import prompt_text


def serve(conn: Any) -> None:
    """Answer requests until the parent closes the pipe (or goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ctrl+c in the terminal is the parent's to handle
    _off_the_terminal()
    share_cpu()
    models = ModelCache()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request == CANCEL:  # it crossed the end of the stream it was meant for
            continue
        try:
            _stream(conn, models, request)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return
        except Exception as error:
            conn.send(_failed(error))


def _off_the_terminal() -> None:
    """The terminal is the UI's (the child inherits it): what the child might print (a library's warning)
    goes to the log instead of onto the screen."""
    try:
        log_path().parent.mkdir(parents=True, exist_ok=True)
        out = os.open(log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        out = os.open(os.devnull, os.O_WRONLY)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    for fd in (1, 2):
        os.dup2(out, fd)
    os.close(stdin)
    os.close(out)


def _stream(conn: Any, models: ModelCache, request: DecodeRequest) -> None:
    cfg = SamplingConfig(**request.sampling)
    prompt = request.prompt if request.chat is None else prompt_text(request.template, request.chat)
    model, _, tokenizer = models.load(request.run_dir, request.checkpoint)
    conn.send(Loaded())
    start = last = time.monotonic()
    batch: list[tuple[str, float]] = []
    count = 0
    for token in generate(model, tokenizer, prompt, cfg):
        if conn.poll() and conn.recv() == CANCEL:
            break
        batch.append((token.text, float(token.prob)))
        count += 1
        now = time.monotonic()
        if now - last >= FLUSH_INTERVAL:
            conn.send(Batch(batch, count, now - start, final=False))
            batch, last = [], now
    conn.send(Batch(batch, count, time.monotonic() - start, final=True))


def _failed(error: Exception) -> Failed:
    """The error with its traceback: ours as itself (a message is all it holds, so the parent rebuilds it),
    any other as a RuntimeError saying what it was (its class might not rebuild from its message)."""
    if not isinstance(error, SmallGPTError):
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return Failed(error, traceback.format_exc())
