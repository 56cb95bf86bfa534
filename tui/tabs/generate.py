"""The Generate tab: stream text from a run's checkpoint, quantize it, and A/B fp32 against int8.

The tab adapts to the run's task (RUN/config.toml [task], read in a worker when a run is picked):
- lm: the prompt is continued in the output pane;
- instruct: a chat. Enter sends a turn, the whole conversation (the run's template applied, not shown) is
  the prompt, the reply streams into the transcript; ctrl+n starts a new chat;
- classify: one bar per class with its probability, recomputed as you type (debounced, in a worker).
A/B runs fp32 and int8 side by side in each: two outputs, two conversations, two sets of bars.

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
from tui.widgets.class_bars import ClassBars
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_picker import RunPicked, RunPicker
from tui.widgets.token_stream import TokenStream
from tui.workers import engine_work

FLUSH_INTERVAL = 1 / 30
# The speed in a stream's border is redrawn a few times a second: changing a border repaints the whole pane,
# which on a busy 2-core machine costs more than the text itself.
STATS_INTERVAL = 0.25
CLASSIFY_DEBOUNCE = 0.25  # seconds of no typing before the classify view asks the model
PLACEHOLDERS = {"lm": "prompt (Enter or ctrl+s generates, Up/Down: history)",
                "instruct": "message (Enter sends, ctrl+n new chat, Up/Down: history)",
                "classify": "text to classify (the bars follow as you type)"}

FIELDS = [k for k in knobs(SamplingConfig) if k.label]  # the sampling controls, in the order they are shown


@dataclass
class GenerationRequest:
    run_dir: Path
    checkpoints: list[str]  # one (plain) or two (A/B: fp32 then int8)
    prompt: str
    sampling: dict[str, Any]  # SamplingConfig fields; built into one in the worker (torch stays off the UI thread)
    # A chat: each side's conversation (A/B: each its own replies) and the run's template; the worker renders
    # the prompt from them (engine.tasks.instruct imports torch, which stays off the UI thread).
    chats: list[list[dict[str, str]]] | None = None
    template: dict[str, str] | None = None


@dataclass
class RunTask(Message):
    """What the picked run was trained for: kind lm | classify | instruct, and its RUN/task.json."""
    run_dir: Path
    kind: str
    info: dict


@dataclass
class ClassProbs(Message):
    side: int
    run_dir: Path
    checkpoint: str
    text: str  # the text classified (a late answer for an older text is dropped)
    probs: dict[str, float]


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
        Binding("ctrl+n", "new_chat", "New chat"),
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
    GenerateTab ClassBars { width: 1fr; display: none; }
    GenerateTab #bars-b { margin-left: 1; }
    GenerateTab.-classify #gen-params, GenerateTab.-classify #out-a, GenerateTab.-classify.-ab #out-b { display: none; }
    GenerateTab.-classify #bars-a, GenerateTab.-classify.-ab #bars-b { display: block; }
    """

    ab_mode: reactive[bool] = reactive(False)
    running: reactive[bool] = reactive(False)
    mode: reactive[str] = reactive("lm")  # the picked run's task: lm | instruct | classify

    def __init__(self) -> None:
        super().__init__()
        self._worker: Worker | None = None
        self._started = 0.0
        self._stats_shown: dict[int, float] = {}  # when each side's speed was last redrawn
        self._task_run: Path | None = None  # the run whose task the view shows
        self._task_info: dict = {}  # its RUN/task.json (labels, template)
        self._chats: list[list[dict[str, str]]] = [[], []]  # each side's conversation (A/B: its own replies)
        self._replies: dict[int, list[str]] = {}  # the reply streaming on each side
        self._classify_timer: Any = None
        self._discard = False  # a cancelled stream's last batches must not land in the view that replaced it

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
            yield ClassBars("classes", id="bars-a")
            yield ClassBars("int8", id="bars-b")
        yield Static("ctrl+s generate · esc stop · ctrl+t quantize · ctrl+b A/B fp32 vs int8", id="gen-status")

    def on_key(self, event: events.Key) -> None:
        """Typing on the tab itself (where pressing 4 lands) starts a prompt: a printable key focuses the
        prompt and goes into it. The app's keys stay theirs: digits switch tabs, '?' opens the help."""
        prompt = self.query_one(PromptInput)
        # Keys that came in one read (over SSH) were all queued for the tab before the first one moved the
        # focus: once the typing has started, the rest of them are text, '?' and digits included.
        typing = self.screen.focused is prompt
        if event.is_printable and (typing or self.has_focus and event.character not in "0123456789?"):
            event.stop()
            self.screen.set_focus(prompt)
            prompt.insert_text_at_cursor(event.character)

    # -- actions ----------------------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_generate()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.mode == "classify" and isinstance(event.input, PromptInput):
            if self._classify_timer is not None:
                self._classify_timer.stop()
            self._classify_timer = self.set_timer(CLASSIFY_DEBOUNCE, self._request_classify)

    def action_generate(self) -> None:
        picker = self.query_one(RunPicker)
        if picker.run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return
        if self.mode == "classify":
            self._request_classify()
            return
        if self.running:  # a chat turn waits for the reply before it (Escape stops it)
            self.notify("Still generating: wait for the reply or press Escape.", severity="warning")
            return
        try:
            sampling = parse_sampling({k.name: self.query_one(f"#gen-{k.name}", Input).value for k in FIELDS})
        except ConfigError as e:
            self.notify(str(e), severity="error")
            return
        prompt_input = self.query_one(PromptInput)
        prompt_input.commit()
        checkpoints = self._checkpoints()
        text = prompt_input.value
        request = GenerationRequest(picker.run_dir, checkpoints, text, sampling)
        if self.mode == "instruct":
            if not text.strip():
                self.notify("Type a message first.", severity="warning")
                return
            for side in range(len(checkpoints)):
                self._chat_turn(side, text)
            request.chats = [list(chat) for chat in self._chats[:len(checkpoints)]]
            request.template = self._task_info["template"]
            prompt_input.value = ""
        else:
            for stream in self.query(TokenStream):
                stream.reset(text)
        self.running = True
        self._started = time.monotonic()
        self._set_status(f"generating from {picker.run_dir.name} ({' vs '.join(checkpoints)})…")
        self._worker = self._generate(request)

    def _checkpoints(self) -> list[str]:
        picker = self.query_one(RunPicker)
        if self.ab_mode:
            return [picker.checkpoint if picker.checkpoint != "int8" else "best", "int8"]
        return [picker.checkpoint]

    def _chat_turn(self, side: int, text: str) -> None:
        """Add the user's turn to a side's conversation and transcript."""
        chat = self._chats[side]
        chat.append({"role": "user", "content": text})
        self._replies[side] = []
        self._side(side).append_text(("\n\n" if len(chat) > 1 else "") + f"› {text}\n", "bold")

    def action_new_chat(self) -> None:
        if self.mode != "instruct":
            raise SkipAction()
        self._cancel_for_new_view()
        self._chats = [[], []]
        self._replies = {}
        for stream in self.query(TokenStream):
            stream.reset()
        self._set_status("new chat · Enter sends")

    def action_stop(self) -> None:
        if not self.running or self._worker is None:
            raise SkipAction()  # nothing to stop: Escape keeps its app-wide meaning (leave the field)
        self._worker.cancel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.running  # "Stop" shows in the Footer only while something streams
        if action == "new_chat":
            return self.mode == "instruct"
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
        if self.mode == "instruct":
            self.action_new_chat()  # the right side's conversation starts with the left's, empty
        elif self.mode == "classify":
            self._request_classify()

    def _cancel_for_new_view(self) -> None:
        if self.running and self._worker is not None:
            self._worker.cancel()
            self._discard = True  # until its GenerationEnded

    # -- the run's task ---------------------------------------------------------------------------------

    def on_run_picked(self, message: RunPicked) -> None:
        if message.run_dir is not None:
            self._read_task(message.run_dir)

    @engine_work("run-task")
    def _read_task(self, run_dir: Path) -> None:
        from engine.config import RunConfig
        from engine.rundir import read_task_info  # no torch: a picked run's view is known before its model loads

        kind = RunConfig.load(run_dir / "config.toml").task.kind
        self.post_message(RunTask(run_dir, kind, read_task_info(run_dir) if kind != "lm" else {}))

    def on_run_task(self, message: RunTask) -> None:
        if message.run_dir != self.query_one(RunPicker).run_dir:
            return  # another run was picked meanwhile
        same_run = message.run_dir == self._task_run
        self._task_run, self._task_info = message.run_dir, message.info
        if message.kind == "classify":
            for bars in self.query(ClassBars):
                bars.set_labels(message.info.get("labels", []))
        if message.kind != self.mode:
            self.mode = message.kind
        elif self.mode == "instruct" and not same_run:
            self.action_new_chat()  # another chat run: its own conversation
        elif self.mode == "classify":
            self._request_classify()  # another checkpoint: its answer

    def watch_mode(self, old: str, mode: str) -> None:
        self.set_class(mode == "classify", "-classify")
        self.set_class(mode == "instruct", "-chat")
        self.query_one(PromptInput).placeholder = PLACEHOLDERS[mode]
        self._cancel_for_new_view()
        self._chats, self._replies = [[], []], {}
        self._side(0).reset(title="chat" if mode == "instruct" else "output")
        self._side(1).reset(title="int8")
        self.refresh_bindings()
        self._set_status({"lm": "ctrl+s generate · esc stop · ctrl+t quantize · ctrl+b A/B fp32 vs int8",
                          "instruct": "chat: Enter sends · esc stops the reply · ctrl+n new chat · ctrl+b A/B",
                          "classify": "classify: type a text · ctrl+b A/B fp32 vs int8 · ctrl+t quantize"}[mode])
        if mode == "classify":
            self._request_classify()

    # -- classify -----------------------------------------------------------------------------------------

    def _request_classify(self) -> None:
        run_dir = self.query_one(RunPicker).run_dir
        text = self.query_one(PromptInput).value
        if run_dir is None or self.mode != "classify":
            return
        if not text.strip():
            for bars in self.query(ClassBars):
                bars.probs = {}
            return
        self._classify(run_dir, self._checkpoints(), text)

    @engine_work("classify")
    def _classify(self, run_dir: Path, checkpoints: list[str], text: str) -> None:
        from engine.tasks.classify import classify_texts

        labels = self._task_info.get("labels", [])
        for side, which in enumerate(checkpoints):
            model, _, tokenizer = model_cache.load(run_dir, which)
            if get_current_worker().is_cancelled:  # a newer text was typed meanwhile
                return
            probs = classify_texts(model, tokenizer, labels, [text])[0]
            self.post_message(ClassProbs(side, run_dir, which, text, probs))

    def on_class_probs(self, message: ClassProbs) -> None:
        if message.text == self.query_one(PromptInput).value:
            bars = self.query_one("#bars-a" if message.side == 0 else "#bars-b", ClassBars)
            bars.border_title = f"{message.checkpoint} · {message.run_dir.name}"
            bars.probs = message.probs

    # -- workers ----------------------------------------------------------------------------------------

    @engine_work("generate")
    def _generate(self, request: GenerationRequest) -> None:
        # Failures propagate: EngineTab turns them into a notification (and the log gets the traceback).
        worker = get_current_worker()
        from engine.sampler import SamplingConfig, generate

        cfg = SamplingConfig(**request.sampling)
        for side, which in enumerate(request.checkpoints):
            prompt = request.prompt
            if request.chats is not None:
                from engine.tasks.instruct import prompt_text

                prompt = prompt_text(request.template, request.chats[side])
            # The checkpoint first: a narrow panel cuts the title's end, and side by side it is what differs.
            self.post_message(SideStarted(side, f"{which} · {request.run_dir.name} · loading…"))
            model, _, tokenizer = model_cache.load(request.run_dir, which)
            self.post_message(SideStarted(side, f"{which} · {request.run_dir.name}"))
            self._stream(worker, side, generate(model, tokenizer, prompt, cfg))
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
                self.running = self._discard = False
            self._set_status(f"{event.worker.group} failed (see the notification)")

    # -- messages from the worker -----------------------------------------------------------------------

    def _side(self, side: int) -> TokenStream:
        return self.query_one("#out-a" if side == 0 else "#out-b", TokenStream)

    def on_side_started(self, message: SideStarted) -> None:
        self._side(message.side).border_title = message.title

    def on_tokens_arrived(self, message: TokensArrived) -> None:
        if self._discard:
            return
        stream = self._side(message.side)
        stream.append(message.tokens)
        if message.side in self._replies:
            reply = self._replies[message.side]
            reply.extend(text for text, _ in message.tokens)
            if message.final:  # the reply (as much as was shown, if stopped) joins the conversation
                del self._replies[message.side]
                self._chats[message.side].append({"role": "assistant", "content": "".join(reply)})
        now = time.monotonic()
        if message.final or now - self._stats_shown.get(message.side, 0.0) >= STATS_INTERVAL:
            self._stats_shown[message.side] = now
            stream.set_stats(speed_line(message.count, message.elapsed))

    def on_generation_ended(self, message: GenerationEnded) -> None:
        self.running = False
        if self._discard:
            self._discard = False
            return
        parts = [f"{s.border_title.split(' · ')[-1]}: {s.border_subtitle}" for s in self.query(TokenStream)
                 if s.display and s.border_subtitle]
        self._set_status(f"{message.outcome} · " + " | ".join(parts))

    def _set_status(self, text: str) -> None:
        self.query_one("#gen-status", Static).update(text)
