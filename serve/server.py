"""The serving process: one run's model behind uvicorn, recorded in the run directory while it lives.

Like training, a server is its own process. It holds RUN/serve.lock for its whole life ("served" means the
lock is held, so a killed server never looks alive) and writes its address to RUN/serve.json once it
listens; `smallgpt runs list` shows that address and `smallgpt runs stop` sends it SIGTERM. On SIGTERM
(or ctrl+c) uvicorn stops accepting, lets requests in flight finish for up to GRACE_S seconds, then cancels
the rest; the batcher's thread ends and the record is removed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConfigError, RunError
from engine.rundir import RunDir
from engine.runs import server_info, spawn, take_lock

GRACE_S = 5
LOOPBACK = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, api_key: str | None) -> None:
    """Anything but a loopback address reaches other machines: refuse it without an API key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"Serving on {host} lets other machines reach the model: pass --api-key KEY (clients "
                          f"send 'Authorization: Bearer KEY'), or keep --host 127.0.0.1 and use ssh -L.")


def serve(run_dir: Path, checkpoint: str = "best", host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_queue: int = 16, rows: int = 8,
          on_ready: Callable[[dict], None] | None = None) -> None:
    """Serve the run until SIGTERM or SIGINT. on_ready gets the address record once it listens."""
    import uvicorn

    from engine.batching import Batcher
    from engine.checkpoint import load_model

    from .api import Served, create_app
    from .chat import run_template

    run_dir = Path(run_dir).resolve()
    check_host(host, api_key)
    # The batcher's thread gives up the GIL in every torch op and must win it back from the event loop's
    # thread (writing chunks): a 0.5 ms switch interval instead of 5 ms. 4 streams of `medium`: 77 and 77
    # against 61 and 64 tok/s in alternating runs on a loaded 2-core machine.
    sys.setswitchinterval(0.0005)
    rd = RunDir(run_dir)
    lock = take_lock(rd.serve_lock)
    if lock is None:
        url = (server_info(run_dir) or {}).get("url", "another address")
        raise RunError(f"Run {run_dir.name} is already served at {url}: stop it first with "
                       f"`smallgpt runs stop {run_dir.name}`.")
    record = rd.serve_record
    batcher = None
    try:
        sock = _bind(host, port)
        model, _, tokenizer = load_model(run_dir, checkpoint)
        batcher = Batcher(model, tokenizer, rows=rows, max_queue=max_queue).start()
        app = create_app(Served(batcher=batcher, model_id=run_dir.name, template=run_template(run_dir),
                                api_key=api_key, created=int(time.time())))
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        info = {"url": f"http://{shown}:{port}/v1", "host": host, "port": port, "pid": os.getpid(),
                "checkpoint": checkpoint, "model": run_dir.name, "started": time.time()}
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(record)
        if on_ready is not None:
            on_ready(info)
        config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=GRACE_S,
                                lifespan="off")
        # uvicorn re-raises the signal that stopped it once it is done; as a no-op, so this cleanup runs.
        signal.signal(signal.SIGTERM, lambda *_: None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if batcher is not None:
            batcher.close()
        record.unlink(missing_ok=True)
        os.close(lock)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RunError(f"Cannot listen on {host}:{port} ({e.strerror}): pick another --port or --host.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def launch(run_dir: Path, args: list[str], wait: float = 120.0) -> dict:
    """Start `smallgpt serve RUN ARGS` detached (it survives the TUI and the terminal); return its address
    record once it listens. RunError quoting its log if it stops first."""
    run_dir = Path(run_dir).resolve()
    log_path = RunDir(run_dir).serve_log
    proc = spawn(["-m", "serve", str(run_dir), *args], log_path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        info = server_info(run_dir)
        if info is not None and info["pid"] == proc.pid:
            return info
        if proc.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            last = lines[-1].removeprefix("error: ") if lines else f"exit status {proc.returncode}"
            raise RunError(f"The server of {run_dir.name} stopped at once: {last}")
        time.sleep(0.05)
    raise RunError(f"The server of {run_dir.name} did not start within {wait:.0f} s: see {log_path}.")


DEFAULT_PORT = 8000


def serve_in_background(run_dir: Path, checkpoint: str = "best") -> dict:
    """The TUI's "Serve this run": the run's live server if it has one, else a detached one on
    127.0.0.1:8000 (or a free port when 8000 is taken); its address record."""
    info = server_info(run_dir)
    if info is not None:
        return info
    try:
        _bind("127.0.0.1", DEFAULT_PORT).close()
        port = DEFAULT_PORT
    except RunError:
        port = 0
    return launch(run_dir, ["--checkpoint", checkpoint, "--port", str(port)])

