"""Run directories: create, resolve, list, launch detached, stop, tail.

"Running" means a process holds the exclusive flock on RUN/run.lock (the trainer takes it for its whole
life), never "a pid file exists": a killed trainer leaves a stale pid file but the kernel drops its lock.
This module imports no torch so listing runs stays cheap for the TUI and the CLI.
"""

from __future__ import annotations

import ctypes
import fcntl
import math
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .config import RunConfig
from .errors import RunError
from .events import EventReader, read_events
from .paths import PACKAGE_ROOT, checkpoints_dir, home

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

CONFIG_FILE = "config.toml"
TOKENIZER_FILE = "tokenizer.json"
LOCK_FILE = "run.lock"
PID_FILE = "pid"
LOG_FILE = "train.log"
STATUSES = ("running", "finished", "failed", "stopped", "new")

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
    if not (path / CONFIG_FILE).is_file():
        where = "" if looks_like_path else f" in {checkpoints_dir()}"
        raise RunError(f"No run '{s}'{where} (no {CONFIG_FILE}): see `smallgpt runs list` for the runs there are.")
    return path


def default_run_name(cfg: RunConfig) -> str:
    corpus = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.data.corpus).stem or "corpus").strip("-")[:24] or "corpus"
    return f"{cfg.model.kind}-{corpus}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run(cfg: RunConfig, name: str | None = None, run_dir: Path | None = None,
               progress: Callable[[float, str], None] | None = None) -> Path:
    """Make a new run directory: config.toml (vocab_size from the tokenizer) and tokenizer.json.

    The tokenizer is copied from cfg.data.tokenizer or trained on the corpus (tokenizer_kind, vocab_size),
    so the run is self-contained. Refuses a directory that already holds a run.
    """
    cfg.validate()
    path = Path(run_dir) if run_dir is not None else run_path(name or default_run_name(cfg))
    if (path / CONFIG_FILE).exists():
        raise RunError(f"Run directory {path} already holds a run: resume it with --resume or choose another name.")
    path.mkdir(parents=True, exist_ok=True)
    cfg.save(path / CONFIG_FILE)  # first, so a half-made run (tokenizer failed) still lists as "new"
    install_tokenizer(path, cfg, progress)
    return path


def install_tokenizer(run_dir: Path, cfg: RunConfig, progress: Callable[[float, str], None] | None = None
                      ) -> "Tokenizer":
    """Put the run's tokenizer at RUN/tokenizer.json and its vocab size into RUN/config.toml."""
    from .corpora import load_corpus
    from .tokenizer import Tokenizer, train_tokenizer

    if cfg.data.tokenizer:
        tokenizer = Tokenizer.load(Path(cfg.data.tokenizer).expanduser())
    else:
        corpus = load_corpus(cfg.data.corpus, progress=progress)
        tokenizer = train_tokenizer(corpus, cfg.data.tokenizer_kind, cfg.data.vocab_size or None, progress=progress)
    tokenizer.save(Path(run_dir) / TOKENIZER_FILE)
    cfg.model.vocab_size = tokenizer.vocab_size
    cfg.save(Path(run_dir) / CONFIG_FILE)
    return tokenizer


# --- the lock: one training process per run ---------------------------------------------------------

@contextmanager
def hold_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/run.lock exclusively (and RUN/pid) for the block; RunError if another process has it."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"Run {run_dir} is already being trained by another process: "
                           f"stop it first (`smallgpt runs stop`) or wait for it to finish.") from None
        (run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        try:
            yield
        finally:
            (run_dir / PID_FILE).unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing drops the flock


def is_running(run_dir: Path) -> bool:
    """True while some process holds the run's lock."""
    path = Path(run_dir) / LOCK_FILE
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
        return int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


# --- processes ------------------------------------------------------------------------------------

def training_process_settings() -> None:
    """Call before torch is imported in a training process.

    Idle OpenMP threads spin for ~20 us (GOMP_SPINCOUNT=2000) before they sleep. The gaps between a
    training step's ops are shorter than that, so the second thread is rarely woken from sleep: `tiny`
    stepped in 65-86 ms against 87-117 ms with threads that sleep at once (OMP_WAIT_POLICY=PASSIVE). Longer
    spins cost 2-8x with a busy process on the other core, 2000 about 25%; under such a neighbour the
    trainer drops to the cores it leaves free (`FreeCores`). A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT
    wins.

    glibc's malloc keeps freed blocks of up to 32 MB for reuse instead of unmapping them (its default
    threshold adapts upwards only after such frees, and trimming returns the heap top to the system), so
    each step's activations are not page-faulted in afresh: a `tiny` step 94-116 ms against 99-140 ms,
    a `medium` one 1.29-1.53 s against 1.57-1.67 s; peak RSS within 2% (docs/PERFORMANCE.md). Nothing
    happens where the C library has no mallopt (macOS, musl). Here too a user's setting wins.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "2000"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


class FreeCores:
    """How many threads a training process can use without crowding other processes: the cores it may
    run on, less the cores everything else used since the last look (Linux /proc/stat), capped at the
    thread count it started with. With a process keeping one of 2 cores busy, `tiny` stepped in 89-103 ms
    on one thread against 98-128 ms on two sleeping threads and 132-176 ms on two spinning ones, and the
    neighbour kept its core (docs/PERFORMANCE.md)."""

    def __init__(self, threads: int):
        self.max_threads = threads
        self.others = 0.0  # cores the rest of the machine used over the last look
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(wall s, CPU s the machine's processes used, CPU s this process used); None without /proc/stat."""
        try:
            with open("/proc/stat") as f:
                user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
        except (OSError, ValueError):
            return None
        ours = os.times()
        return (time.monotonic(), (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"),
                ours.user + ours.system)

    def threads(self) -> int | None:
        """The thread count for what comes next; None when it cannot tell yet (under a second since the
        last look) or at all (no /proc/stat)."""
        now = self._sample()
        if now is None or self._last is None or now[0] - self._last[0] < 1.0:
            return None
        (wall0, busy0, ours0), (wall1, busy1, ours1) = self._last, now
        self._last = now
        self.others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (wall1 - wall0)
        return max(1, min(self.max_threads, math.floor(self.cores - self.others + 0.5)))


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
    argv = [sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    env = dict(os.environ)
    env["SMALLGPT_HOME"] = str(home().resolve())  # the child resolves corpora/ and caches where we do
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    with open(run_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(home().resolve()), env=env, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + wait
    while wait > 0 and not is_running(run_dir) and time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = (run_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()
            last = lines[-1].removeprefix("error: ") if lines else f"exit status {proc.returncode}"
            raise RunError(f"The training process of {run_dir.name} stopped at once: {last}")
        time.sleep(0.05)
    return proc.pid


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
    run_dir = Path(run_dir)
    try:
        cfg = RunConfig.load(run_dir / CONFIG_FILE)
        kind, max_steps = cfg.model.kind, cfg.train.max_steps
    except Exception:  # a hand-broken config.toml must not break the whole listing
        kind, max_steps = "?", 0
    events = read_events(run_dir)
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    last_run = events[starts[-1]:] if starts else []
    step = max((int(e.get("step") or 0) for e in events), default=0)
    vals = [e["val_loss"] for e in events if e["event"] == "eval" and isinstance(e.get("val_loss"), (int, float))]
    params = next((e.get("params") for e in reversed(events) if e["event"] == "start"), None)
    if isinstance(params, dict):
        params = params.get("total")
    errors = [e for e in last_run if e["event"] == "error"]
    done = [e for e in last_run if e["event"] == "done"]
    if is_running(run_dir):
        status = "running"
    elif errors:
        status = "failed"
    elif done and done[-1].get("reason") == "max_steps":
        status = "finished"
    elif starts:
        status = "stopped"  # done: stopped, or killed without a word (stale pid, lock free)
    else:
        status = "new"
    return RunInfo(name=run_dir.name, path=run_dir, status=status, step=step, max_steps=max_steps,
                   best_val_loss=min(vals) if vals else None, params=params, model_kind=kind,
                   started=events[starts[0]].get("wall") if starts else None,
                   error=str(errors[-1].get("message", "")) if errors else "")


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run under root (default checkpoints/), newest first."""
    root = Path(root) if root is not None else checkpoints_dir()
    if not root.is_dir():
        return []
    infos = [run_info(p) for p in root.iterdir() if (p / CONFIG_FILE).is_file()]
    return sorted(infos, key=lambda r: (r.started or (r.path / CONFIG_FILE).stat().st_mtime), reverse=True)


def tail(run_dir: Path, follow: bool = False, interval: float = 0.5) -> Iterator[dict[str, Any]]:
    """The run's events; with follow, keep yielding new ones until the run is no longer running."""
    reader = EventReader(run_dir)
    while True:
        running = follow and is_running(run_dir)
        yield from reader.poll()
        if not running:
            return
        time.sleep(interval)

