"""The Generate tab: stream text from a run's checkpoint, quantize it, and A/B fp32 against int8.

The tab adapts to the run's task (RUN/config.toml [task], read in a worker when a run is picked):
- lm: the prompt is continued in the output pane (StreamView);
- instruct: a chat (StreamView's chat). Enter sends a turn, the reply streams into the transcript; ctrl+n
  starts a new chat;
- classify: one bar per class with its probability, recomputed as you type (ClassifyView).
A/B runs fp32 and int8 side by side in each: two outputs, two conversations, two sets of bars.
The tab holds the prompt, the run and the sampling controls, and tells its views what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Static

from engine.errors import ConfigError
from tui.tabs.base import EngineTab
from tui.widgets.classify_view import ClassifyView
from tui.widgets.prompt_input import PromptInput
from tui.widgets.run_actions import ActionDone, RunActions
from tui.widgets.run_picker import RunPicked, RunPicker
from tui.widgets.sampling_form import SamplingForm
from tui.widgets.stream_view import GenerationEnded, GenerationRequest, StreamView
from tui.workers import WorkFailed, engine_work

PLACEHOLDERS = {"lm": "prompt (Enter or ctrl+s generates, Up/Down: history)",
                "instruct": "message (Enter sends, ctrl+n new chat, Up/Down: history)",
                "classify": "text to classify (the bars follow as you type)"}
STATUS = {"lm": "ctrl+s generate · esc stop · ctrl+t quantize · ctrl+b A/B fp32 vs int8",
          "instruct": "chat: Enter sends · esc stops the reply · ctrl+n new chat · ctrl+b A/B",
          "classify": "classify: type a text · ctrl+b A/B fp32 vs int8 · ctrl+t quantize"}


@dataclass
class RunTask(Message):
    """What the picked run was trained for: kind lm | classify | instruct, and its RUN/task.json."""
    run_dir: Path
    kind: str
    info: dict


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
    GenerateTab StreamView, GenerateTab ClassifyView { height: 1fr; }
    GenerateTab #out-b { display: none; margin-left: 1; }
    GenerateTab #bars-b { display: none; }
    GenerateTab.-ab #out-b, GenerateTab.-ab #bars-b { display: block; }
    GenerateTab #gen-status { height: 1; color: $text-muted; }
    GenerateTab ClassifyView, GenerateTab.-classify SamplingForm, GenerateTab.-classify StreamView { display: none; }
    GenerateTab.-classify ClassifyView { display: block; }
    """

    ab_mode: reactive[bool] = reactive(False)
    mode: reactive[str] = reactive("lm")  # the picked run's task: lm | instruct | classify

    def __init__(self) -> None:
        super().__init__()
        self._task_run: Path | None = None  # the run whose task the view shows
        self._task_info: dict = {}  # its RUN/task.json (labels, template)

    def compose(self) -> ComposeResult:
        # The prompt first: Tab from the tab lands in it (the run is usually chosen once).
        # Not selected on focus: the key that focuses it by typing on the tab (on_key) must not be replaced.
        yield PromptInput(placeholder=PLACEHOLDERS["lm"], id="gen-prompt", compact=True, select_on_focus=False)
        yield RunPicker(id="gen-run")
        yield SamplingForm(id="gen-params")
        yield StreamView()
        yield ClassifyView()
        yield Static(STATUS["lm"], id="gen-status")
        yield RunActions()

    def on_mount(self) -> None:
        self.watch(self.streams, "running", lambda _: self.refresh_bindings(), init=False)

    @property
    def streams(self) -> StreamView:
        return self.query_one(StreamView)

    @property
    def running(self) -> bool:
        return self.streams.running

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
        run_dir = self.query_one(RunPicker).run_dir
        if self.mode == "classify" and isinstance(event.input, PromptInput) and run_dir is not None:
            self.query_one(ClassifyView).typed(run_dir, self._checkpoints(), event.value)

    def _picked(self) -> RunPicker | None:
        """The run picker, or None (and a warning) while no run is picked."""
        picker = self.query_one(RunPicker)
        if picker.run_dir is None:
            self.notify("No run selected: train one in the Train tab first.", severity="warning")
            return None
        return picker

    def action_generate(self) -> None:
        if (picker := self._picked()) is None:
            return
        if self.mode == "classify":
            self._classify()
            return
        if self.running:  # a chat turn waits for the reply before it (Escape stops it)
            self.notify("Still generating: wait for the reply or press Escape.", severity="warning")
            return
        try:
            sampling = self.query_one(SamplingForm).values()
        except ConfigError as e:
            self.notify(str(e), severity="error")
            return
        prompt_input = self.query_one(PromptInput)
        prompt_input.commit()
        checkpoints = self._checkpoints()
        if self.mode == "instruct" and not prompt_input.value.strip():
            self.notify("Type a message first.", severity="warning")
            return
        self.streams.start(GenerationRequest(picker.run_dir, checkpoints, prompt_input.value, sampling))
        if self.mode == "instruct":
            prompt_input.value = ""
        self._set_status(f"generating from {picker.run_dir.name} ({' vs '.join(checkpoints)})…")

    def _checkpoints(self) -> list[str]:
        picker = self.query_one(RunPicker)
        if self.ab_mode:
            return [picker.checkpoint if picker.checkpoint != "int8" else "best", "int8"]
        return [picker.checkpoint]

    def action_new_chat(self) -> None:
        if self.mode != "instruct":
            raise SkipAction()
        self.streams.reset(self._task_info["template"])
        self._set_status("new chat · Enter sends")

    def action_stop(self) -> None:
        if not self.streams.stop():
            raise SkipAction()  # nothing to stop: Escape keeps its app-wide meaning (leave the field)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.running  # "Stop" shows in the Footer only while something streams
        if action == "new_chat":
            return self.mode == "instruct"
        if action == "toggle_colors":
            return self.mode != "classify"  # class bars have no tokens to colour
        return True

    def action_toggle_ab(self) -> None:
        self.ab_mode = not self.ab_mode

    def action_toggle_colors(self) -> None:
        self.streams.toggle_colors()

    def action_quantize(self) -> None:
        if (picker := self._picked()) is not None:
            self._set_status(f"quantizing {picker.run_dir.name} to int8…")
            self.query_one(RunActions).quantize(picker.run_dir)

    def action_serve(self) -> None:
        if (picker := self._picked()) is None:
            return
        self._set_status(f"starting a server for {picker.run_dir.name} ({picker.checkpoint})…")
        self.query_one(RunActions).serve(picker.run_dir, picker.checkpoint)

    def watch_ab_mode(self, ab: bool) -> None:
        self.set_class(ab, "-ab")
        self._set_status("A/B: fp32 left, int8 right, same seed and settings · ctrl+s generates both"
                         if ab else "single output · ctrl+s generates")
        if self.mode == "instruct":
            self.action_new_chat()  # the right side's conversation starts with the left's, empty
        elif self.mode == "classify":
            self._classify()

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
            self.query_one(ClassifyView).set_labels(message.info.get("labels", []))
        if message.kind != self.mode:
            self.mode = message.kind
        elif self.mode == "instruct" and not same_run:
            self.action_new_chat()  # another chat run: its own conversation
        elif self.mode == "classify":
            self._classify()  # another checkpoint: its answer

    def watch_mode(self, mode: str) -> None:
        self.set_class(mode == "classify", "-classify")
        self.query_one(PromptInput).placeholder = PLACEHOLDERS[mode]
        self.streams.reset(self._task_info["template"] if mode == "instruct" else None)
        self.refresh_bindings()
        self._set_status(STATUS[mode])
        if mode == "classify":
            self._classify()

    def _classify(self) -> None:
        run_dir = self.query_one(RunPicker).run_dir
        if run_dir is not None and self.mode == "classify":
            self.query_one(ClassifyView).classify(run_dir, self._checkpoints(), self.query_one(PromptInput).value)

    # -- what the views and workers report --------------------------------------------------------------

    def on_generation_ended(self, message: GenerationEnded) -> None:
        self._set_status(f"{message.outcome} · {self.streams.speeds()}")

    def on_action_done(self, message: ActionDone) -> None:
        self._set_status(message.status)
        self.notify(message.note)

    def on_work_failed(self, message: WorkFailed) -> None:
        self._set_status(f"{message.group} failed (see the notification)")

    def _set_status(self, text: str) -> None:
        self.query_one("#gen-status", Static).update(text)
