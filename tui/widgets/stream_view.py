"""StreamView: the Generate tab's output, text streamed from a run's checkpoint into one pane (two in A/B).

- lm: each generation continues the prompt in the panes;
- chat: the panes are transcripts. Each side keeps its conversation (A/B: each its own replies); a turn's
  prompt is the whole conversation with the run's template applied (not shown), and the reply streams in.

The tokens are decoded in the app's decode process (engine.decode_process), started on the first generation
and ended with the view: decoding in a thread of the UI process would compete with the UI for the GIL. A
thread worker waits on its pipe (the wait releases the GIL) and posts each batch that arrives, at most one
per engine.decode_process.FLUSH_INTERVAL seconds, so the screen is painted ~10 times a second however fast
the model is. Escape cancels the worker, which tells the child to stop before its next token.
In A/B mode the fp32 checkpoint streams and then the int8 one with the same prompt, seed and settings, so
the texts can be compared and each speed is measured without the other competing for the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.containers import Horizontal
from textual.app import ComposeResult
from textual.message import Message
from textual.reactive import reactive
from textual.worker import Worker, WorkerState, get_current_worker

from engine.decode_process import Batch, DecodeProcess, DecodeRequest
from tui.widgets.token_stream import TokenStream
from tui.workers import ReportsWorkerErrors, engine_work

# The speed in a pane's border is redrawn twice a second: a border change repaints the whole pane.
STATS_INTERVAL = 0.5


@dataclass
class GenerationRequest:
    run_dir: Path
    checkpoints: list[str]  # one (plain) or two (A/B: fp32 then int8)
    prompt: str
    sampling: dict[str, Any]  # SamplingConfig fields; built into one in the decode process
    # A chat: each side's conversation and the run's template; the decode process renders the prompt.
    chats: list[list[dict[str, str]]] | None = None
    template: dict[str, str] | None = None


@dataclass
class TokensArrived(Message, bubble=False):
    side: int  # 0: the left pane, 1: the right (A/B)
    tokens: list[tuple[str, float]]  # (text, probability) since the last batch
    count: int  # tokens so far on this side
    elapsed: float  # seconds since this side's first token was asked for
    final: bool = False


@dataclass
class SideStarted(Message, bubble=False):
    side: int
    title: str


@dataclass
class GenerationEnded(Message):
    """The stream finished or was stopped; the tab's status line says so, with `StreamView.speeds`."""
    outcome: str  # done | stopped


def speed_line(count: int, elapsed: float) -> str:
    rate = count / elapsed if elapsed > 0 else 0.0
    return f"{count} tok · {rate:,.1f} tok/s"


class StreamView(ReportsWorkerErrors, Horizontal):
    running: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.template: dict[str, str] | None = None  # a chat run's template: the panes are its transcripts
        self.chats: list[list[dict[str, str]]] = [[], []]  # each side's conversation
        self._replies: dict[int, list[str]] = {}  # the reply streaming on each side
        self._worker: Worker | None = None
        self.decoder = DecodeProcess()  # its process starts with the first generation
        self._stats_shown: dict[int, float] = {}  # when each side's speed was last redrawn
        self._discard = False  # a cancelled stream's last batches must not land in the view that replaced it

    def compose(self) -> ComposeResult:
        yield TokenStream("output", id="out-a")
        yield TokenStream("int8", id="out-b")

    def side(self, side: int) -> TokenStream:
        return self.query_one("#out-a" if side == 0 else "#out-b", TokenStream)

    def reset(self, template: dict[str, str] | None = None) -> None:
        """Empty panes: a new chat with the run's template, or the lm view (None). A stream still running is
        stopped and its last batches dropped."""
        if self.running and self._worker is not None:
            self._worker.cancel()
            self._discard = True  # until its GenerationEnded
        self.template = template
        self.chats, self._replies = [[], []], {}
        self.side(0).reset(title="output" if template is None else "chat")
        self.side(1).reset(title="int8")

    def start(self, request: GenerationRequest) -> None:
        """Stream a generation; in a chat, request.prompt is the user's turn, added to each side's conversation."""
        sides = range(len(request.checkpoints))
        if self.template is not None:
            for side in sides:
                chat = self.chats[side]
                chat.append({"role": "user", "content": request.prompt})
                self._replies[side] = []
                self.side(side).append_text(("\n\n" if len(chat) > 1 else "") + f"› {request.prompt}\n", "bold")
            request.chats = [list(self.chats[side]) for side in sides]
            request.template = self.template
        else:
            for stream in self.query(TokenStream):
                stream.reset(request.prompt)
        self.running = True
        self._worker = self._generate(request)

    def stop(self) -> bool:
        """Cancel the stream; False when none runs."""
        if not self.running or self._worker is None:
            return False
        self._worker.cancel()
        return True

    def toggle_colors(self) -> None:
        for stream in self.query(TokenStream):
            stream.color_by_prob = not stream.color_by_prob

    def speeds(self) -> str:
        """Each shown pane's last speed, e.g. "best: 150 tok · 420.0 tok/s | int8: ..."."""
        return " | ".join(f"{s.border_title.split(' · ')[-1]}: {s.border_subtitle}" for s in self.query(TokenStream)
                          if s.display and s.border_subtitle)

    @engine_work("generate")
    def _generate(self, request: GenerationRequest) -> None:
        # Failures propagate: ReportsWorkerErrors turns them into a notification (and the log gets the traceback).
        worker = get_current_worker()
        for side, which in enumerate(request.checkpoints):
            # The checkpoint first: a narrow panel cuts the title's end, and side by side it is what differs.
            self.post_message(SideStarted(side, f"{which} · {request.run_dir.name} · loading…"))
            chat = request.chats[side] if request.chats is not None else None
            decode = DecodeRequest(request.run_dir, which, request.prompt, request.sampling, chat, request.template)
            for reply in self.decoder.stream(decode, lambda: worker.is_cancelled):
                if isinstance(reply, Batch):
                    self.post_message(TokensArrived(side, reply.tokens, reply.count, reply.elapsed, reply.final))
                else:
                    self.post_message(SideStarted(side, f"{which} · {request.run_dir.name}"))
            if worker.is_cancelled:
                self.post_message(GenerationEnded("stopped"))
                return
        self.post_message(GenerationEnded("done"))

    def on_side_started(self, message: SideStarted) -> None:
        self.side(message.side).border_title = message.title

    def on_tokens_arrived(self, message: TokensArrived) -> None:
        if self._discard:
            return
        stream = self.side(message.side)
        stream.append(message.tokens)
        if message.side in self._replies:
            reply = self._replies[message.side]
            reply.extend(text for text, _ in message.tokens)
            if message.final:  # the reply (as much as was shown, if stopped) joins the conversation
                del self._replies[message.side]
                self.chats[message.side].append({"role": "assistant", "content": "".join(reply)})
        now = time.monotonic()
        if message.final or now - self._stats_shown.get(message.side, 0.0) >= STATS_INTERVAL:
            self._stats_shown[message.side] = now
            stream.set_stats(speed_line(message.count, message.elapsed))

    def on_generation_ended(self, message: GenerationEnded) -> None:
        self.running = False
        if self._discard:  # the view was reset meanwhile: its status is already said
            self._discard = False
            message.stop()
        else:
            self._drop_unanswered("stopped before this side's turn")

    def on_unmount(self) -> None:
        self.decoder.close()  # the app is exiting: its decode process goes with it

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # ReportsWorkerErrors reports the error (Textual calls each class's handler along the MRO).
        if event.state == WorkerState.ERROR and event.worker is self._worker:
            self.running = self._discard = False
            self._drop_unanswered("no reply: see the note")

    def _drop_unanswered(self, why: str) -> None:
        """A chat side whose reply never ended (an A/B's int8 side that failed, or was not reached before
        Escape): the conversation goes on without that user turn, and the pane says why."""
        for side in self._replies:
            self.chats[side].pop()
            self.side(side).append_text(f"({why})\n", "dim")
        self._replies = {}
