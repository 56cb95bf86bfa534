"""`smallgpt serve` end to end: a detached server (real uvicorn on a free 127.0.0.1 port) over a tiny random
run, spoken to with the official openai client. Oracles: the engine's own generate() for the same seed,
the raw HTTP status and error object of each bad request, and the server's own state (/healthz and its
process's CPU time in /proc) for cancellation."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from engine import runs
from engine.rundir import RunDir
from engine.sampler import SamplingConfig, generate
from benchmarks.tiny_run import make_tiny_run
from serve import server
from serve.chat import chat_prompt

KEY = "test-key-123"
ROWS, QUEUE = 4, 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLGPT_HOME", str(home))
        mp.setenv("SMALLGPT_API_KEY", KEY)
        run_dir = make_tiny_run(home)
        info = server.launch(run_dir, ["--port", "0", "--max-batch", str(ROWS), "--max-queue", str(QUEUE)])
        try:
            yield run_dir, info
        finally:
            if runs.server_info(run_dir) is not None:
                runs.stop_server(run_dir)


@pytest.fixture(scope="module")
def engine_model(served):
    from engine.checkpoint import load_model

    model, _, tokenizer = load_model(served[0], "best")
    return model, tokenizer


def client(info, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=info["url"], api_key=kw.pop("api_key", KEY), max_retries=0, timeout=60, **kw)


def raw(info, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON body) of one plain HTTP request."""
    conn = http.client.HTTPConnection(info["host"], info["port"], timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {KEY}", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.headers, json.loads(r.read() or b"null")
    finally:
        conn.close()


def expected(engine_model, prompt: str, cfg: SamplingConfig) -> tuple[str, int]:
    model, tokenizer = engine_model
    tokens = list(generate(model, tokenizer, prompt, cfg))
    return "".join(t.text for t in tokens), len(tokens)


def test_models_and_health(served):
    run_dir, info = served
    assert [m.id for m in client(info).models.list().data] == [run_dir.name]
    status, _, body = raw(info, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok"
    assert raw(info, "GET", "/healthz", headers={"Authorization": ""})[0] == 401
    assert runs.run_info(run_dir).serving == info["url"]


def test_completion_is_generate_with_the_same_seed(served, engine_model):
    _, info = served
    r = client(info).completions.create(model="tiny", prompt="the cat", max_tokens=40, temperature=1.0, seed=11)
    text, n = expected(engine_model, "the cat", SamplingConfig(max_new_tokens=40, temperature=1.0, seed=11))
    assert r.choices[0].text == text and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (7, n, 7 + n)


def test_streamed_equals_non_streamed(served):
    _, info = served
    c = client(info)
    args = dict(model="tiny", prompt="a dog", max_tokens=50, temperature=0.9, top_p=0.9, seed=5)
    whole = c.completions.create(**args)
    chunks = list(c.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 50

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the mat?"}]
    whole = c.chat.completions.create(model="tiny", messages=messages, max_tokens=30, seed=2)
    stream = c.chat.completions.create(model="tiny", messages=messages, max_tokens=30, seed=2, stream=True)
    deltas = [ch.choices[0].delta for ch in stream]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == whole.choices[0].message.content


def test_chat_of_a_plain_model_is_its_turns_as_text(served, engine_model):
    _, info = served
    messages = [{"role": "user", "content": "the cat sat"}, {"role": "assistant", "content": "on the mat"},
                {"role": "user", "content": "and the dog?"}]
    r = client(info).chat.completions.create(model="tiny", messages=messages, max_tokens=40, seed=4)
    prompt, stops = chat_prompt(messages, None)
    assert prompt.endswith("User: and the dog?\nAssistant:")
    text, _ = expected(engine_model, prompt, SamplingConfig(max_new_tokens=40, temperature=1.0, seed=4, stop=stops))
    assert r.choices[0].message.content == text


def test_stop_sequences_end_the_text_before_them(served):
    _, info = served
    c = client(info)
    free = c.completions.create(model="tiny", prompt="the", max_tokens=60, temperature=0, seed=0).choices[0].text
    stop = free[20:22]
    first = free.find(stop)
    for stream in (False, True):
        r = c.completions.create(model="tiny", prompt="the", max_tokens=60, temperature=0, stop=[stop, "\x00"],
                                 stream=stream)
        chunks = list(r) if stream else [r]
        assert "".join(ch.choices[0].text for ch in chunks) == free[:first]
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_prompt_longer_than_the_context_is_cut_and_said_so(served):
    _, info = served
    status, headers, body = raw(info, "POST", "/v1/completions",
                                json.dumps({"model": "tiny", "prompt": "the cat sat on the mat. " * 4,
                                            "max_tokens": 3}).encode())
    assert status == 200 and body["usage"]["prompt_tokens"] == 32  # the tiny model's block_size
    assert "64 of 96 tokens were dropped" in body["warning"] and headers["X-Prompt-Tokens-Dropped"] == "64"


@pytest.mark.parametrize("case", ["bad json", "not an object", "bad field", "no model", "bad messages",
                                  "no key", "wrong key", "unknown model", "too large", "no route"])
def test_each_error_is_an_openai_error_object(served, case):
    _, info = served
    ok = {"model": "tiny", "prompt": "x", "max_tokens": 2}
    body = json.dumps(ok).encode()
    path, headers = "/v1/completions", {}
    if case == "bad json":
        body, status = b"{not json", 400
    elif case == "not an object":
        body, status = b"[1, 2]", 400
    elif case == "bad field":
        body, status = json.dumps({**ok, "temperature": 5}).encode(), 400
    elif case == "no model":
        body, status = json.dumps({"prompt": "x"}).encode(), 400
    elif case == "bad messages":
        path, body, status = "/v1/chat/completions", json.dumps({"model": "tiny", "messages": [{"role": "cat"}]}).encode(), 400
    elif case == "no key":
        headers, status = {"Authorization": ""}, 401
    elif case == "wrong key":
        headers, status = {"Authorization": "Bearer test-key-124"}, 401
    elif case == "unknown model":
        body, status = json.dumps({**ok, "model": "gpt-4"}).encode(), 404
    elif case == "too large":
        body, status = json.dumps({**ok, "prompt": "x" * (2 << 20)}).encode(), 413
    else:
        path, status = "/v2/nothing", 404
    got, _, reply = raw(info, "POST", path, body, headers)
    assert got == status
    assert set(reply) == {"error"} and reply["error"]["message"] and reply["error"]["type"]
    assert "Traceback" not in json.dumps(reply)


def test_the_openai_client_raises_its_own_errors(served):
    _, info = served
    with pytest.raises(openai.AuthenticationError):
        client(info, api_key="nope").models.list()
    with pytest.raises(openai.NotFoundError):
        client(info).completions.create(model="gpt-4", prompt="x")
    with pytest.raises(openai.BadRequestError):
        client(info).completions.create(model="tiny", prompt="x", max_tokens=10**6)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_idle(info, ceiling: float = 60.0) -> dict:
    deadline = time.monotonic() + ceiling
    while True:
        health = raw(info, "GET", "/healthz")[2]
        if health["live"] == 0 and health["waiting"] == 0:
            return health
        assert time.monotonic() < deadline, f"the server never went idle: {health}"
        time.sleep(0.05)


def test_load_every_request_succeeds_or_gets_429_and_memory_settles(served):
    """16 clients x 3 requests against 4 rows + 2 queue places: answers or 429s, nothing hangs."""
    _, info = served

    def one_round() -> dict[str, int]:
        outcomes: dict[str, int] = {"ok": 0, "429": 0}
        lock = threading.Lock()

        def user(i: int) -> None:
            c = client(info)
            for j in range(3):
                try:
                    if (i + j) % 2:
                        r = c.completions.create(model="tiny", prompt="the", max_tokens=20, seed=i)
                        ok = r.choices[0].finish_reason in ("stop", "length")
                    else:
                        chunks = list(c.completions.create(model="tiny", prompt="a", max_tokens=20, stream=True))
                        ok = chunks[-1].choices[0].finish_reason in ("stop", "length")
                    kind = "ok" if ok else "bad"
                except openai.RateLimitError as e:
                    assert e.response.headers["retry-after"] == "1"
                    kind = "429"
                with lock:
                    outcomes[kind] = outcomes.get(kind, 0) + 1

        threads = [threading.Thread(target=user, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a client hung"
        _wait_idle(info)
        return outcomes

    first = one_round()
    rss_first = _rss_kb(info["pid"])
    second = one_round()
    rss_second = _rss_kb(info["pid"])
    for outcome in (first, second):
        assert set(outcome) <= {"ok", "429"} and sum(outcome.values()) == 48 and outcome["ok"] >= ROWS
    assert rss_second < rss_first * 1.1 + 10_000, (rss_first, rss_second)


CLIENT = """
import http.client, json, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]))
conn.request("POST", "/v1/completions", json.dumps({"model": "tiny", "prompt": "the", "max_tokens": 4000,
             "stream": True}), {"Authorization": "Bearer %s"})
r = conn.getresponse()
r.readline()
print("streaming", flush=True)
r.read()
""" % KEY


def test_a_killed_client_stops_its_generation(served):
    _, info = served
    _wait_idle(info)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, info["host"], str(info["port"])], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "streaming"
        assert raw(info, "GET", "/healthz")[2]["live"] == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    health = _wait_idle(info)
    assert health["steps"] < 4000  # it stopped well before its max_tokens
    # Idle now: no more decode steps, and the server's CPU time all but stops.
    cpu0 = _cpu_s(info["pid"])
    time.sleep(0.5)
    assert raw(info, "GET", "/healthz")[2]["steps"] == health["steps"]
    assert _cpu_s(info["pid"]) - cpu0 < 0.2


def test_serving_beyond_loopback_needs_a_key(served):
    env = {**os.environ, "SMALLGPT_HOME": str(served[0].parent.parent)}
    env.pop("SMALLGPT_API_KEY", None)
    r = subprocess.run([sys.executable, "-m", "serve", "tiny", "--host", "0.0.0.0"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "--api-key" in r.stderr


def test_sigterm_drains_a_stream_then_exits(served):
    """Last: `runs stop` while a stream runs; the stream still ends with [DONE], the record goes."""
    run_dir, info = served
    c = client(info)
    stream = c.completions.create(model="tiny", prompt="the", max_tokens=300, stream=True)
    first = next(iter(stream))
    assert runs.server_info(run_dir) is not None
    stopper = threading.Thread(target=runs.stop_server, args=(run_dir,))
    stopper.start()
    rest = list(stream)  # the openai client stops at [DONE]
    stopper.join(60)
    assert (rest or [first])[-1].choices[0].finish_reason == "length"
    assert runs.server_info(run_dir) is None and not RunDir(run_dir).serve_record.exists()
    stat = Path(f"/proc/{info['pid']}/stat")  # exits: gone, or a zombie until this process reaps it
    deadline = time.monotonic() + 30
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the server process did not exit"
        time.sleep(0.05)
