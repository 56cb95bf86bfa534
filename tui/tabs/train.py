"""The Train tab: a validated form, the detached training process, live curves and the runs table.

Training never runs in this process (DESIGN section 4): Start creates a run directory and launches
`python -m engine train` in its own session. One async worker tails the events of the followed run and
of the overlaid runs every half second; a timer redraws the status once a second and the chart every two
from those buffers, so a fast run costs the UI the same as a slow one.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Button, Collapsible, DataTable, Input, Label, ProgressBar, Select, Static

from engine.config import DEVICES, DTYPES, MODEL_KINDS, PRESETS, RunConfig, apply_overrides, preset, validate
from engine.errors import ConfigError, SmallGPTError
from engine.events import EventReader
from tui.messages import RunAttached
from tui.run_history import RunHistory, format_duration
from tui.tabs.base import EngineTab
from tui.widgets.loss_chart import LossChart, Series
from tui.widgets.runs_table import RunsTable, human_count

# The UI shares the CPU with the trainer (DESIGN 6: a watched run keeps >= 95% of its speed), so it reads
# and draws at a fixed pace however fast the run logs (measured: 4-5% of a core following a run that logs a
# dozen times a second), and lists checkpoints/ (which reads every run's events) rarely, plus at once when a
# followed run starts or ends.
POLL_S = 0.5  # how often events.jsonl files are read
REDRAW_S = 1.0  # how often the status is redrawn from the buffers (only when something changed)
CHART_S = 2.0  # how often the loss chart is
RUNS_EVERY = 20  # list checkpoints/ every RUNS_EVERY polls (10 s)


@dataclass(frozen=True)
class FormField:
    table: str  # "model" | "train"
    key: str  # the RunConfig field
    label: str
    parse: Callable[[str], Any] = int
    choices: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"f-{self.table}-{self.key}"


def _number(kind: type) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return kind(raw.strip())
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ValueError(f"must be {what} (got '{raw}')") from None
    return parse


INT, FLOAT = _number(int), _number(float)
MODEL_FIELDS = [
    FormField("model", "kind", "kind", str, MODEL_KINDS),
    FormField("model", "n_layer", "layers", INT),
    FormField("model", "n_head", "heads", INT),
    FormField("model", "n_embd", "width", INT),
    FormField("model", "block_size", "block size", INT),
    FormField("model", "dropout", "dropout", FLOAT),
]
TRAIN_FIELDS = [
    FormField("train", "batch_size", "batch", INT),
    FormField("train", "grad_accum", "grad accum", INT),
    FormField("train", "lr", "learning rate", FLOAT),
    FormField("train", "warmup_steps", "warmup", INT),
    FormField("train", "max_steps", "steps", INT),
    FormField("train", "weight_decay", "weight decay", FLOAT),
    FormField("train", "grad_clip", "grad clip", FLOAT),
    FormField("train", "eval_interval", "eval every", INT),
    FormField("train", "dtype", "dtype", str, DTYPES),
    FormField("train", "device", "device", str, DEVICES),
    FormField("train", "seed", "seed", INT),
]
FIELDS = MODEL_FIELDS + TRAIN_FIELDS


def field_for_error(message: str) -> FormField | None:
    """The form field a ConfigError sentence names first ("model.n_head must ...", "n_embd (..) must ...")."""
    best: tuple[int, FormField] | None = None
    for f in FIELDS:
        m = re.search(rf"(?<![\w.])({f.table}\.)?{f.key}\b", message)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), f)
    return best[1] if best else None


def _pid_alive(pid: int) -> bool:
    """Whether a process we launched still runs (reaping it if it has exited: it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child (another launcher): ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _reap_when_done(pid: int) -> None:
    """Wait for a trainer we launched in a thread of its own: a run that stops while this TUI follows
    another would otherwise stay our zombie child until the TUI exits."""
    def wait() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # _pid_alive reaped it first
            pass

    threading.Thread(target=wait, name=f"reap-{pid}", daemon=True).start()


class Readout(Widget):
    """Text that changes every second but never its size: a repaint, without the whole-screen re-layout
    that Static.update costs (measured: most of the UI's CPU while following a fast run)."""

    DEFAULT_CSS = "Readout { height: 3; }"
    text: reactive[Text] = reactive(Text, layout=False)

    def render(self) -> Text:
        return self.text


@dataclass
class Watch:
    """A run the tab reads events of: the followed one, or one overlaid on the chart."""
    path: Path
    reader: EventReader
    history: RunHistory
    running: bool = False
    pid: int | None = None  # set when this TUI launched it: alive before the trainer takes its lock
    stopping: bool = False


class TrainTab(EngineTab):
    TITLE = "Train"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start"),
        Binding("ctrl+t", "stop", "Stop"),
        Binding("ctrl+r", "resume", "Resume"),
        Binding("ctrl+l", "toggle_log", "Log scale"),
        Binding("ctrl+o", "toggle_overlay", "Overlay run"),
        Binding("ctrl+y", "focus_runs", "Runs table"),
    ]
    can_focus = True

    def __init__(self) -> None:
        super().__init__()
        self.watches: dict[str, Watch] = {}
        self.attached: str = ""
        self.overlay: set[str] = set()
        self._preset = ""
        self.runs_listed = False  # set once checkpoints/ has been read (tests wait on it)
        self._runs: list[Any] = []
        self._errors_seen: set[str] = set()
        self._chart_dirty = self._status_dirty = False
        self._chart_drawn = 0.0
        self._sample_shown: str | None = None
        self._launched: dict[str, int] = {}

    # ----- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        saved = self.app.settings.table("train_form")  # type: ignore[attr-defined]
        self._preset = str(saved.get("preset", "tiny"))
        base = preset(self._preset) if self._preset in PRESETS else RunConfig()
        with Horizontal(id="train-body"):
            with Vertical(id="train-left"):
                with VerticalScroll(id="train-form"):
                    yield Static(id="train-data")
                    with Collapsible(title="Model", collapsed=False, id="sec-model"):
                        with Horizontal(classes="field"):
                            yield Label("preset", classes="field-label")
                            yield Select([(p, p) for p in PRESETS], value=self._preset, allow_blank=False,
                                         compact=True, id="preset")
                        for f in MODEL_FIELDS:
                            yield from self._field_row(f, saved.get(f.key, getattr(base.model, f.key)))
                    with Collapsible(title="Training", collapsed=False, id="sec-train"):
                        for f in TRAIN_FIELDS:
                            yield from self._field_row(f, saved.get(f.key, getattr(base.train, f.key)))
                    with Horizontal(classes="field", id="run-name-row"):
                        yield Label("run name", classes="field-label")
                        yield Input(placeholder="automatic", compact=True, id="run-name")
                yield Static(id="form-error", classes="field-error")
                with Horizontal(id="train-buttons"):
                    yield Button("Start", id="start", variant="success", compact=True)
                    yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
                    yield Button("Resume", id="resume", compact=True, disabled=True)
            with Vertical(id="train-monitor"):
                yield Readout(id="run-status")
                yield ProgressBar(id="run-progress", show_eta=False)
                yield LossChart(id="loss-chart")
                yield Readout(id="run-sample")
                yield RunsTable(id="runs-table")

    def _field_row(self, f: FormField, value: Any) -> ComposeResult:
        with Horizontal(classes="field"):
            yield Label(f.label, classes="field-label")
            if f.choices:
                yield Select([(c, c) for c in f.choices], value=value if value in f.choices else f.choices[0],
                             allow_blank=False, compact=True, id=f.id)
            else:
                yield Input(str(value), compact=True, id=f.id)
        yield Static(id=f"{f.id}-error", classes="field-error")

    def on_mount(self) -> None:
        self.watch(self.app, "corpus", self._show_data_choice)
        self.watch(self.app, "tokenizer_path", self._show_data_choice)
        self.query_one("#run-progress", ProgressBar).display = False
        self.query_one("#run-status", Readout).text = Text("No run followed: fill the form and press Start (ctrl+s).")
        self.validate_form()
        self.set_interval(REDRAW_S, self.redraw)
        self._follow_loop()

    def on_show(self) -> None:  # what changed while the tab was hidden is drawn now, not at the next tick
        self.redraw()

    def _show_data_choice(self, _value: Any = None) -> None:
        app: Any = self.app
        tok = Path(app.tokenizer_path).name if app.tokenizer_path else "char (trained with the run)"
        self.query_one("#train-data", Static).update(Text(f"corpus: {app.corpus}\ntokenizer: {tok}"))

    # ----- the form ---------------------------------------------------------------------------------
    def _raw(self, f: FormField) -> str:
        w = self.query_one(f"#{f.id}")
        return str(w.value) if isinstance(w, Select) else w.value  # type: ignore[attr-defined]

    def form_config(self) -> tuple[RunConfig | None, dict[str, str]]:
        """The RunConfig the form describes, or None and {field id or "form": message}."""
        values: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
        errors: dict[str, str] = {}
        for f in FIELDS:
            try:
                values[f.table][f.key] = f.parse(self._raw(f))
            except ValueError as e:
                errors[f.id] = f"{f.label} {e}"
        if errors:
            return None, errors
        # The form has no min_lr: the cosine schedule ends at a tenth of the peak, as the presets do.
        values["train"]["min_lr"] = values["train"]["lr"] / 10
        app: Any = self.app
        values["data"] = {"corpus": app.corpus, "tokenizer": app.tokenizer_path, "val_ratio": app.val_ratio}
        try:
            cfg = apply_overrides(RunConfig(), values)
            validate(cfg)
        except ConfigError as e:
            f = field_for_error(str(e))
            return None, {f.id if f else "form": str(e)}
        return cfg, {}

    def validate_form(self) -> RunConfig | None:
        cfg, errors = self.form_config()
        for f in FIELDS:
            self._show_error(f"#{f.id}-error", errors.get(f.id, ""))
        self._show_error("#form-error", errors.get("form", ""))
        self.query_one("#start", Button).disabled = cfg is None
        return cfg

    def _show_error(self, selector: str, message: str) -> None:
        w = self.query_one(selector, Static)
        w.update(Text(message))
        w.display = bool(message)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("f-"):
            self.validate_form()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset" and event.value != self._preset and event.value in PRESETS:
            self._apply_preset(str(event.value))
        elif event.select.id and event.select.id.startswith("f-"):
            self.validate_form()

    def _apply_preset(self, name: str) -> None:
        self._preset = name
        cfg = preset(name)
        for f in FIELDS:
            value = getattr(getattr(cfg, f.table), f.key)
            w = self.query_one(f"#{f.id}")
            if isinstance(w, Select):
                w.value = value
            else:
                w.value = str(value)  # type: ignore[attr-defined]
        self.validate_form()

    def _save_form(self) -> None:
        values = {f.key: self._raw(f) for f in FIELDS}
        self.app.settings.update("train_form", preset=self._preset, **values)  # type: ignore[attr-defined]

    # ----- actions ----------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"start": self.action_start, "stop": self.action_stop, "resume": self.action_resume}
        if event.button.id in actions:
            actions[event.button.id]()

    def action_start(self) -> None:
        cfg = self.validate_form()
        if cfg is None:
            self.notify("Fix the fields marked in the form before starting.", severity="warning")
            return
        self._save_form()
        name = self.query_one("#run-name", Input).value.strip() or None
        self.query_one("#run-status", Readout).text = Text("Creating the run…")
        self.run_engine(self._create_and_launch, cfg, name, name="start")

    def _create_and_launch(self, cfg: RunConfig, name: str | None) -> None:
        from engine.runs import create_run, launch  # no torch: the trainer imports it in its own process

        run_dir = create_run(cfg, name=name)
        pid = launch(run_dir)
        self.app.call_from_thread(self.attach, Path(run_dir), pid)

    def action_stop(self) -> None:
        w = self.watches.get(self.attached)
        if w is None or not (w.running or w.pid):
            self.notify("No live run to stop.", severity="warning")
            return
        w.stopping = True
        self.run_engine(self._stop, [w.path], name="stop")
        self.redraw(force=True)

    def _stop(self, paths: list[Path]) -> None:
        from engine.runs import stop_run

        for p in paths:
            stop_run(p)

    def action_resume(self) -> None:
        path = self.attached or self.query_one(RunsTable).run_key()
        if not path:
            self.notify("Select a run in the table first (Enter follows it).", severity="warning")
            return
        w = self.watches.get(path)
        if w is not None and (w.running or (w.pid and _pid_alive(w.pid))):
            self.notify(f"Run {Path(path).name} is already running.", severity="warning", markup=False)
            return
        self.run_engine(self._resume, Path(path), name="resume")

    def _resume(self, run_dir: Path) -> None:
        from engine.runs import launch

        pid = launch(run_dir, resume=True)
        self.app.call_from_thread(self.attach, run_dir, pid)

    def action_focus_runs(self) -> None:
        self.query_one(RunsTable).focus()

    def action_toggle_log(self) -> None:
        chart = self.query_one(LossChart)
        chart.log_scale = not chart.log_scale

    def action_toggle_overlay(self) -> None:
        path = self.query_one(RunsTable).run_key()
        if path is None or path == self.attached:
            return
        if path in self.overlay:
            self.overlay.discard(path)
            self.watches.pop(path, None)
        else:
            self.overlay.add(path)
            self.watches[path] = Watch(Path(path), EventReader(Path(path)), RunHistory(Path(path).name))
        self._show_runs()
        self.redraw(force=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if isinstance(event.data_table, RunsTable) and event.row_key.value:
            self.attach(Path(event.row_key.value))

    # ----- following runs ---------------------------------------------------------------------------
    def attach(self, run_dir: Path, pid: int | None = None) -> None:
        """Follow run_dir: its whole history first (the reader starts at offset 0), then live."""
        key = str(run_dir)
        old = self.watches.get(key)
        if old is not None and pid is None and key == self.attached:
            return
        if self.attached and self.attached != key and self.attached not in self.overlay:
            self.watches.pop(self.attached, None)
        self.overlay.discard(key)
        self.attached = key
        # A resumed run appends to the same events file: keep the history, only note the new process.
        w = old or Watch(run_dir, EventReader(run_dir), RunHistory(run_dir.name))
        w.pid, w.stopping = pid, False
        if pid is not None:
            w.history.ended = ""
            self._launched[key] = pid  # still asked about at quit after the user follows another run
            _reap_when_done(pid)
        self.watches[key] = w
        self.post_message(RunAttached(key))
        self._show_runs()
        self.redraw(force=True)

    def live_runs(self) -> list[Path]:
        """Runs this TUI follows or launched that are still training (asked about when quitting)."""
        from engine.runs import is_running

        live = {w.path for w in self.watches.values() if w.running or (w.pid and _pid_alive(w.pid))}
        live |= {Path(p) for p, pid in self._launched.items() if is_running(Path(p)) or _pid_alive(pid)}
        return sorted(live)

    def stop_runs(self, paths: list[Path]) -> None:
        try:
            self._stop(paths)
        except SmallGPTError as e:
            self.app.report_error(e)  # type: ignore[attr-defined]

    @staticmethod
    def _poll(w: Watch) -> tuple[list[dict[str, Any]], bool]:
        from engine.runs import is_running

        return w.reader.poll(), is_running(w.path)

    @work(group="follow", exclusive=True, exit_on_error=False)
    async def _follow_loop(self) -> None:
        from engine.runs import list_runs

        tick, refresh_runs = 0, True
        while True:
            try:
                if refresh_runs or tick % RUNS_EVERY == 0:
                    self._runs = await asyncio.to_thread(list_runs)
                    self._show_runs()
                    self.runs_listed = True
                    if not self.attached:  # a run started before this TUI (or from the CLI): follow it
                        self._reattach()
                refresh_runs = state_changed = False
                for w in list(self.watches.values()):
                    events, running = await asyncio.to_thread(self._poll, w)
                    w.history.feed(events)
                    live = w.running or w.pid  # a failure while followed, not one read from the history
                    if live and any(e.get("event") == "error" for e in events):
                        self.notify(f"Run {w.history.name} failed: {w.history.error}", severity="error",
                                    timeout=30, markup=False)
                    changed = running != w.running
                    if w.pid and not running and not _pid_alive(w.pid):
                        w.pid = None  # the process is gone (it has said why in its events, if it could)
                        changed = True
                    if changed:
                        w.running, w.stopping = running, w.stopping and running
                        w.history.dirty = refresh_runs = state_changed = True
                if state_changed:  # Stop/Resume and the state follow at once, not at the next redraw tick
                    self.redraw()
            except SmallGPTError as e:  # e.g. a damaged run directory: say so once, keep following
                if str(e) not in self._errors_seen:
                    self._errors_seen.add(str(e))
                    self.app.report_error(e)  # type: ignore[attr-defined]
            tick += 1
            await asyncio.sleep(POLL_S)

    def _reattach(self) -> None:
        live = [r for r in self._runs if r.status == "running"]
        if live:
            newest = max(live, key=lambda r: r.started or 0)
            self.attach(Path(newest.path))
            names = ", ".join(r.name for r in live)
            self.notify(f"Re-attached to live run {newest.name}" + (f" (live: {names})" if len(live) > 1 else ""),
                        markup=False)

    def _show_runs(self) -> None:
        self.query_one(RunsTable).update_runs(self._runs, self.overlay, self.attached)

    # ----- drawing ----------------------------------------------------------------------------------
    def redraw(self, force: bool = False) -> None:
        """Draw from the buffers: the status at REDRAW_S, the chart (the costly part: a plotext canvas
        turned into styled text) at most every CHART_S; nothing while the tab is hidden (it catches up
        when shown, as the dirty flags stay set)."""
        if any(w.history.dirty for w in self.watches.values()):
            self._chart_dirty = self._status_dirty = True
            for x in self.watches.values():
                x.history.dirty = False
        if not (force or self.region):  # a hidden tab has no region
            return
        now = time.monotonic()
        if self._chart_dirty and (force or now - self._chart_drawn >= CHART_S):
            self._chart_dirty, self._chart_drawn = False, now
            self.query_one(LossChart).series = self._series()
        if self._status_dirty or force:
            self._status_dirty = False
            self._show_status(self.watches.get(self.attached))

    def _series(self) -> list[Series]:
        series: list[Series] = []
        w = self.watches.get(self.attached)
        if w is not None:
            h = w.history
            series += [Series(f"{h.name} train", h.train_steps, h.train_loss),
                       Series(f"{h.name} val", h.val_steps, h.val_loss)]
        for key in sorted(self.overlay):
            o = self.watches.get(key)
            if o is not None:
                h = o.history
                series.append(Series(f"{h.name} val", h.val_steps, h.val_loss) if h.val_steps
                              else Series(f"{h.name} train", h.train_steps, h.train_loss))
        return series

    def _state(self, w: Watch) -> str:
        if w.running:
            return "stopping" if w.stopping else "running"
        if w.pid:
            return "starting"
        h = w.history
        return {"": "not running", "max_steps": "finished"}.get(h.ended, h.ended)

    def _show_status(self, w: Watch | None) -> None:
        status = self.query_one("#run-status", Readout)
        bar = self.query_one("#run-progress", ProgressBar)
        sample = self.query_one("#run-sample", Readout)
        live = w is not None and (w.running or bool(w.pid))
        self.query_one("#stop", Button).disabled = not live
        self.query_one("#resume", Button).disabled = w is None or live
        if w is None:
            bar.display = False
            return
        h = w.history
        state = self._state(w)
        last_loss = f"{h.train_loss[-1]:.4f}" if h.train_loss else "-"
        last_val = f"{h.val_loss[-1]:.4f}" if h.val_loss else "-"
        lr = f"{h.lr:.2e}" if h.lr is not None else "-"
        tps = f"{human_count(int(h.tokens_per_s))} tok/s" if h.tokens_per_s else "- tok/s"
        # Three lines, most important first on each, cut rather than wrapped: the readout has a fixed height.
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{h.name}", style="bold")
        text.append(f"  {state}\n", style="bold green" if state == "running" else "yellow")
        text.append(f"step {h.step}/{h.max_steps or '?'}  ETA {format_duration(h.eta_seconds())}  {tps}\n")
        if h.error:  # also shown in full as a notification
            text.append(h.error, style="bold red")
        else:
            text.append(f"loss {last_loss}  val {last_val}  lr {lr}  params {human_count(h.params)}")
        status.text = text
        bar.display = True
        bar.update(total=max(h.max_steps, 1), progress=h.step)
        if h.sample != self._sample_shown:  # samples come once per eval
            self._sample_shown = h.sample
            sample.text = Text(h.sample.strip()[-400:], overflow="ellipsis")
            sample.display = bool(h.sample)
