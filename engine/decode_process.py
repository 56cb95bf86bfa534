"""Generation in a child process, streamed back over a pipe in batches: how the TUI's Generate tab decodes.

A decode loop in the UI process shares the GIL with the UI's event loop: each frame the UI paints holds it
for milliseconds, and the Python-heavy loop of a small model waits. In its own process the loop runs as
fast as the CLI's (docs/PERFORMANCE.md has the numbers).

`DecodeProcess` is the parent's side. It starts the child on the first stream and reuses it; the child keeps
its loaded models (engine.checkpoint.ModelCache, so a new checkpoint is picked up). The child is forked from
a forkserver, which imports torch and the decode modules (engine.decode_child) once for the whole process:
the first start waits for that import (seconds, off the UI thread), a later child (a restart, or the next
app's in a test session) starts in a fraction of a second. Never a plain fork of the parent: it has threads,
and maybe torch's thread pools.

One stream at a time: a request (`DecodeRequest`) is answered by `Loaded`, then `Batch`es of (text, prob)
tokens at most every FLUSH_INTERVAL seconds, the last one `final`; or by the error the child raised (a
SmallGPTError keeps its one sentence; the child's traceback is chained as its cause, for the log). A cancel,
checked by the child between tokens, ends the stream with its final batch.

The child never outlives the parent: it exits when its pipe closes (the parent exited or died, even by
os._exit or SIGKILL), and `close` (or, at a normal exit, multiprocessing's handling of daemon processes)
terminates it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLUSH_INTERVAL = 0.1  # seconds between batches: the UI paints ~10 times a second, tqdm's pace
POLL_INTERVAL = 0.05  # how often the parent, waiting for a batch, looks whether it should cancel
CANCEL = "cancel"
JOIN_TIMEOUT = 2.0


@dataclass
class DecodeRequest:
    run_dir: Path
    checkpoint: str  # latest | best | int8
    prompt: str
    sampling: dict[str, Any]  # SamplingConfig fields (the seed among them)
    # A chat: the conversation, rendered into the prompt with the run's template (`prompt` is then unused).
    chat: list[dict[str, str]] | None = None
    template: dict[str, str] | None = None


@dataclass
class Loaded:
    """The model is loaded; the tokens follow."""


@dataclass
class Batch:
    tokens: list[tuple[str, float]]  # (text, probability) since the last batch
    count: int  # tokens so far
    elapsed: float  # seconds since the first token was asked for
    final: bool  # the stream's last batch: done, stopped at a stop string or EOS, or cancelled


@dataclass
class Failed:
    error: BaseException
    traceback: str


class ChildTraceback(Exception):
    """Where the child's error was raised: chained as the error's cause, so a logged error shows it."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


def _start_child(conn: Any, environ: dict[str, str]) -> None:
    from .decode_child import serve  # the child's side imports torch; the parent's must not

    # A fork of the forkserver has the environment the forkserver started with: the child gets its parent's
    # (SMALLGPT_HOME and the rest, as they are now).
    os.environ.clear()
    os.environ.update(environ)
    serve(conn)


def _start_resource_tracker() -> None:
    """multiprocessing starts its resource tracker (before a forkserver or spawned process) with sys.stderr's
    file descriptor; in a Textual app sys.stderr is a capture without one (fileno -1) and the start fails.
    The tracker writes only leak warnings, for resources this module does not use: it gets /dev/null."""
    from multiprocessing import resource_tracker

    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        resource_tracker.ensure_running()


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["engine.decode_child"])  # read when the forkserver starts: once per process
    return ctx


class DecodeProcess:
    """The parent's handle on one decode process. `stream` may be called from any thread, one stream at a
    time (a second call waits for the first to end); `close` from any thread, at any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held for a whole stream
        self._process: Any = None
        self._conn: Any = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id, None before the first stream."""
        return self._process.pid if self._process is not None else None

    def stream(self, request: DecodeRequest, cancelled: Callable[[], bool]) -> Iterator[Loaded | Batch]:
        """The replies to one request, ending with its final Batch. Once `cancelled()` is true the child is
        told to stop. Nothing comes once the process is closed (or when it is closed meanwhile)."""
        with self._lock:
            if self._closed:
                return
            conn = self._connect()
            if self._closed:  # closed while the child started
                self._drop()
                return
            ended = False
            try:
                conn.send(request)
                asked_to_stop = False
                while True:
                    if not asked_to_stop and cancelled():
                        conn.send(CANCEL)
                        asked_to_stop = True
                    if not conn.poll(POLL_INTERVAL):
                        continue
                    reply = conn.recv()
                    if isinstance(reply, Failed):
                        ended = True
                        raise reply.error from ChildTraceback(reply.traceback)
                    yield reply
                    if isinstance(reply, Batch) and reply.final:
                        ended = True
                        return
            except (EOFError, OSError) as error:
                if ended:  # the child's own error (an OSError too) is raised as it is
                    raise
                ended = True
                self._drop()
                if self._closed:
                    return
                raise RuntimeError("The decode process ended unexpectedly.") from error
            finally:
                if not ended:  # the caller stopped reading mid-stream: what the child sends next is unknown
                    self._drop()

    def close(self) -> None:
        """End the child and start no other; a stream running meanwhile ends with what it had."""
        self._closed = True
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(JOIN_TIMEOUT)
            if process.is_alive():
                process.kill()
        if self._lock.acquire(blocking=False):  # else the running stream sees the pipe close and drops it
            try:
                self._drop()
            finally:
                self._lock.release()

    def _connect(self) -> Any:
        if self._process is not None and self._process.is_alive():
            return self._conn
        self._drop()
        ctx = _context()
        _start_resource_tracker()
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_start_child, args=(theirs, dict(os.environ)), name="smallgpt-decode",
                              daemon=True)
        process.start()
        theirs.close()  # the child holds the only other end: it reads EOF when this process goes away
        self._process, self._conn = process, ours
        return ours

    def _drop(self) -> None:
        """Forget the child (ending it if it still runs)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(JOIN_TIMEOUT)  # the child reads EOF and exits
            if process.is_alive():
                process.kill()
                process.join(JOIN_TIMEOUT)
