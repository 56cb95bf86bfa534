"""engine.decode_process: a stream decoded in the child equals engine.sampler.generate in this process; a
cancel stops it and the same child serves the next request; an error comes back as itself; the child is
gone after close, and when its parent dies without closing it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.tiny_run import make_tiny_run
from engine.decode_process import Batch, ChildTraceback, DecodeProcess, DecodeRequest, Loaded
from engine.errors import CheckpointError


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"the decode process {pid} is still running"
        time.sleep(0.05)


@pytest.fixture
def run(home) -> Path:
    return make_tiny_run(home)


@pytest.fixture
def decoder():
    d = DecodeProcess()
    yield d
    d.close()


def streamed(replies) -> tuple[list[tuple[str, float]], list]:
    replies = list(replies)
    return [t for r in replies if isinstance(r, Batch) for t in r.tokens], replies


def test_a_stream_equals_the_engine_in_process_with_the_same_seed(run, decoder):
    from engine.checkpoint import load_model
    from engine.sampler import SamplingConfig, generate

    sampling = {"max_new_tokens": 150, "seed": 11, "temperature": 0.9, "top_k": 8}
    tokens, replies = streamed(decoder.stream(DecodeRequest(run, "best", "the cat", sampling), lambda: False))
    assert isinstance(replies[0], Loaded)
    assert [r.final for r in replies[1:]] == [False] * (len(replies) - 2) + [True]
    assert replies[-1].count == len(tokens)

    model, _, tokenizer = load_model(run, "best")
    expected = [(t.text, t.prob) for t in generate(model, tokenizer, "the cat", SamplingConfig(**sampling))]
    assert [text for text, _ in tokens] == [text for text, _ in expected]
    assert [p for _, p in tokens] == pytest.approx([p for _, p in expected], rel=1e-5)


def test_a_cancel_stops_the_stream_and_the_same_child_serves_the_next(run, decoder):
    seen: list[Batch] = []
    endless = DecodeRequest(run, "best", "the cat", {"max_new_tokens": 1_000_000, "seed": 0})
    for reply in decoder.stream(endless, lambda: sum(len(b.tokens) for b in seen) > 0):
        if isinstance(reply, Batch):
            seen.append(reply)
    assert seen[-1].final and 0 < seen[-1].count < 1_000_000
    pid = decoder.pid
    tokens, _ = streamed(decoder.stream(DecodeRequest(run, "best", "a", {"max_new_tokens": 20, "seed": 1}),
                                        lambda: False))
    assert len(tokens) == 20 and decoder.pid == pid


def test_an_error_comes_back_as_its_one_sentence_with_the_childs_traceback(run, decoder):
    with pytest.raises(CheckpointError, match="no int8 checkpoint") as raised:
        list(decoder.stream(DecodeRequest(run, "int8", "x", {}), lambda: False))
    assert isinstance(raised.value.__cause__, ChildTraceback)
    assert "load_model" in str(raised.value.__cause__)  # where it was raised, for the log


def test_close_ends_the_child_and_so_does_its_parents_death(run, decoder):
    list(decoder.stream(DecodeRequest(run, "best", "a", {"max_new_tokens": 5}), lambda: False))
    pid = decoder.pid
    decoder.close()
    wait_gone(pid)
    assert list(decoder.stream(DecodeRequest(run, "best", "a", {}), lambda: False)) == []  # closed for good

    # A parent that ends mid-stream without closing anything (os._exit, as the TUI does on a hang-up).
    code = ("import os, sys\n"
            "from engine.decode_process import DecodeProcess, DecodeRequest, Batch\n"
            "d = DecodeProcess()\n"
            f"for r in d.stream(DecodeRequest({str(run)!r}, 'best', 'a', {{'max_new_tokens': 10**6}}), lambda: False):\n"
            "    if isinstance(r, Batch):\n"
            "        print(d.pid, flush=True)\n"
            "        os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], env=os.environ)
    assert out.returncode == 0, out.stderr
    wait_gone(int(out.stdout))
