"""Security: nothing is ever unpickled, downloads stay on http(s) within their cap and hash, run names
stay inside checkpoints/, and no subprocess goes through a shell."""

from __future__ import annotations

import ast
import hashlib
import http.server
import io
import json
import os
import pickle
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from engine import checkpoint as ckpt
from engine.config import ConfigError, RunConfig, apply_overrides
from engine.corpora import load_corpus
from engine.errors import CheckpointError, CorpusError, RunError, SmallGPTError, TokenizerError
from engine.runs import create_run, is_running, launch, resolve_run, run_info, run_path
from benchmarks.tiny_run import make_tiny_run

ROOT = Path(__file__).resolve().parents[2]


# --- no pickle on any load path ------------------------------------------------------------------------

class Evil:
    """Unpickling this runs code: it creates the marker file. Nothing may ever create it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def evil_payloads(marker: Path) -> dict[str, bytes]:
    """A bare pickle and torch.save's zip format (a pickle inside), both of which would run Evil."""
    import torch

    buf = io.BytesIO()
    torch.save({"weight": Evil(marker)}, buf)
    return {"pickle": pickle.dumps(Evil(marker)), "torch.save": buf.getvalue()}


@pytest.fixture
def run(home) -> Path:
    return make_tiny_run(home)


def _resume(run: Path) -> None:
    from engine.trainer import train

    train(run, resume=True)


def _make_int8_dir(run: Path) -> None:
    """An int8 checkpoint directory the loader accepts up to its weights (those get replaced)."""
    from engine.quantize import FORMAT

    int8 = run / "ckpt" / "int8"
    shutil.copytree(run / "ckpt" / "latest", int8)
    state = json.loads((int8 / "state.json").read_text())
    (int8 / "state.json").write_text(json.dumps({**state, "format": FORMAT}))


def _load_int8(run: Path) -> None:
    ckpt.load_model(run, "int8")


def _load_optimizer(run: Path) -> None:
    import torch

    from engine.models import build_model

    cfg = RunConfig.load(run / "config.toml")
    model = build_model(cfg.model)
    ckpt.load_training_state(run, model, torch.optim.AdamW(model.parameters()))


# (the file replaced by the payload, what loads it, the error expected)
LOAD_PATHS: list[tuple[str, Callable[[Path], Any], type[SmallGPTError]]] = [
    ("ckpt/latest/model.safetensors", lambda r: ckpt.load_model(r, "latest"), CheckpointError),
    ("ckpt/best/model.safetensors", lambda r: ckpt.load_model(r, "best"), CheckpointError),
    ("ckpt/latest/model.safetensors", _resume, CheckpointError),
    ("ckpt/latest/optim.safetensors", _load_optimizer, CheckpointError),
    ("ckpt/latest/state.json", lambda r: ckpt.read_state(ckpt.checkpoint_dir(r, "latest")), CheckpointError),
    ("ckpt/latest/state.json", _resume, CheckpointError),
    ("ckpt/int8/model.safetensors", _load_int8, CheckpointError),
    ("tokenizer.json", lambda r: ckpt.load_model(r, "latest"), TokenizerError),
    ("config.toml", lambda r: ckpt.load_model(r, "latest"), ConfigError),
]


@pytest.mark.parametrize("payload", ["pickle", "torch.save"])
@pytest.mark.parametrize("target,load,error", LOAD_PATHS, ids=[f"{t}-{getattr(f, '__name__', 'load')}"
                                                               for t, f, _ in LOAD_PATHS])
def test_a_planted_pickle_is_refused_and_never_runs(run, tmp_path, payload, target, load, error):
    marker = tmp_path / "pwned"
    if target.startswith("ckpt/int8"):
        _make_int8_dir(run)
    planted = run / target
    planted.write_bytes(evil_payloads(marker)[payload])
    with pytest.raises(error) as e:
        load(run)
    assert not marker.exists(), "the pickle ran"
    message = str(e.value)
    assert "\n" not in message and str(planted) in message, message


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "os.execl",
               "os.execlp", "os.spawnl", "os.spawnlp", "commands.getoutput"}
SUBPROCESS_CALLS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                    "subprocess.check_output", "asyncio.create_subprocess_exec"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every unpickling, shell or string-command call in source, as 'file:line what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            const = {k: v.value for k, v in kw.items() if isinstance(v, ast.Constant)}
            if (name == "torch.load" or name.endswith(".torch.load")) and const.get("weights_only") is not True:
                found.append(f"{where} torch.load without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") and \
                    const.get("allow_pickle", False) is not False:
                found.append(f"{where} numpy.load with allow_pickle")
            if name in SHELL_CALLS:
                found.append(f"{where} {name}")
            if "shell" in kw and const.get("shell") is not False:
                found.append(f"{where} {name or 'call'} with shell=")
            if name in SUBPROCESS_CALLS and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                found.append(f"{where} {name} with a command string")
    return found


def test_the_scanner_catches_each_unsafe_pattern():
    bad = """
import pickle
from marshal import loads
import os, subprocess, torch, numpy as np
torch.load(f)
torch.load(f, weights_only=False)
np.load(f, allow_pickle=True)
os.system("ls")
os.popen("ls")
subprocess.run("ls -l", shell=True)
subprocess.Popen(f"ls {x}")
subprocess.check_output(["ls"], shell=flag)
"""
    assert len(unsafe_calls(bad)) == 11
    good = """
import subprocess, torch, numpy as np
torch.load(f, weights_only=True)
np.load(f)
subprocess.Popen([sys.executable, "-m", "engine"], shell=False)
"""
    assert unsafe_calls(good) == []


def test_engine_and_tui_never_unpickle_nor_use_a_shell():
    files = sorted(p for d in ("engine", "tui") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20
    problems = [hit for p in files for hit in unsafe_calls(p.read_text(), str(p.relative_to(ROOT)))]
    assert problems == []


# --- downloads ------------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    requested: list[str] = []

    def do_GET(self) -> None:
        self.requested.append(self.path)
        code, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 only; yields its base URL."""
    _Handler.routes, _Handler.requested = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def downloads(home: Path) -> list[Path]:
    d = home / "corpora" / "cache" / "downloads"
    return sorted(d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "FILE:///etc/passwd", "ftp://127.0.0.1/x.txt",
                                 "gopher://127.0.0.1/x", "jar:http://127.0.0.1/x!/y"])
def test_only_http_and_https_urls_are_fetched(home, url):
    with pytest.raises(CorpusError, match="only http:// and https:// URLs"):
        load_corpus(url)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "FTP://127.0.0.1/x.txt", "data:text/plain,owned"])
def test_a_redirect_chain_ending_off_http_is_refused(home, server, target):
    _Handler.routes["/a"] = (301, {"Location": "/b"}, b"")
    _Handler.routes["/b"] = (307, {"Location": f"{server}/c"}, b"")
    _Handler.routes["/c"] = (308, {"Location": target}, b"")
    with pytest.raises(CorpusError, match=f"redirects to {target}, which is not http"):
        load_corpus(f"{server}/a")
    assert _Handler.requested == ["/a", "/b", "/c"] and downloads(home) == []


def test_a_redirect_to_http_is_followed_and_still_capped_and_hashed(home, server):
    body = b"followed " * 100
    _Handler.routes["/old"] = (302, {"Location": "/new"}, b"")
    _Handler.routes["/new"] = (200, {}, body)
    with pytest.raises(CorpusError, match=f"larger than the cap of {len(body) - 1} bytes and was aborted"):
        load_corpus(f"{server}/old", max_download_bytes=len(body) - 1)
    assert downloads(home) == []
    assert load_corpus(f"{server}/old", max_download_bytes=len(body)).read_text() == body.decode()
    # A pinned hash is checked on what the redirect delivered.
    (home / "corpora" / "catalog.toml").write_text(f'[moved]\nurl = "{server}/old2"\nsha256 = "{"0" * 64}"\n')
    _Handler.routes["/old2"] = (302, {"Location": "/new"}, b"")
    with pytest.raises(CorpusError, match="does not match its pinned sha256"):
        load_corpus("moved")
    (home / "corpora" / "catalog.toml").write_text(
        f'[moved]\nurl = "{server}/old2"\nsha256 = "{hashlib.sha256(body).hexdigest()}"\n')
    assert load_corpus("moved").read_text() == body.decode()


def test_a_redirect_loop_ends_with_one_sentence(home, server):
    _Handler.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(CorpusError) as e:
        load_corpus(f"{server}/loop")
    assert "redirects in a loop" in str(e.value) and "\n" not in str(e.value) and downloads(home) == []


# --- run names and paths --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "/etc", "a/../../b", "..", "~root", "x/../../../tmp/y", "a;rm -rf x",
                                  "$(touch pwned)", "`id`", "a\nb", "a\x00b"])
def test_run_names_cannot_leave_checkpoints(home, name):
    cfg = RunConfig()
    with pytest.raises(RunError, match="is not allowed"):
        create_run(cfg, name=name)
    with pytest.raises(RunError, match="is not allowed"):
        run_path(name)
    assert not (home / "checkpoints").exists() or list((home / "checkpoints").iterdir()) == []
    assert not (home / "x").exists() and not (home / "pwned").exists()


def test_a_symlink_in_checkpoints_cannot_carry_a_run_outside(home, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (home / "checkpoints").mkdir()
    (home / "checkpoints" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunError, match="outside"):
        create_run(RunConfig(), name="evil")
    assert list(outside.iterdir()) == []
    RunConfig().save(outside / "config.toml")  # even a run there is not reached by a bare name
    with pytest.raises(RunError, match="outside"):
        resolve_run("evil")
    assert resolve_run(str(outside)) == outside  # an explicit path is the user's choice


@pytest.mark.slow
def test_shell_metacharacters_in_a_run_directory_are_just_characters(home, small_corpus):
    name = "r; touch PWNED1 && $(touch PWNED2) `touch PWNED3` | touch PWNED4 > x '\" *"
    cfg = apply_overrides(RunConfig(), {"model": {"n_layer": 1, "n_head": 1, "n_embd": 16, "block_size": 16},
                                        "data": {"corpus": str(small_corpus)},
                                        "train": {"max_steps": 2, "batch_size": 2, "eval_interval": 2,
                                                  "eval_batches": 1, "sample_tokens": 0, "device": "cpu"}})
    run = create_run(cfg, run_dir=home / name)
    pid = launch(run)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, (run / "train.log").read_text()
    assert run_info(run).status == "finished" and not is_running(run)
    pwned = [p for d in (home, Path.cwd(), ROOT) for p in d.glob("PWNED*")]
    assert pwned == [] and not (home / "x").exists()


def test_the_cli_refuses_an_escaping_run_name_in_one_line(home):
    from tests.conftest import smallgpt

    proc = smallgpt(home, "generate", "..", "--prompt", "x")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "is not allowed" in proc.stderr
