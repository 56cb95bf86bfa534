"""TrainForm: the Train tab's form, one field per knob that engine.config gives a form label.

Validated as the user types (an inline message under the field a ConfigError names, Start disabled
until the form is valid); a preset fills the fields; what was last started is remembered in the settings.
The run's data (corpus, tokenizer, split) comes from the app's shared state, chosen in the Data and
Tokenizer tabs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Collapsible, Input, Label, Select, Static

from engine.config import (DEFAULT_PRESET, PRESETS, Knob, ModelConfig, RunConfig, TrainConfig, apply_overrides, knobs,
                           preset, validate)
from engine.errors import ConfigError

SECTIONS = [("Model", "sec-model", ModelConfig), ("Training", "sec-train", TrainConfig)]
FIELDS: list[Knob] = [k for _, _, cls in SECTIONS for k in knobs(cls) if k.label]


def field_id(k: Knob) -> str:
    return f"f-{k.table}-{k.name}"


def field_for_error(message: str) -> Knob | None:
    """The form field a ConfigError sentence names first ("model.n_head must ...", "n_embd (..) must ...")."""
    best: tuple[int, Knob] | None = None
    for k in FIELDS:
        m = re.search(rf"(?<![\w.])({k.table}\.)?{k.name}\b", message)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), k)
    return best[1] if best else None


class TrainForm(Vertical):
    _init_options: list[tuple[str, str]] | None = None  # the init-from choices last shown
    def compose(self) -> ComposeResult:
        saved = self.app.settings.table("train_form")  # type: ignore[attr-defined]
        self._preset = str(saved.get("preset", DEFAULT_PRESET))
        base = preset(self._preset) if self._preset in PRESETS else RunConfig()
        with VerticalScroll(id="train-form"):
            yield Static(id="train-data")
            with Horizontal(classes="field", id="init-from-row"):
                yield Label("init from", classes="field-label")
                yield Select([], prompt="random weights", compact=True, id="init-from")
            for title, section_id, cls in SECTIONS:
                with Collapsible(title=title, collapsed=False, id=section_id):
                    if cls is ModelConfig:
                        with Horizontal(classes="field"):
                            yield Label("preset", classes="field-label")
                            yield Select([(p, p) for p in PRESETS], value=self._preset, allow_blank=False,
                                         compact=True, id="preset")
                    for k in knobs(cls):
                        if k.label:
                            yield from self._field_row(k, saved.get(k.name, getattr(getattr(base, k.table), k.name)))
            with Horizontal(classes="field", id="run-name-row"):
                yield Label("run name", classes="field-label")
                yield Input(placeholder="automatic", compact=True, id="run-name")
        yield Static(id="form-error", classes="field-error")
        with Horizontal(id="train-buttons"):
            yield Button("Start", id="start", variant="success", compact=True)
            yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
            yield Button("Resume", id="resume", compact=True, disabled=True)

    @staticmethod
    def _field_row(k: Knob, value: Any) -> ComposeResult:
        with Horizontal(classes="field"):
            yield Label(k.label, classes="field-label")
            if k.choices:
                yield Select([(c, c) for c in k.choices], value=value if value in k.choices else k.choices[0],
                             allow_blank=False, compact=True, id=field_id(k))
            else:
                yield Input(str(value), compact=True, id=field_id(k))
        yield Static(id=f"{field_id(k)}-error", classes="field-error")

    def on_mount(self) -> None:
        self.watch(self.app, "corpus", self._show_data_choice)
        self.watch(self.app, "tokenizer_path", self._show_data_choice)
        self.validate()

    def _show_data_choice(self, _value: Any = None) -> None:
        app: Any = self.app
        tok = Path(app.tokenizer_path).name if app.tokenizer_path else "char (trained with the run)"
        if self.init_from:
            tok = f"shape, tokenizer and weights of {Path(self.init_from).name}"
        self.query_one("#train-data", Static).update(Text(f"corpus: {app.corpus}\ntokenizer: {tok}"))

    @property
    def run_name(self) -> str | None:
        return self.query_one("#run-name", Input).value.strip() or None

    @property
    def init_from(self) -> str:
        """The run whose weights a new run starts from ("" for random weights)."""
        value = self.query_one("#init-from", Select).value
        return "" if value is Select.NULL else str(value)

    def set_init_sources(self, runs: list[Any]) -> None:
        """The runs (engine.runs.RunInfo) a new run can start from: those with a checkpoint, imported ones
        included. The choice stays while its run is listed."""
        select = self.query_one("#init-from", Select)
        options = [(f"{r.name} · {r.status}", str(r.path)) for r in runs if r.status != "new"]
        if options == self._init_options:
            return
        self._init_options = options
        current = select.value
        with select.prevent(Select.Changed):
            select.set_options(options)
            if current is not Select.NULL and any(path == current for _, path in options):
                select.value = current

    def _raw(self, k: Knob) -> str:
        w = self.query_one(f"#{field_id(k)}")
        return str(w.value) if isinstance(w, Select) else w.value  # type: ignore[attr-defined]

    def config(self) -> tuple[RunConfig | None, dict[str, str]]:
        """The RunConfig the form describes, or None and {field id or "form": message}."""
        values: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
        errors: dict[str, str] = {}
        for k in FIELDS:
            try:
                values[k.table][k.name] = k.parse(self._raw(k))
            except ValueError as e:
                errors[field_id(k)] = f"{k.label} {e}"
        if errors:
            return None, errors
        # The form has no min_lr: the cosine schedule ends at a tenth of the peak, as the presets do.
        values["train"]["min_lr"] = values["train"]["lr"] / 10
        app: Any = self.app
        values["data"] = {"corpus": app.corpus, "tokenizer": app.tokenizer_path, "val_ratio": app.val_ratio}
        # The source's shape and tokenizer replace the form's when the run is created (in the start worker:
        # engine.interop loads torch), so the form only records the choice.
        values["train"]["init_from"] = f"{self.init_from}:best" if self.init_from else ""
        try:
            cfg = apply_overrides(RunConfig(), values)
            validate(cfg)
        except ConfigError as e:
            k = field_for_error(str(e))
            return None, {field_id(k) if k else "form": str(e)}
        return cfg, {}

    def validate(self) -> RunConfig | None:
        """Show each field's message (or none) and enable Start when the form is valid."""
        cfg, errors = self.config()
        for k in FIELDS:
            self._show_error(f"#{field_id(k)}-error", errors.get(field_id(k), ""))
        self._show_error("#form-error", errors.get("form", ""))
        self.query_one("#start", Button).disabled = cfg is None
        return cfg

    def _show_error(self, selector: str, message: str) -> None:
        w = self.query_one(selector, Static)
        w.update(Text(message))
        w.display = bool(message)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("f-"):
            self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "init-from":
            self._show_data_choice()
            self.validate()
        elif event.select.id == "preset" and event.value != self._preset and event.value in PRESETS:
            self._apply_preset(str(event.value))
        elif event.select.id and event.select.id.startswith("f-"):
            self.validate()

    def _apply_preset(self, name: str) -> None:
        self._preset = name
        cfg = preset(name)
        for k in FIELDS:
            value = getattr(getattr(cfg, k.table), k.name)
            w = self.query_one(f"#{field_id(k)}")
            w.value = value if isinstance(w, Select) else str(value)  # type: ignore[attr-defined]
        self.validate()

    def remember(self) -> None:
        """Save the fields as typed, so the next session starts from them."""
        values = {k.name: self._raw(k) for k in FIELDS}
        self.app.settings.update("train_form", preset=self._preset, **values)  # type: ignore[attr-defined]
