"""The TUI under stress: resize storms down to 40x12, a 1 MB paste, 10,000 streamed tokens from the real
sampler, NO_COLOR and a 16-colour terminal. No crash, no traceback on screen, no internal-error note."""

from __future__ import annotations

import fcntl
import os
import pty
import random
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from textual import events
from textual.widgets import Input

from tests.conftest import BIN
from tests.tui.pilot_helpers import notes, screen_svg, settle, wait_for, write_corpus
from benchmarks.tiny_run import make_tiny_run
from tui.app import SmallGPTApp

MEGABYTE_OF_TEXT = ("the cat sat on the mat. " * 43_691)[:1_000_000]


@pytest.fixture
def setup(home, monkeypatch) -> Path:
    """A corpus, a tiny trained-shape run (its EOS pushed down, so streams run as long as asked)."""
    monkeypatch.chdir(home)
    write_corpus(home)
    return make_tiny_run(home)


def assert_healthy(app: SmallGPTApp) -> None:
    assert app.is_running
    assert "Traceback" not in screen_svg(app)
    assert not [n.message for n in notes(app) if "Internal error" in n.message]


async def test_resize_storm_on_every_tab(setup):
    rng = random.Random(12)
    sizes = [(40, 12), (300, 90), (41, 13), (80, 24), (200, 50)]  # the smallest, the largest, off by one
    app = SmallGPTApp(corpus="corpus.txt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key in "12345":
            await pilot.press("escape", key)
            for size in sizes + [(rng.randint(40, 250), rng.randint(12, 70))]:
                await pilot.resize_terminal(*size)  # back to back: layouts overtake each other
            await pilot.resize_terminal(40, 12)
            await pilot.pause()
            assert_healthy(app)
        await settle(pilot)
        assert_healthy(app)


async def paste(pilot, widget: Input, text: str) -> float:
    """Paste text into widget as a terminal bracketed paste does; the seconds until the app is idle again."""
    widget.focus()
    started = time.monotonic()
    widget.post_message(events.Paste(text))
    await pilot.pause()
    return time.monotonic() - started


async def test_a_megabyte_paste_into_the_tokenizer_and_the_generate_prompt(setup):
    from tui.tabs.generate import GenerateTab
    from tui.widgets.prompt_input import PromptInput
    from tui.widgets.token_stream import TokenStream

    app = SmallGPTApp(corpus="corpus.txt")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        # Tokenizer: the run's char tokenizer (a token per character: the most tokens), 1 MB into "try it".
        app.tokenizer_path = str(setup / "tokenizer.json")
        await pilot.press("escape", "2")
        await wait_for(pilot, lambda: app.query_one("TokenizerTab").tokenizer is not None, what="the tokenizer")
        try_it = app.query_one("#tok-try", Input)
        took = await paste(pilot, try_it, MEGABYTE_OF_TEXT)
        assert try_it.value == MEGABYTE_OF_TEXT
        assert took < 30, f"the UI was frozen {took:.1f} s"
        # The counts cover the whole paste; only the first pieces are drawn.
        assert "1000000 chars → 1000000 tokens" in str(app.query_one("#tok-try-stats").render())
        assert "more tokens" in str(app.query_one("#tok-pieces").render())
        assert_healthy(app)
        # Generate: 1 MB prompt (far beyond the block size: the sampler keeps its tail).
        await pilot.press("escape", "4")
        await settle(pilot)
        gen = app.query_one(GenerateTab)
        prompt = gen.query_one(PromptInput)
        took = await paste(pilot, prompt, MEGABYTE_OF_TEXT)
        assert prompt.value == MEGABYTE_OF_TEXT and took < 30
        gen.query_one("#gen-max_new_tokens", Input).value = "20"
        prompt.focus()
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: not gen.running and gen.query_one("#out-a", TokenStream).token_count == 20,
                       timeout=120, what="20 tokens after a 1 MB prompt")
        assert_healthy(app)
    from tui.widgets.prompt_input import history_path

    assert not history_path().exists() or history_path().stat().st_size < 100_000  # not kept: 1 MB per prompt


@pytest.mark.slow
async def test_ten_thousand_streamed_tokens_from_the_real_sampler(setup):
    from tui.tabs.generate import GenerateTab
    from tui.widgets.prompt_input import PromptInput
    from tui.widgets.token_stream import TokenStream

    app = SmallGPTApp(corpus="corpus.txt")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        gen = app.query_one(GenerateTab)
        await wait_for(pilot, lambda: gen.query_one("RunPicker").run_dir is not None, what="the run list")
        gen.query_one("#gen-max_new_tokens", Input).value = "10000"
        gen.query_one(PromptInput).value = "the cat"
        gen.query_one(PromptInput).focus()
        await pilot.press("ctrl+g")
        stream = gen.query_one("#out-a", TokenStream)
        await wait_for(pilot, lambda: not gen.running and stream.token_count == 10_000, timeout=300,
                       what="10,000 tokens")
        assert len(stream.text) >= 10_000  # a char tokenizer: one character per token at least
        await pilot.resize_terminal(40, 12)  # re-wrapping 10,000 tokens at the smallest size
        await pilot.pause()
        assert_healthy(app)


# --- a real terminal: NO_COLOR, TERM=xterm-16color ---------------------------------------------------------

ESCAPE = re.compile(rb"\x1b(\[[0-9;?<=>$]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\\\)|[()][0-9A-Za-z]|[=>])")
# What each key shows that no earlier screen did: the Data tab's content, each tab's own text, the help.
VISITS = [(None, b"Most frequent characters"), (b"2", b"type text to see its tokens"), (b"3", b"No run followed"),
          (b"4", b"Enter or ctrl+s generates"), (b"5", b"Enter inspects"), (b"?", b"Escape closes"),
          (b"\x1b", b"live: off"), (b"1", b"Most frequent characters")]


def screen_text(out: bytes) -> bytes:
    """The characters a terminal shows, without its control sequences (text split by them joins up again)."""
    return ESCAPE.sub(b"", out)


def run_in_pty(env_extra: dict[str, str], visits: list[tuple[bytes | None, bytes]], cwd: Path,
               size: tuple[int, int] = (80, 24), timeout: float = 90.0) -> tuple[int, bytes, list[bytes]]:
    """Run smallgpt-tui on a pseudo-terminal, press each key and wait (up to `timeout`) for the text it should
    bring up, then quit; (exit status, everything it wrote, the texts that never came)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLORTERM", "TEXTUAL")}
    env.update(env_extra)
    proc = subprocess.Popen([str(BIN / "smallgpt-tui"), "--corpus", "corpus.txt"], stdin=slave, stdout=slave,
                            stderr=slave, cwd=cwd, env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    out = bytearray()

    def read_until(done, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() > end:
                return False
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    out.extend(os.read(master, 1 << 16))
                except OSError:  # the program closed the terminal
                    return done()
        return True

    missing = []
    try:
        for key, text in visits:
            since = len(out)
            if key is not None:
                os.write(master, key)
            if not read_until(lambda: text in screen_text(bytes(out[since:])), timeout):
                missing.append(text)
        os.write(master, b"\x11")  # ctrl+q
        read_until(lambda: proc.poll() is not None, 30)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, bytes(out), missing


SGR = re.compile(rb"\x1b\[([0-9;]*)m")
GREYS_256 = {0, 7, 8, 15, 16, 231, *range(232, 256)}


def colours_used(out: bytes) -> set[tuple[str, tuple[int, ...]]]:
    """The colours of every SGR sequence: ("16", (n,)) for the standard and bright 16, ("256", (n,)) and
    ("rgb", (r, g, b)) for the extended ones."""
    found: set[tuple[str, tuple[int, ...]]] = set()
    for params in SGR.findall(out):
        codes = [int(c) for c in params.split(b";") if c]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c in (38, 48) and i + 1 < len(codes):
                if codes[i + 1] == 5:
                    found.add(("256", (codes[i + 2],)))
                    i += 3
                    continue
                found.add(("rgb", tuple(codes[i + 2:i + 5])))
                i += 5
                continue
            if 30 <= c <= 37 or 40 <= c <= 47 or 90 <= c <= 97 or 100 <= c <= 107:
                found.add(("16", (c,)))
            i += 1
    return found


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"TERM": "xterm-16color"}, {"TERM": "xterm-256color", "NO_COLOR": "1"}],
                         ids=["xterm-16color", "NO_COLOR"])
def test_a_real_terminal_with_few_or_no_colours(setup, env):
    status, out, missing = run_in_pty(env, VISITS, cwd=setup.parent.parent)
    assert missing == [], screen_text(out)[-2000:]  # every tab and the help screen were drawn
    assert status == 0, out[-2000:]
    assert b"Traceback" not in out and b"Internal error" not in out
    colours = colours_used(out)
    if "NO_COLOR" in env:  # Textual draws NO_COLOR in greys: shades, no hue
        assert colours and all(kind == "16" and code[0] % 10 in (0, 7) or kind == "256" and code[0] in GREYS_256
                               or kind == "rgb" and len(set(code)) == 1 for kind, code in colours), colours
    else:  # only the 16 colours the terminal has
        assert colours and {kind for kind, _ in colours} == {"16"}, colours
