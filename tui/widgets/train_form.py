"""TrainForm: the Train tab's form, one field per knob that engine.config gives a form label.

Validated as the user types (an inline message under the field a ConfigError names, Start disabled
until the form is valid); a preset fills the fields; what was last started is remembered in the settings.

The Task section chooses what the run trains for: a language model (its data, corpus and tokenizer,
from the app's shared state, chosen in the Data and Tokenizer tabs), or a fine-tune (classify, instruct;
also lm from a run) of a base run ("from"), on task data with a preview (first records and label counts,
or the rendered template), training all weights, the last N blocks, the head only, or LoRA adapters.
Only the fields of the chosen task show (Knob.tasks); a fine-tune starts from engine.finetune's recipe.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.text import Text
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Collapsible, Input, Label, Select, Static

from engine.config import (DEFAULT_PRESET, PRESETS, DataConfig, Knob, LoraConfig, ModelConfig, RunConfig, TaskConfig,
                           TrainConfig, apply_overrides, knobs, preset, validate)
from engine.errors import ConfigError, SmallGPTError
from tui.workers import ReportsWorkerErrors, engine_work

SECTIONS = [("Task", "sec-task", (TaskConfig, DataConfig, LoraConfig)), ("Model", "sec-model", (ModelConfig,)),
            ("Training", "sec-train", (TrainConfig,))]
FIELDS: list[Knob] = [k for _, _, classes in SECTIONS for cls in classes for k in knobs(cls) if k.label]
KNOB = {k.path: k for k in FIELDS}
# The training choice (task.train and lora.rank in one Select); "last" takes its N from the blocks field.
SCOPES = [("task default", ""), ("all weights", "all"), ("last N blocks", "last"), ("head only", "head"),
          ("LoRA adapters", "lora")]
DEFAULT_DATA = {"classify": "python-kinds", "instruct": "python-instruct"}  # engine.tasks.builtin
PREVIEW_DEBOUNCE = 0.4


@dataclass
class BaseRuns(Message):
    options: list[tuple[str, str]]  # (label, "RUN:checkpoint") of the runs a fine-tune can start from


@dataclass
class DataPreview(Message):
    key: tuple[str, str, str, str]  # (kind, data, text col, label col) previewed
    text: Text


def field_id(k: Knob) -> str:
    return f"f-{k.table}-{k.name}"


def _form_order(k: Knob) -> int:
    """The Task section reads: task, from, data; how the data is read and split; then how it trains (a
    stable sort: declaration order within each group)."""
    if k.path == "task.train" or k.table == "lora":
        return 2
    return 1 if k.table == "task" and k.name not in ("kind", "init_from") else 0


def saved_key(k: Knob) -> str:
    """The field's key in the settings' [train_form] table (model and train knobs by their bare names)."""
    return k.name if k.table in ("model", "train") else f"{k.table}_{k.name}"


def field_for_error(message: str) -> Knob | None:
    """The form field a ConfigError sentence names first ("model.n_head must ...", "n_embd (..) must ...")."""
    best: tuple[int, Knob] | None = None
    for k in FIELDS:
        m = re.search(rf"(?<![\w.])({k.table}\.)?{k.name}(?![\w.])", message)  # not "train" in "train.lr"
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), k)
    return best[1] if best else None


class TrainForm(ReportsWorkerErrors, Vertical):
    def compose(self) -> ComposeResult:
        saved = self.app.settings.table("train_form")  # type: ignore[attr-defined]
        self._preset = str(saved.get("preset", DEFAULT_PRESET))
        self._preview_key: tuple[str, str, str, str] | None = None
        self._preview_timer: Any = None
        base = self._base()
        with VerticalScroll(id="train-form"):
            yield Static(id="train-data")
            for title, section_id, classes in SECTIONS:
                with Collapsible(title=title, collapsed=False, id=section_id):
                    if ModelConfig in classes:
                        with Horizontal(classes="field"):
                            yield Label("preset", classes="field-label")
                            yield Select([(p, p) for p in PRESETS], value=self._preset, allow_blank=False,
                                         compact=True, id="preset")
                        yield Static(id="preset-recipe", classes="field-hint")
                    for k in sorted((k for cls in classes for k in knobs(cls) if k.label), key=_form_order):
                        value = getattr(getattr(base, k.table), k.name)
                        yield from self._field_row(k, saved.get(saved_key(k), value))
                    if TaskConfig in classes:
                        yield Static(id="data-preview")
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
        with Horizontal(classes="field", id=f"{field_id(k)}-row"):
            yield Label(k.label, classes="field-label")
            if k.path == "task.init_from":  # the runs are listed in a worker (BaseRuns)
                yield Select([("scratch", "")], value="", allow_blank=False, compact=True, id=field_id(k))
            elif k.path == "task.train":
                scope = value if value in dict(SCOPES).values() else "last" if str(value).startswith("last-") else ""
                yield Select(SCOPES, value=scope, allow_blank=False, compact=True, id=field_id(k))
            elif k.type is bool:
                # str(bool) values: a Select's blank value is False
                yield Select([("off", "False"), ("on", "True")], value=str(str(value).lower() == "true"),
                             allow_blank=False, compact=True, id=field_id(k))
            elif k.choices:
                yield Select([(c, c) for c in k.choices], value=value if value in k.choices else k.choices[0],
                             allow_blank=False, compact=True, id=field_id(k))
            else:
                yield Input(str(value), compact=True, id=field_id(k))
        if k.path == "task.train":
            with Horizontal(classes="field", id="blocks-row"):
                yield Label("blocks (N)", classes="field-label")
                yield Input(str(value)[5:] if str(value).startswith("last-") else "1", compact=True, id="f-blocks")
        yield Static(id=f"{field_id(k)}-error", classes="field-error")

    def on_mount(self) -> None:
        for title in self.query("CollapsibleTitle"):
            title.can_focus = False  # Tab goes from field to field; a click on a section's title still folds it
        self.watch(self.app, "corpus", self._show_data_choice)
        self.watch(self.app, "tokenizer_path", self._show_data_choice)
        self._list_bases()
        self._show_task_fields()
        self._show_recipe()
        self.validate()

    def on_show(self) -> None:
        self._list_bases()  # a run may have finished (or been imported) meanwhile

    # ----- the task --------------------------------------------------------------------------------
    @property
    def task_kind(self) -> str:
        return self._raw(KNOB["task.kind"])

    @property
    def fine_tune(self) -> bool:
        """A run made from a base run (engine.finetune), not a language model trained from scratch."""
        return self.task_kind != "lm" or bool(self._raw(KNOB["task.init_from"]))

    @engine_work("list-bases")
    def _list_bases(self) -> None:
        from engine.runs import base_checkpoints

        self.post_message(BaseRuns(base_checkpoints()))

    def on_base_runs(self, message: BaseRuns) -> None:
        select = self.query_one(f"#{field_id(KNOB['task.init_from'])}", Select)
        current = select.value
        options = [("scratch", ""), *message.options]
        with select.prevent(Select.Changed):
            select.set_options(options)
            select.value = current if current in dict(options).values() else ""
        self.validate()

    def _show_task_fields(self) -> None:
        kind, scope = self.task_kind, self._raw(KNOB["task.train"])
        for k in FIELDS:
            shown = not k.tasks or kind in k.tasks
            if k.table == "lora":
                shown = self.fine_tune and scope == "lora"
            elif k.path == "task.train":
                shown = self.fine_tune
            self.query_one(f"#{field_id(k)}-row").display = shown
        self.query_one("#blocks-row").display = self.fine_tune and scope == "last"
        self.query_one("#sec-model").display = not self.fine_tune
        self.query_one("#train-data").display = kind == "lm"
        self._request_preview()

    def _request_preview(self) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(PREVIEW_DEBOUNCE, self._preview)

    def _preview(self) -> None:
        preview = self.query_one("#data-preview", Static)
        kind = self.task_kind
        key = (kind, self._raw(KNOB["data.corpus"]).strip(), self._raw(KNOB["task.text_col"]).strip(),
               self._raw(KNOB["task.label_col"]).strip())
        preview.display = kind != "lm"
        if kind == "lm" or key == self._preview_key:
            return
        self._preview_key = key
        preview.update(Text("reading the task data…", style="dim"))
        self._read_preview(key)

    @engine_work("preview")
    def _read_preview(self, key: tuple[str, str, str, str]) -> None:
        kind, data, text_col, label_col = key
        try:
            text = preview_text(kind, data, text_col, label_col)
        except SmallGPTError as e:
            text = Text(str(e), style="red")
        self.post_message(DataPreview(key, text))

    def on_data_preview(self, message: DataPreview) -> None:
        if message.key == self._preview_key:
            self.query_one("#data-preview", Static).update(message.text)

    def _apply_recipe(self) -> None:
        """A fine-tune's training fields start from engine.finetune's recipe (the LoRA learning rate for LoRA)."""
        from engine.config import LORA_LR, RECIPE

        values = dict(RECIPE["train"])
        if self._raw(KNOB["task.train"]) == "lora":
            values["lr"] = LORA_LR
        for k in FIELDS:
            if k.table == "train" and k.name in values:
                self.query_one(f"#{field_id(k)}", Input).value = str(values[k.name])

    def _show_data_choice(self, _value: Any = None) -> None:
        app: Any = self.app
        data = self._base().data
        tok = (Path(app.tokenizer_path).name if app.tokenizer_path else
               f"{data.tokenizer_kind}{f' {data.vocab_size}' if data.vocab_size else ''} (trained with the run)")
        if base := self._raw(KNOB["task.init_from"]):  # engine.finetune takes the base's shape and tokenizer
            tok = f"shape, tokenizer and weights of {Path(base).name}"
        self.query_one("#train-data", Static).update(Text(f"corpus: {app.corpus}\ntokenizer: {tok}"))

    @property
    def run_name(self) -> str | None:
        return self.query_one("#run-name", Input).value.strip() or None

    def _raw(self, k: Knob) -> str:
        w = self.query_one(f"#{field_id(k)}")
        return str(w.value) if isinstance(w, Select) else w.value  # type: ignore[attr-defined]

    def config(self) -> tuple[RunConfig | None, dict[str, str]]:
        """The RunConfig the form describes, or None and {field id or "form": message}."""
        values: dict[str, dict[str, Any]] = {"model": {}, "train": {}, "task": {}, "lora": {}, "data": {}}
        errors: dict[str, str] = {}
        for k in FIELDS:
            if not self.query_one(f"#{field_id(k)}-row").display:
                continue  # another task's field, or a model field of a fine-tune (its base has the shape)
            try:
                values[k.table][k.name] = k.parse(self._raw(k))
            except ValueError as e:
                errors[field_id(k)] = f"{k.label} {e}"
        scope = values["task"].pop("train", "")
        if scope == "last":
            n = self.query_one("#f-blocks", Input).value.strip()
            if not (n.isdigit() and int(n) > 0):
                errors[field_id(KNOB["task.train"])] = f"blocks must be a positive whole number (got '{n}')"
            values["task"]["train"] = f"last-{n}"
        elif scope != "lora":
            values["task"]["train"] = scope
            values["lora"]["rank"] = 0
        elif "rank" in values["lora"] and not values["lora"]["rank"]:
            errors[field_id(KNOB["lora.rank"])] = "LoRA rank must be 1 or more (try 8)"
        if errors:
            return None, errors
        # The form has no min_lr: the cosine schedule ends at a tenth of the peak, as the presets do.
        values["train"]["min_lr"] = values["train"]["lr"] / 10
        app: Any = self.app
        kind, init_from = values["task"].pop("kind"), values["task"].pop("init_from")
        try:
            if not self.fine_tune:
                values["data"] = {"corpus": app.corpus, "tokenizer": app.tokenizer_path, "val_ratio": app.val_ratio}
                cfg = apply_overrides(self._base(), values)  # what the form does not show is the preset's
                validate(cfg)
                return cfg, {}
            from engine.config import finetune_config

            if not init_from:
                return None, {field_id(KNOB["task.init_from"]): "a fine-tune starts from a base run: pick one."}
            data = values["data"].pop("corpus", None) or app.corpus
            values.pop("model")
            return finetune_config(kind, init_from, data, values), {}
        except ConfigError as e:
            k = field_for_error(str(e))
            return None, {field_id(k) if k else "form": str(e)}

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
            if event.input.id in ("f-data-corpus", "f-task-text_col", "f-task-label_col"):
                self._request_preview()
            self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        select_id = event.select.id or ""
        if select_id == "preset" and event.value != self._preset and event.value in PRESETS:
            self._apply_preset(str(event.value))
        elif select_id.startswith("f-"):
            if select_id in ("f-task-kind", "f-task-init_from", "f-task-train"):
                was_fine_tune = self.query_one("#sec-model").display is False
                if select_id == "f-task-kind" and event.value in DEFAULT_DATA:
                    self.query_one("#f-data-corpus", Input).value = DEFAULT_DATA[str(event.value)]
                rank = self.query_one(f"#{field_id(KNOB['lora.rank'])}", Input)
                if event.value == "lora" and rank.value.strip() in ("", "0"):
                    rank.value = "8"  # engine.lora's usual rank: a LoRA choice works as it comes
                self._show_task_fields()
                self._show_data_choice()
                if self.fine_tune and (not was_fine_tune or select_id == "f-task-train"):
                    self._apply_recipe()
                elif not self.fine_tune and was_fine_tune:
                    self._apply_preset(self._preset)
            self.validate()

    def _base(self) -> RunConfig:
        """The chosen preset: the form's fields override it; the rest of its recipe (positions, QK-norm,
        optimizer, schedule, the tokenizer it trains) comes as it is."""
        return preset(self._preset) if self._preset in PRESETS else RunConfig()

    def _apply_preset(self, name: str) -> None:
        self._preset = name
        cfg = self._base()
        for k in FIELDS:
            value = getattr(getattr(cfg, k.table), k.name)
            self.query_one(f"#{field_id(k)}").value = str(value)  # type: ignore[attr-defined]
        self._show_data_choice()
        self._show_recipe()
        self.validate()

    def _show_recipe(self) -> None:
        text = recipe_text(self._base())
        hint = self.query_one("#preset-recipe", Static)
        hint.update(Text(text))
        hint.display = bool(text)

    def remember(self) -> None:
        """Save the fields as typed, so the next session starts from them."""
        values = {saved_key(k): self._raw(k) for k in FIELDS if k.path != "task.init_from"}
        self.app.settings.update("train_form", preset=self._preset, **values)  # type: ignore[attr-defined]


def recipe_text(cfg: RunConfig) -> str:
    """What a preset sets for the model and training that the form has no field for, as config.toml keys:
    "also: positions=rotary qk_norm=true optimizer=muon ..."; "" when nothing (min_lr is the form's own: a
    tenth of the lr; the tokenizer is on the form's first lines)."""
    default = RunConfig()
    shown = []
    for table in ("model", "train"):
        for k in knobs(type(getattr(cfg, table))):
            value = getattr(getattr(cfg, table), k.name)
            if not k.label and k.path != "train.min_lr" and value != getattr(getattr(default, table), k.name):
                shown.append(f"{k.name}={str(value).lower() if isinstance(value, bool) else value}")
    return "also: " + " ".join(shown) if shown else ""


def preview_text(kind: str, data: str, text_col: str, label_col: str, n: int = 3) -> Text:
    """The first records of task data and its label counts (classify), or the first record rendered with
    the template a run would train on (instruct). Reads the data: call it in a worker."""
    from collections import Counter

    from engine.tasks.records import load_task_data

    records = load_task_data(data, kind, text_col, label_col).records
    out = Text(no_wrap=True, overflow="ellipsis")
    if kind == "classify":
        counts = Counter(r["label"] for r in records)
        out.append(f"{len(records):,} records · " + ", ".join(f"{lab} {c:,}" for lab, c in counts.most_common()),
                   style="bold")
        for r in records[:n]:
            out.append(f"\n{r['label']}: ", style="cyan")
            out.append(" ".join(r["text"].split()))
        return out
    from engine.tasks.instruct import TEMPLATES, messages_of, render

    first = records[0]
    template = TEMPLATES["chat" if "messages" in first else "alpaca"]
    out.append(f"{len(records):,} records · {template['name']} template; the first as trained:", style="bold")
    for text, learned in render(template, messages_of(first)):
        for line in (text or "<|endoftext|>").splitlines() or [""]:
            out.append("\n" + line, style="green" if learned else "dim")
    return out
