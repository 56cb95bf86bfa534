"""Runs: name, create, lock, launch detached, stop, list, tail (the files of one: engine.rundir).

"Running" means a process holds the exclusive flock on RUN/run.lock (the trainer takes it for its whole
life), never "a pid file exists": a killed trainer leaves a stale pid file but the kernel drops its lock.
This module imports no torch so listing runs stays cheap for the TUI and the CLI.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import RunConfig
from .corpora import load_corpus
from .errors import RunError
from .events import EventReader, RunState, read_events
from .paths import PACKAGE_ROOT, checkpoints_dir, home
from .rundir import RunDir
from .tokenizer import Tokenizer, train_tokenizer

# A bare run name is one path component of safe characters: it can never point outside checkpoints/.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str  # running | finished | failed | stopped | new
    step: int
    max_steps: int
    best_val_loss: float | None
    params: int | None
    model_kind: str
    started: float | None  # Unix time of the first start, None if never started
    error: str = ""
    serving: str = ""  # the URL of the run's live `smallgpt serve` process

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def run_path(name: str) -> Path:
    """checkpoints/<name> for a bare run name; anything that could escape checkpoints/ is refused."""
    if not _NAME.match(name) or ".." in name:
        raise RunError(f"Run name '{name}' is not allowed: use letters, digits, '.', '_' and '-' only "
                       f"(no '/' or '..'), or pass a directory with --run-dir.")
    root = checkpoints_dir()
    # A symbolic link in checkpoints/ must not carry a bare name (and what is written there) elsewhere.
    if (root / name).resolve().parent != root.resolve():
        raise RunError(f"Run name '{name}' is a link that points outside {root}: "
                       f"pass the real directory with --run-dir, or remove the link.")
    return root / name


def resolve_run(name_or_path: str | Path) -> Path:
    """An existing run directory from a bare name under checkpoints/ or from a path (one with a '/')."""
    s = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or os.sep in s or s.startswith("~")
    path = Path(s).expanduser() if looks_like_path else run_path(s)
    if not RunDir(path).is_run():
        where = "" if looks_like_path else f" in {checkpoints_dir()}"
        raise RunError(f"No run '{s}'{where} (no {RunDir(path).config.name}): see `smallgpt runs list` for the runs there are.")
    return path


STAMP = r"-\d{8}-\d{6}(?=-|$)"  # the time stamp in a default run name


def default_run_name(cfg: RunConfig) -> str:
    corpus = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.data.corpus).stem or "corpus").strip("-")[:24] or "corpus"
    return stamped(f"{cfg.model.kind}-{corpus}")


def stamped(stem: str, suffix: str = "") -> str:
    """A default run name: stem[-suffix]-YYYYMMDD-HHMMSS. The stem loses its own stamps and is cut to 40
    characters (a fine-tune of gpt-docs-20261203-213850 is gpt-docs-classify-<its own stamp>), so names
    stay short enough to read whole in a picker."""
    return "-".join(p for p in (re.sub(STAMP, "", stem)[:40], suffix, time.strftime("%Y%m%d-%H%M%S")) if p)


def create_run(cfg: RunConfig, name: str | None = None, run_dir: Path | None = None,
               progress: Callable[[float, str], None] | None = None) -> Path:
    """Make a new run directory: config.toml (vocab_size from the tokenizer) and tokenizer.json.

    The tokenizer is copied from cfg.data.tokenizer or trained on the corpus (tokenizer_kind, vocab_size),
    so the run is self-contained. Refuses a directory that already holds a run.
    """
    cfg.validate()
    path = Path(run_dir) if run_dir is not None else run_path(name or default_run_name(cfg))
    if RunDir(path).config.exists():
        raise RunError(f"Run directory {path} already holds a run: resume it with --resume or choose another name.")
    path.mkdir(parents=True, exist_ok=True)
    cfg.save(RunDir(path).config)  # first, so a half-made run (tokenizer failed) still lists as "new"
    install_tokenizer(path, cfg, progress)
    return path


def install_tokenizer(run_dir: Path, cfg: RunConfig, progress: Callable[[float, str], None] | None = None
                      ) -> Tokenizer:
    """Put the run's tokenizer at RUN/tokenizer.json and its vocab size into RUN/config.toml."""
    if cfg.data.tokenizer:
        tokenizer = Tokenizer.load(Path(cfg.data.tokenizer).expanduser())
    else:
        corpus = load_corpus(cfg.data.corpus, progress=progress)
        tokenizer = train_tokenizer(corpus, cfg.data.tokenizer_kind, cfg.data.vocab_size or None, progress=progress)
    rd = RunDir(run_dir)
    tokenizer.save(rd.tokenizer)
    cfg.model.vocab_size = tokenizer.vocab_size
    cfg.save(rd.config)
    return tokenizer


# --- the lock: one training process per run ---------------------------------------------------------

def take_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on path (closing it drops the lock); None if another
    process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def hold_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/run.lock exclusively (and RUN/pid) for the block; RunError if another process has it."""
    rd = RunDir(run_dir)
    fd = take_lock(rd.lock)
    if fd is None:
        raise RunError(f"Run {rd.path} is already being trained by another process: "
                       f"stop it first (`smallgpt runs stop`) or wait for it to finish.")
    try:
        rd.pid.write_text(f"{os.getpid()}\n")
        try:
            yield
        finally:
            rd.pid.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing drops the flock


def is_running(run_dir: Path) -> bool:
    """True while some process holds the run's lock."""
    return lock_held(RunDir(run_dir).lock)


def lock_held(path: Path) -> bool:
    """True while some process holds an exclusive flock on path."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_pid(run_dir: Path) -> int | None:
    try:
        return int(RunDir(run_dir).pid.read_text().strip())
    except (OSError, ValueError):
        return None


# --- processes ------------------------------------------------------------------------------------

def launch(run_dir: Path, resume: bool = False, wait: float = 0.0) -> int:
    """Start `python -m engine train --run-dir R` detached (own session, no terminal); return its pid.

    Its own session means it survives the TUI quitting and the SSH connection dropping; stdout and
    stderr go to RUN/train.log. With wait > 0, block until the trainer holds the run's lock (so a
    `runs tail -f` right after finds it running); a process that dies first is a RunError quoting its
    last log line.
    """
    run_dir = Path(run_dir).resolve()
    if is_running(run_dir):
        raise RunError(f"Run {run_dir} is already running: follow it with `smallgpt runs tail {run_dir}`.")
    argv = ["-m", "engine", "train", "--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    log_path = RunDir(run_dir).log
    proc = spawn(argv, log_path)
    deadline = time.monotonic() + wait
    while wait > 0 and not is_running(run_dir) and time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            last = lines[-1].removeprefix("error: ") if lines else f"exit status {proc.returncode}"
            raise RunError(f"The training process of {run_dir.name} stopped at once: {last}")
        time.sleep(0.05)
    return proc.pid


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    """`python ARGV` in its own session (it outlives us and our terminal), output appended to log_path,
    run from the project home."""
    env = dict(os.environ)
    env["SMALLGPT_HOME"] = str(home().resolve())  # the child resolves corpora/ and caches where we do
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(home().resolve()), env=env,
                                start_new_session=True, close_fds=True)


def server_info(run_dir: Path) -> dict[str, Any] | None:
    """The record (url, host, port, pid, checkpoint) of the run's live server; None when none runs."""
    rd = RunDir(run_dir)
    if not lock_held(rd.serve_lock):
        return None
    try:
        info = json.loads(rd.serve_record.read_text())
    except (OSError, ValueError):
        return None  # starting: the lock is taken before the address is known
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def stop_server(run_dir: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the run's server (it finishes or cancels its requests, then exits) and wait for it; False
    if it is still going after timeout. RunError when no server runs."""
    rd = RunDir(run_dir)
    info = server_info(rd.path)
    if info is None:
        raise RunError(f"Run {rd.name} is not being served: nothing to stop.")
    try:
        os.kill(info["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while lock_held(rd.serve_lock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_run(run_dir: Path) -> int:
    """Ask a live run to stop (SIGTERM: it finishes the step, checkpoints and exits); return the pid."""
    run_dir = Path(run_dir)
    pid = read_pid(run_dir)
    if not is_running(run_dir) or pid is None:
        raise RunError(f"Run {run_dir} is not running: nothing to stop.")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise RunError(f"Run {run_dir} is not running (its process {pid} is gone): nothing to stop.") from None
    return pid


def wait_stopped(run_dir: Path, timeout: float = 60.0, interval: float = 0.1) -> bool:
    """Wait until the run's lock is free; False on timeout."""
    deadline = time.monotonic() + timeout
    while is_running(run_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --- listing and tailing --------------------------------------------------------------------------

def run_info(run_dir: Path) -> RunInfo:
    rd = RunDir(run_dir)
    try:
        cfg = RunConfig.load(rd.config)
        kind, max_steps = cfg.model.kind, cfg.train.max_steps
    except Exception:  # a hand-broken config.toml must not break the whole listing
        kind, max_steps = "?", 0
    state = RunState()
    state.feed(read_events(rd.path))
    return RunInfo(name=rd.name, path=rd.path, status=state.status(is_running(rd.path)), step=state.step,
                   max_steps=max_steps, best_val_loss=state.best_val_loss, params=state.params, model_kind=kind,
                   started=state.started, error=state.error if state.started is not None else "",
                   serving=(server_info(rd.path) or {}).get("url", ""))


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run under root (default checkpoints/), newest first."""
    root = Path(root) if root is not None else checkpoints_dir()
    if not root.is_dir():
        return []
    infos = [run_info(p) for p in root.iterdir() if RunDir(p).is_run()]
    return sorted(infos, key=lambda r: (r.started or RunDir(r.path).config.stat().st_mtime), reverse=True)


def base_checkpoints(root: Path | None = None) -> list[tuple[str, str]]:
    """What a run can start from (task.init_from), newest run first: ("NAME:which", "PATH:which") for each
    of its best and latest checkpoints that exists; imported and never-trained runs included."""
    return [(f"{r.name}:{which}", f"{r.path}:{which}") for r in list_runs(root) for which in ("best", "latest")
            if RunDir(r.path).complete_checkpoint(which) is not None]


def tail(run_dir: Path, follow: bool = False, interval: float = 0.5) -> Iterator[dict[str, Any]]:
    """The run's events; with follow, keep yielding new ones until the run is no longer running."""
    reader = EventReader(run_dir)
    while True:
        running = follow and is_running(run_dir)
        yield from reader.poll()
        if not running:
            return
        time.sleep(interval)

