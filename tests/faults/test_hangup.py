"""The terminal goes away (an SSH drop), or SIGHUP or SIGTERM arrives: the app exits, runs go on.

The app runs as `make run` starts it, through make, on a real pseudo-terminal that is its controlling
terminal. A hang-up is closing the master side, as sshd does when the link drops. The app must be gone
within 5 s, using under 10% of a core meanwhile (CPU time from the kernel, not wall time), and a run it
launched must keep training and, once stopped, not linger as a zombie. Also: Escape and a digit that
arrive in one read are alt+digit, which switches tabs and never types into a field.
"""

from __future__ import annotations

import fcntl
import os
import pty
import random
import select
import signal
import string
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from engine.events import read_events
from engine.runs import is_running, read_pid, stop_run, wait_stopped
from tests.tui.pilot_helpers import TINY_FORM, wait_for, write_corpus, write_finished_run
from tui.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
TICK = os.sysconf("SC_CLK_TCK")
GONE_WITHIN = 5.0  # seconds
CORE_SHARE = 0.10  # of one core over those seconds


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first); None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    f = proc_stat(pid)
    assert f is not None, f"process {pid} is gone"
    return (int(f[11]) + int(f[12])) / TICK  # utime + stime


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        f = proc_stat(int(d.name)) if d.name.isdigit() else None
        if f is not None and int(f[1]) == pid:
            out.append(int(d.name))
    return out


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Terminal:
    """`make run` on a pseudo-terminal (its controlling terminal, as sshd gives a login), the screen
    drained. With output_to_pipe the app draws into a pipe instead (Textual draws on stderr), so that
    its output can fail while its input stays."""

    def __init__(self, home: Path, corpus: str, output_to_pipe: bool = False) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.screen, stderr = os.pipe() if output_to_pipe else (self.master, slave)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")}
        env.update(SMALLGPT_HOME=str(home), TERM="xterm-256color")
        # make on the test's venv; -o: its install stamp counts as done (no pip from a test).
        argv = ["make", "-s", "-C", str(ROOT), "-o", str(VENV / ".installed"), "run", f"VENV={VENV}",
                f"CORPUS={home / corpus}"]
        self.make = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=stderr, env=env, cwd=home,
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        if output_to_pipe:
            os.close(stderr)
        self.out = bytearray()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        wait_until(lambda: b"Data" in self.out or self.make.poll() is not None, 90, "the first frame")
        assert self.make.poll() is None, self.out.decode(errors="replace")
        [self.app] = children(self.make.pid)  # make runs the app itself, no shell in between
        self.wait_idle()

    def wait_idle(self) -> None:
        """Until the app's start-up work is done (under 0.05 CPU s in half a second): what it uses from
        then on is its reaction to what the test does."""
        last = cpu_seconds(self.app)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu_seconds(self.app)
            if now - last < 0.05:
                return
            last = now
        raise AssertionError("the app never went idle")

    def _drain(self) -> None:
        while not self._stop.is_set():
            if select.select([self.screen], [], [], 0.05)[0]:
                try:
                    data = os.read(self.screen, 1 << 16)
                except OSError:
                    return
                self.out.extend(data)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def stop_drawing(self) -> None:
        """Stop reading the screen and close it: the master side (as sshd does when the link drops) or
        the pipe."""
        if self.screen >= 0:
            self._stop.set()
            self._reader.join()
            os.close(self.screen)
            self.master = -1 if self.screen == self.master else self.master
            self.screen = -1

    def wait_gone(self) -> float:
        """Wait (at most GONE_WITHIN s) for make and the app to exit; the CPU seconds the app and make
        used from this call on. make's rusage from wait4 includes the app it reaped, exactly."""
        before = cpu_seconds(self.app) + cpu_seconds(self.make.pid)
        deadline = time.monotonic() + GONE_WITHIN
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.make.pid, os.WNOHANG)
            if pid:
                self.make.returncode = os.waitstatus_to_exitcode(status)
                assert proc_stat(self.app) is None or proc_stat(self.app)[0] == "Z"  # make waited for it
                return usage.ru_utime + usage.ru_stime - before
            time.sleep(0.02)
        used = cpu_seconds(self.app) + cpu_seconds(self.make.pid) - before
        raise AssertionError(f"the app was still running {GONE_WITHIN} s after the hang-up, "
                             f"having used {used:.2f} CPU s meanwhile")

    def close(self) -> None:
        for pid in (self.app, self.make.pid):
            if proc_stat(pid) is not None and proc_stat(pid)[0] != "Z":
                os.kill(pid, signal.SIGKILL)
        if self.make.returncode is None:
            self.make.wait()
        self.stop_drawing()
        if self.master >= 0:
            os.close(self.master)


def exit_reasons(home: Path) -> list[str]:
    log = home / "logs" / "smallgpt.log"
    return [line for line in log.read_text().splitlines() if "exiting:" in line] if log.exists() else []


@pytest.fixture
def corpus(home) -> str:
    return write_corpus(home)


# A closed master fails the app's next read (EOF) or write (EIO), whichever comes first.
@pytest.mark.parametrize("how, reason", [("close", "the terminal"), ("SIGHUP", "SIGHUP"),
                                         ("SIGTERM", "SIGTERM"), ("broken output", "(EPIPE)")])
def test_the_app_under_make_exits_on_hang_up_or_sigterm_without_spinning(home, corpus, how, reason):
    term = Terminal(home, corpus, output_to_pipe=how == "broken output")
    try:
        if how == "close":
            term.stop_drawing()
        elif how == "broken output":
            term.stop_drawing()
            term.type(b"\t")  # the focus moves: something to draw, and the write fails
        else:
            os.killpg(term.make.pid, getattr(signal, how))  # the terminal's process group, as the kernel does
        used = term.wait_gone()
        assert used < CORE_SHARE * GONE_WITHIN, f"{used:.2f} CPU s while going away"
        [line] = exit_reasons(home)
        assert reason in line and "live runs left running: none" in line
        if how.startswith("SIG"):  # the terminal is still there: the app gave it back (left the alternate screen)
            wait_until(lambda: b"\x1b[?1049l" in term.out, 10, "the app to leave the alternate screen")
    finally:
        term.close()


def test_engine_work_in_a_thread_does_not_hold_the_exit(home):
    """A BPE tokenizer training on ~6 MB takes seconds; Python would wait for its thread before exiting."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(20_000)]
    (home / "big.txt").write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(80_000)))
    Settings.load().update("tokenizer", kind="bpe", vocab_size=8000)
    term = Terminal(home, "big.txt")
    try:
        term.type(b"2")
        term.wait_idle()
        term.type(b"\x13")  # ctrl+s: train the tokenizer
        wait_until(lambda: b"Training" in term.out, 30, "the training to start")
        time.sleep(0.5)
        term.stop_drawing()
        used = term.wait_gone()
        assert used < CORE_SHARE * GONE_WITHIN, f"{used:.2f} CPU s while going away"
        assert not (home / "corpora" / "cache" / "tokenizers").exists() or \
            not any((home / "corpora" / "cache" / "tokenizers").iterdir()), "the training finished first"
    finally:
        term.close()


@pytest.mark.slow
def test_a_run_launched_from_the_app_trains_on_after_the_hang_up_and_is_no_zombie_when_stopped(home, corpus):
    Settings.load().update("train_form", preset="tiny", **{**TINY_FORM, "max_steps": "100000"})
    term = Terminal(home, corpus)
    run: Path | None = None
    try:
        term.type(b"3")
        term.wait_idle()
        term.type(b"\x13")  # ctrl+s: start the run
        checkpoints = home / "checkpoints"
        wait_until(lambda: checkpoints.exists() and any(is_running(r) for r in checkpoints.iterdir()), 180,
                   "the run to start")
        [run] = list(checkpoints.iterdir())
        trainer = read_pid(run)
        assert trainer is not None and int(proc_stat(trainer)[1]) == term.app  # the app's child

        term.stop_drawing()  # the master closed: the link dropped
        used = term.wait_gone()
        assert used < CORE_SHARE * GONE_WITHIN, f"{used:.2f} CPU s while going away"
        [line] = exit_reasons(home)
        assert f"live runs left running: {run.name}" in line

        def steps() -> int:
            return max((e["step"] for e in read_events(run) if e["event"] == "step"), default=0)

        after = steps()
        wait_until(lambda: steps() >= after + 3, 120, "the run to train on without its app")
        assert is_running(run) and proc_stat(trainer)[0] != "Z"
        stop_run(run)
        assert wait_stopped(run, timeout=120)
        wait_until(lambda: proc_stat(trainer) is None, 30, f"the stopped trainer {trainer} to be reaped "
                   f"(state {(proc_stat(trainer) or ['gone'])[0]})")
    finally:
        term.close()
        if run is not None and is_running(run):
            stop_run(run)
            wait_stopped(run, timeout=60)


async def test_a_run_the_app_launched_is_reaped_while_it_follows_another(home, corpus):
    from tui.app import SmallGPTApp
    from tui.tabs.train import TrainTab

    other = write_finished_run(home, "other")
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        follower = app.query_one(TrainTab).follower
        # A stand-in for the trainer (launched without Popen, which would reap it itself).
        child = os.posix_spawn(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)"], os.environ)
        follower.attach(home / "checkpoints" / "launched", child)
        follower.attach(other)  # the user follows another run: nothing polls the first one now
        os.kill(child, signal.SIGKILL)
        await wait_for(pilot, lambda: proc_stat(child) is None, timeout=30, what="the stopped child to be reaped")


async def test_alt_digit_in_the_generate_prompt_switches_tab_and_types_nothing(home):
    from tui.app import SmallGPTApp
    from tui.widgets.prompt_input import PromptInput

    app = SmallGPTApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4", "h", "i")
        prompt = app.query_one(PromptInput)
        assert app.focused is prompt and prompt.value == "hi"
        await pilot.press("alt+5")
        assert app.query_one("TabbedContent").active == "inspect"
        assert prompt.value == "hi"
        await pilot.press("alt+4")  # from the Inspect tab, back again: the prompt is as it was
        assert app.query_one("TabbedContent").active == "generate" and prompt.value == "hi"


def test_escape_and_a_digit_in_one_read_are_alt_digit_without_a_character():
    from tui.driver import KeyParser

    parser = KeyParser()
    for digit in "0123456789":
        keys = list(parser.feed(f"\x1b{digit}")) + list(parser.tick())
        assert [(k.key, k.character) for k in keys] == [(f"alt+{digit}", None)]
    keys = list(parser.feed("5∞\x1b[A"))  # a digit, a typed infinity sign, an arrow: unchanged
    assert [(k.key, k.character) for k in keys] == [("5", "5"), ("infinity", "∞"), ("up", None)]
