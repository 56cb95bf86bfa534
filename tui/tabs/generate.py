"""The Generate tab: stream text from a run's checkpoint, quantize it, and A/B fp32 against int8.

Generation runs in a thread worker. Tokens are buffered in the worker and posted as one message at
most every FLUSH_INTERVAL seconds (~30 UI updates a second however fast the model is), and the worker
checks `is_cancelled` between tokens so Escape stops it at once. In A/B mode the worker runs the fp32
checkpoint and then the int8 one with the same prompt, seed and settings, so the texts can be compared
and each speed is measured without the other competing for the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, Static
from textual.actions import SkipAction
from textual.worker import Worker, WorkerState, get_current_worker

from engine.config import SamplingConfig, knobs
from engine.errors import ConfigError
from tui import model_cache
from tui.tabs.base import EngineTab
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicker
from tui.widgets.token_stream import TokenStream
from tui.workers import engine_work

FLUSH_INTERVAL = 1 / 30
# The speed in a stream's border is redrawn a few times a second: changing a border repaints the whole pane,
# which on a busy 2-core machine costs more than the text itself.
STATS_INTERVAL = 0.25

FIELDS = [k for k in knobs(SamplingConfig) if k.label]  # the sampling controls, in the order they are shown


@dataclass
class GenerationRequest:
    run_dir: Path
    checkpoints: list[str]  # one (plain) or two (A/B: fp32 then int8)
    prompt: str
    sampling: dict[str, Any]  # SamplingConfig fields; built into one in the worker (torch stays off the UI thread)


@dataclass
class TokensArrived(Message):
    side: int  # 0: the left stream, 1: the right (A/B)
    tokens: list[tuple[str, float]]  # (text, probability) since the last batch
    count: int  # tokens so far on this side
    elapsed: float  # seconds since this side's first token was asked for
    final: bool = False


@dataclass
class SideStarted(Message):
    side: int
    title: str


@dataclass
class GenerationEnded(Message):
    outcome: str  # done | stopped


@dataclass
class Quantized(Message):
    report: dict  # engine.int8.save_int8's


@dataclass
class Serving(Message):
    run: str
    info: dict  # the server's address record (engine.runs.server_info)


def parse_sampling(values: dict[str, str]) -> dict[str, Any]:
    """The sampling controls' text as SamplingConfig fields; a bad value raises ConfigError naming it."""
    out: dict[str, Any] = {}
    for k in FIELDS:
        raw = values.get(k.name, "")
        if raw.strip() == "" and not k.optional:
            raise ConfigError(f"{k.label} is empty: enter a value.")
        try:
            out[k.name] = k.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{k.label} {e}.") from None
    return out


def speed_line(count: int, elapsed: float) -> str:
    rate = count / elapsed if elapsed > 0 else 0.0
    return f"{count} tok · {rate:,.1f} tok/s"


class GenerateTab(EngineTab, can_focus=True):
    BINDINGS = [
        Binding("ctrl+s,ctrl+g", "generate", "Generate"),  # ctrl+s: every tab's main action
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+b", "toggle_ab", "A/B int8"),
        Binding("ctrl+t", "quantize", "Quantize"),
        Binding("ctrl+o", "toggle_colors", "Prob colours"),
        # Off the footer (it is full at 80 columns); the help screen and the palette list it.
        Binding("ctrl+r", "serve", "Serve this run", show=False),
    ]
    DEFAULT_CSS = """
    GenerateTab { padding: 0 1; }
    GenerateTab #gen-prompt { margin: 1 0; }
    GenerateTab #gen-params { height: 1; margin: 1 0; }
    GenerateTab #gen-params Label { margin: 0 1 0 0; color: $text-muted; }
    GenerateTab #gen-params Input { width: 7; margin: 0 2 0 0; }
    GenerateTab #gen-outputs { height: 1fr; }
    GenerateTab #out-b { display: none; margin-left: 1; }
    GenerateTab.-ab #out-b { display: block; }
    GenerateTab #gen-status { height: 1; color: $text-muted; }
    """

    ab_mode: reactive[bool] = reactive(False)
    running: reactive[bool] = reactive(False)

    def __init__(self) -> None:
        super().__init__()
        self._worker: Worker | None = None
        self._started = 0.0
        self._stats_shown: dict[int, float] = {}  # when each side's speed was last redrawn

    def compose(self) -> ComposeResult:
        # The prompt first: Tab from the tab lands in it (the run is usually chosen once).
        # Not selected on focus: the key that focuses it by typing on the tab (on_key) must not be replaced.
        yield PromptInput(placeholder="prompt (Enter or ctrl+s generates, Up/Down: history)", id="gen-prompt",
                          compact=True, select_on_focus=False)
        yield RunPicker(id="gen-run")
        with Horizontal(id="gen-params"):
            for k in FIELDS:
                yield Label(k.label)
                yield Input("" if k.default is None else str(k.default), id=f"gen-{k.name}", compact=True,
                            placeholder="off")
        with Horizontal(id="gen-outputs"):
            yield TokenStream("output", id="out-a")
            yield TokenStream("int8", id="out-b")
        yield Static("ctrl+s generate · esc stop · ctrl+t quantize · ctrl+b A/B fp32 vs int8", id="gen-status")

    def on_key(self, event: events.Key) -> None:
        """Typing on the tab itself (where pressing 4 lands) starts a prompt: a printable key focuses the
        prompt and goes into it. The app's keys stay theirs: digits switch tabs, '?' opens the help."""
        if self.has_focus and event.is_printable and event.character not in "0123456789?":
            event.stop()
            prompt = self.query_one(PromptInput)
            prompt.focus()
            prompt.insert_text_at_cursor(event.character)

    # -- actions ----------------------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_generate()

    def action_generate(self) -> None:
        picker = self.query_one(RunPicker)
        if picker.run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return
        try:
            sampling = parse_sampling({k.name: self.query_one(f"#gen-{k.name}", Input).value for k in FIELDS})
        except ConfigError as e:
            self.notify(str(e), severity="error")
            return
        prompt_input = self.query_one(PromptInput)
        prompt_input.commit()
        if self.ab_mode:
            fp32 = picker.checkpoint if picker.checkpoint != "int8" else "best"
            checkpoints = [fp32, "int8"]
        else:
            checkpoints = [picker.checkpoint]
        request = GenerationRequest(picker.run_dir, checkpoints, prompt_input.value, sampling)
        for stream in self.query(TokenStream):
            stream.reset(prompt_input.value)
        self.running = True
        self._started = time.monotonic()
        self._set_status(f"generating from {picker.run_dir.name} ({' vs '.join(checkpoints)})…")
        self._worker = self._generate(request)

    def action_stop(self) -> None:
        if not self.running or self._worker is None:
            raise SkipAction()  # nothing to stop: Escape keeps its app-wide meaning (leave the field)
        self._worker.cancel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.running  # "Stop" shows in the Footer only while something streams
        return True

    def watch_running(self) -> None:
        self.refresh_bindings()

    def action_toggle_ab(self) -> None:
        self.ab_mode = not self.ab_mode

    def action_toggle_colors(self) -> None:
        for stream in self.query(TokenStream):
            stream.color_by_prob = not stream.color_by_prob

    def action_quantize(self) -> None:
        run_dir = self.query_one(RunPicker).run_dir
        if run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return
        self._set_status(f"quantizing {run_dir.name} to int8…")
        self._quantize(run_dir)

    def action_serve(self) -> None:
        picker = self.query_one(RunPicker)
        if picker.run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return
        self._set_status(f"starting a server for {picker.run_dir.name} ({picker.checkpoint})…")
        self._serve(picker.run_dir, picker.checkpoint)

    def watch_ab_mode(self, ab: bool) -> None:
        self.set_class(ab, "-ab")
        self._set_status("A/B: fp32 left, int8 right, same seed and settings · ctrl+s generates both"
                         if ab else "single output · ctrl+s generates")

    # -- workers ----------------------------------------------------------------------------------------

    @engine_work("generate")
    def _generate(self, request: GenerationRequest) -> None:
        # Failures propagate: EngineTab turns them into a notification (and the log gets the traceback).
        worker = get_current_worker()
        from engine.sampler import SamplingConfig, generate

        cfg = SamplingConfig(**request.sampling)
        for side, which in enumerate(request.checkpoints):
            # The checkpoint first: a narrow panel cuts the title's end, and side by side it is what differs.
            self.post_message(SideStarted(side, f"{which} · {request.run_dir.name} · loading…"))
            model, _, tokenizer = model_cache.load(request.run_dir, which)
            self.post_message(SideStarted(side, f"{which} · {request.run_dir.name}"))
            self._stream(worker, side, generate(model, tokenizer, request.prompt, cfg))
            if worker.is_cancelled:
                self.post_message(GenerationEnded("stopped"))
                return
        self.post_message(GenerationEnded("done"))

    def _stream(self, worker: Worker, side: int, tokens) -> None:
        """Drain a token iterator, posting batches at most every FLUSH_INTERVAL seconds."""
        start = last = time.monotonic()
        batch: list[tuple[str, float]] = []
        count = 0
        for token in tokens:
            if worker.is_cancelled:
                break
            batch.append((token.text, float(token.prob)))
            count += 1
            now = time.monotonic()
            if now - last >= FLUSH_INTERVAL:
                self.post_message(TokensArrived(side, batch, count, now - start))
                batch, last = [], now
        self.post_message(TokensArrived(side, batch, count, time.monotonic() - start, final=True))

    @engine_work("quantize")
    def _quantize(self, run_dir: Path) -> None:
        from engine.int8 import save_int8

        self.post_message(Quantized(save_int8(run_dir)))

    @engine_work("serve")
    def _serve(self, run_dir: Path, checkpoint: str) -> None:
        from serve.server import serve_in_background  # its own process: it outlives the TUI

        self.post_message(Serving(run_dir.name, serve_in_background(run_dir, checkpoint)))

    def on_serving(self, message: Serving) -> None:
        run, info = message.run, message.info
        text = f"{run} ({info['checkpoint']}) is served at {info['url']}; `smallgpt runs stop {run}` stops it"
        self._set_status(text)
        self.notify(text + ".")

    def on_quantized(self, message: Quantized) -> None:
        report = message.report
        fp32, int8 = report.get("fp32_bytes"), report.get("int8_bytes")
        sizes = f": {int8 / 1e6:.2f} MB vs {fp32 / 1e6:.2f} MB fp32" if fp32 and int8 else ""
        self._set_status(f"int8 checkpoint written{sizes}; ctrl+b compares it with fp32")
        self.notify(f"int8 checkpoint written{sizes}.")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # EngineTab's handler reports the error (Textual calls each class's handler along the MRO).
        if event.state == WorkerState.ERROR:
            if event.worker is self._worker:
                self.running = False
            self._set_status(f"{event.worker.group} failed (see the notification)")

    # -- messages from the worker -----------------------------------------------------------------------

    def _side(self, side: int) -> TokenStream:
        return self.query_one("#out-a" if side == 0 else "#out-b", TokenStream)

    def on_side_started(self, message: SideStarted) -> None:
        self._side(message.side).border_title = message.title

    def on_tokens_arrived(self, message: TokensArrived) -> None:
        stream = self._side(message.side)
        stream.append(message.tokens)
        now = time.monotonic()
        if message.final or now - self._stats_shown.get(message.side, 0.0) >= STATS_INTERVAL:
            self._stats_shown[message.side] = now
            stream.set_stats(speed_line(message.count, message.elapsed))

    def on_generation_ended(self, message: GenerationEnded) -> None:
        self.running = False
        parts = [f"{s.border_title.split(' · ')[-1]}: {s.border_subtitle}" for s in self.query(TokenStream)
                 if s.display and s.border_subtitle]
        self._set_status(f"{message.outcome} · " + " | ".join(parts))

    def _set_status(self, text: str) -> None:
        self.query_one("#gen-status", Static).update(text)
