"""The app's terminal driver: Textual's LinuxDriver, plus what a terminal at the end of an SSH link needs.

- When the terminal goes away (EOF or an error reading it, an error writing it, SIGHUP) or SIGTERM
  arrives, the app gets a HangUp message and exits, leaving runs running; the process ends as soon as
  the app has shut down. Textual alone keeps selecting a hung-up terminal, which is always readable (a
  busy loop: half a core or more), and its writer thread dies on EIO, leaving the app blocked on the
  writer's full queue: an orphan that never exits.
- Escape and a digit in one read (as SSH and tmux deliver a quick Escape, 5) are alt+digit. Textual
  reads them as the characters macOS's Option key types ("∞" for Option+5), which a text field inserts.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import sys
from codecs import getincrementaldecoder
from typing import IO, Any, Callable, Iterable

from textual import events
from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver
from textual.message import Message

ALT_DIGITS = {f"\x1b{d}": f"alt+{d}" for d in "0123456789"}


class HangUp(Message):
    """The terminal went away or the process was asked to end: the app should exit, runs left running."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class KeyParser(XTermParser):
    def _sequence_to_key_events(self, sequence: str, alt: bool = False) -> Iterable[events.Key]:
        if sequence in ALT_DIGITS:
            return [events.Key(ALT_DIGITS[sequence], None)]  # no character: a text field inserts nothing
        return super()._sequence_to_key_events(sequence, alt)


class GuardedOutput:
    """The terminal as the writer thread sees it: the first failed write reports the hang-up, then fds 1
    and 2 point at /dev/null, so the rest of the exit (restoring the screen, Python's final flush)
    writes nowhere instead of failing."""

    def __init__(self, file: IO[str], hung_up: Callable[[str], None]) -> None:
        self._file = file
        self._hung_up = hung_up
        self._failed = False

    def _guard(self, operation: Callable[..., Any], *args: Any) -> None:
        if self._failed:
            return
        try:
            operation(*args)
        except OSError as error:
            self._failed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
            self._hung_up(f"writing to the terminal failed ({errno.errorcode.get(error.errno, error.errno)})")

    def write(self, text: str) -> None:
        self._guard(self._file.write, text)

    def flush(self) -> None:
        self._guard(self._file.flush)

    def fileno(self) -> int:
        return self._file.fileno()


class TerminalDriver(LinuxDriver):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._file = GuardedOutput(sys.__stderr__, self._hang_up)
        self._hung_up = False

    def _hang_up(self, reason: str) -> None:
        self._hung_up = True
        self.send_message(HangUp(reason))  # thread-safe: the input and writer threads call this

    def start_application_mode(self) -> None:
        super().start_application_mode()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._hang_up, f"{signal.Signals(sig).name} received")

    def stop_application_mode(self) -> None:
        super().stop_application_mode()
        if self._hung_up:
            # The app has shut down and given the screen back. Engine work still running in a thread (say,
            # a BPE tokenizer training) cannot be interrupted and Python would wait for it, for nobody to
            # see the result: end the process now, once the last writes (leaving the alternate screen,
            # for a terminal still there) are out.
            if self._writer_thread is not None:
                self._writer_thread.stop()
            os._exit(0)

    def run_input_thread(self) -> None:
        """Textual's input loop, except that EOF or a read error ends it and reports a hang-up."""
        parser = KeyParser(self._debug)
        decode = getincrementaldecoder("utf-8")().decode
        with selectors.SelectSelector() as selector:
            selector.register(self.fileno, selectors.EVENT_READ)
            while not self.exit_event.is_set():
                if selector.select(0.1):
                    try:
                        data = os.read(self.fileno, 4096)
                    except OSError as error:
                        self._hang_up(f"reading the terminal failed "
                                      f"({errno.errorcode.get(error.errno, error.errno)})")
                        return
                    if not data:
                        self._hang_up("the terminal's input ended (EOF)")
                        return
                    for event in parser.feed(decode(data)):
                        self.process_message(event)
                for event in parser.tick():
                    self.process_message(event)
