"""Run configuration: dataclasses saved to and loaded from TOML, presets, and validation; sampling settings.

A run's config.toml has five tables, [model], [data], [train], [task] and [lora], one per dataclass below. Unknown keys
are refused (a typo must not be silently ignored); missing keys take their defaults.

Every setting is a knob, declared once as a field of these dataclasses with `knob(...)`: its type and
default, help, choices, bounds, the `smallgpt` commands that take it as a --flag and its label in the
TUI's form. The CLI flags, the flag -> TOML mapping, the Train and Generate tabs' fields and validate()
are generated from these declarations (knobs(), knobs_for()), so adding a knob is one field here.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError

MODEL_KINDS = ("gpt", "lstm")
# exact GELU; GPT-2's tanh approximation (imported GPT-2 weights need it); relu(x)^2 (the GPT-2 speedruns')
ACTIVATIONS = ("gelu", "gelu_tanh", "relu2")
POSITIONS = ("learned", "rotary")
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")
TOKENIZER_KINDS = ("char", "word", "bpe")
DTYPES = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
TASK_KINDS = ("lm", "classify", "instruct")
CHECKPOINTS = ("best", "latest", "int8")  # the checkpoints of a run a command or tab can load
DEFAULT_PRESET = "tiny"
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list[str]": list}


@dataclass(frozen=True)
class Knob:
    """One setting as declared by knob(): where it is read from and how it is checked."""

    table: str  # "model" | "data" | "train" (a run's config.toml) | "sample" (SamplingConfig)
    name: str  # the dataclass field and TOML key; the CLI flag is --name-with-dashes
    type: type  # int | float | str | bool | list (of str: a repeatable flag)
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    bounds: str = ""  # an interval such as "[1, inf)" or "(0, 0.5)", checked by validate()
    commands: tuple[str, ...] = ()  # the `smallgpt` commands that take it as a flag
    label: str = ""  # its label in a TUI form (Train tab: a run's knobs; Generate tab: sample); "" = none
    optional: bool = False  # None is allowed: "off" (an empty form field)
    prefix: str = ""  # the flag's prefix ("lora_": --lora-rank for [lora] rank)
    tasks: tuple[str, ...] = ()  # the Train form shows its field only for these task kinds; () = every task

    @property
    def dest(self) -> str:
        """The flag's argparse attribute."""
        return self.prefix + self.name

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def path(self) -> str:
        return f"{self.table}.{self.name}"

    def parse(self, raw: str) -> Any:
        """A form field's text as a value; ValueError("must be ... (got '...')") when it is not one."""
        raw = raw.strip()
        if self.optional and raw == "":
            return None
        if self.type is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError(f"must be true or false (got '{raw}')")
            return raw.lower() == "true"
        if self.type in (int, float):
            try:
                return self.type(raw)
            except ValueError:
                what = "a whole number" if self.type is int else "a number"
                raise ValueError(f"must be {what} (got '{raw}')") from None
        return raw

    def check(self, value: Any) -> None:
        """ConfigError (one sentence) when value is outside the knob's choices or bounds."""
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.path} must be one of {', '.join(self.choices)} (got '{value}').")
        if not self.bounds or (value is None and self.optional):
            return
        lo, hi = (float(x) for x in self.bounds[1:-1].split(","))
        above = value > lo or (self.bounds[0] == "[" and value == lo)
        below = value < hi or (self.bounds[-1] == "]" and value == hi)  # NaN fails both
        if not (above and below):
            raise ConfigError(f"{self.path} must be {self._rule(lo, hi)} (got {value}).")

    def _rule(self, lo: float, hi: float) -> str:
        if hi == math.inf and self.type is int:
            return "a positive whole number" if lo == 1 else "zero or more" if lo == 0 else f"at least {lo:g}"
        if hi == math.inf:
            return f"a finite number {'>=' if self.bounds[0] == '[' else '>'} {lo:g}"
        if self.bounds[0] + self.bounds[-1] == "()":
            return f"between {lo:g} and {hi:g}"
        return f"in {self.bounds}"


def knob(default: Any, help: str, *, choices: tuple[str, ...] = (), bounds: str = "",
         commands: tuple[str, ...] = (), label: str = "", tasks: tuple[str, ...] = ()) -> Any:
    """A dataclass field declaring a knob (see Knob); a list default is copied for each instance."""
    meta = {"knob": dict(help=help, choices=choices, bounds=bounds, commands=commands, label=label, tasks=tasks)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@cache
def knobs(cls: type) -> tuple[Knob, ...]:
    """The knobs a config dataclass declares, in declaration order."""
    out = []
    for f in fields(cls):
        if "knob" not in f.metadata:
            continue
        kind = str(f.type).replace(" | None", "")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append(Knob(cls.TABLE, f.name, _TYPES[kind], default, optional="None" in str(f.type),
                        prefix=getattr(cls, "FLAG_PREFIX", ""), **f.metadata["knob"]))
    return tuple(out)


def knobs_for(command: str) -> list[Knob]:
    """The knobs a `smallgpt` command takes as flags."""
    return [k for cls in (ModelConfig, DataConfig, TrainConfig, TaskConfig, LoraConfig, SamplingConfig)
            for k in knobs(cls) if command in k.commands]


TRAIN = ("train",)  # the knobs `smallgpt train` takes as flags
FINETUNE = ("finetune",)
TUNE = ("train", "finetune")  # training knobs both commands take
LM = ("lm",)  # form fields only a language model trained from scratch shows
CLASSIFY = ("classify",)
INSTRUCT = ("instruct",)
FINE_TUNES = ("classify", "instruct")
GENERATE = ("generate", "chat")  # the sampling knobs


@dataclass
class ModelConfig:
    TABLE: ClassVar[str] = "model"
    kind: str = knob("gpt", "architecture", choices=MODEL_KINDS, label="kind", tasks=LM)
    vocab_size: int = knob(0, "taken from the tokenizer when the run is created")
    n_layer: int = knob(4, "transformer blocks (LSTM: layers)", bounds="[1, inf)", commands=TRAIN,
                        label="layers", tasks=LM)
    n_head: int = knob(4, "attention heads per block", bounds="[1, inf)", commands=TRAIN, label="heads", tasks=LM)
    n_embd: int = knob(128, "embedding width", bounds="[1, inf)", commands=TRAIN, label="width", tasks=LM)
    block_size: int = knob(64, "context length in tokens", bounds="[1, inf)", commands=TRAIN,
                           label="block size", tasks=LM)
    dropout: float = knob(0.0, "dropout probability", bounds="[0, 1)", commands=TUNE, label="dropout", tasks=LM)
    mlp_ratio: int = knob(4, "MLP width as a multiple of n_embd", bounds="[1, inf)")
    bias: bool = knob(True, "biases in the linear layers and LayerNorms")
    n_classes: int = knob(0, "> 0: a classifier (its head on the last real token); set by smallgpt finetune",
                          bounds="[0, inf)")
    activation: str = knob("gelu", "the GPT's MLP activation (gelu_tanh: GPT-2's tanh approximation)",
                           choices=ACTIVATIONS)
    norm_eps: float = knob(1e-5, "the GPT's LayerNorm epsilon (a GPT-2 config.json carries its own)",
                           bounds="(0, 1)")
    # The GPT's architecture choices beyond GPT-2's; the defaults are GPT-2's (an imported GPT-2 keeps them).
    positions: str = knob("learned", "position encoding: learned embeddings (GPT-2) or rotary (RoPE) in attention",
                          choices=POSITIONS)
    qk_norm: bool = knob(False, "RMS-normalise each head's queries and keys before attention")
    tie_head: bool = knob(True, "the output head shares the token embedding's weights (GPT-2)")
    zero_init: bool = knob(False, "residual projections (and an untied head) start at zero")
    logit_softcap: float = knob(0.0, "squash logits smoothly into (-cap, cap) with tanh (0: off)", bounds="[0, inf)")


@dataclass
class DataConfig:
    TABLE: ClassVar[str] = "data"
    corpus: str = knob("python-docs", "built-in name, catalog name, file, folder, glob or http(s) URL (a task "
                       "run: its task data)", commands=TRAIN, label="data", tasks=FINE_TUNES)
    tokenizer: str = knob("", "path to a tokenizer.json; empty: train one of tokenizer_kind on the corpus",
                          commands=TRAIN)
    tokenizer_kind: str = knob("char", "the tokenizer the run trains when none is given", choices=TOKENIZER_KINDS,
                               commands=TRAIN)
    vocab_size: int = knob(0, "vocabulary of a word/bpe tokenizer the run trains; 0: the kind's default",
                           bounds="[0, inf)", commands=TRAIN)
    val_ratio: float = knob(0.1, "share held out for validation (a corpus: its end; task data: seeded records)",
                            bounds="(0, 0.5)", commands=FINETUNE)


@dataclass
class TrainConfig:
    TABLE: ClassVar[str] = "train"
    batch_size: int = knob(32, "sequences per step", bounds="[1, inf)", commands=TUNE, label="batch")
    grad_accum: int = knob(1, "micro-batches accumulated per step", bounds="[1, inf)", commands=TUNE,
                           label="grad accum")
    lr: float = knob(2e-3, "peak learning rate", bounds="(0, inf)", commands=TUNE, label="learning rate")
    min_lr: float = knob(2e-4, "learning rate at the end of the cosine schedule", bounds="[0, inf)")
    warmup_steps: int = knob(100, "steps of linear warmup", bounds="[0, inf)", commands=TUNE, label="warmup")
    max_steps: int = knob(2000, "optimizer steps to train", bounds="[1, inf)", commands=TUNE, label="steps")
    optimizer: str = knob("adamw", "adamw; muon: Muon on the blocks' matrices, AdamW on the rest", choices=OPTIMIZERS,
                          commands=TUNE)
    muon_lr: float = knob(0.02, "Muon's peak learning rate (the schedule scales it as it scales lr)",
                          bounds="(0, inf)", commands=TUNE)
    schedule: str = knob("cosine", "cosine decay after warmup; wsd: constant, then linear decay over the last "
                         "cooldown share of the steps", choices=SCHEDULES, commands=TUNE)
    cooldown: float = knob(0.2, "wsd: the share of max_steps that decays to min_lr", bounds="(0, 1]")
    weight_decay: float = knob(0.1, "AdamW weight decay", bounds="[0, inf)", commands=TUNE, label="weight decay")
    beta1: float = knob(0.9, "AdamW beta1", bounds="[0, 1)")
    beta2: float = knob(0.99, "AdamW beta2", bounds="[0, 1)")
    grad_clip: float = knob(1.0, "gradient norm clip (0: off)", bounds="[0, inf)", commands=TUNE,
                            label="grad clip")
    eval_interval: int = knob(250, "steps between evaluations", bounds="[1, inf)", commands=TUNE,
                              label="eval every")
    eval_batches: int = knob(20, "batches per evaluation", bounds="[1, inf)", commands=TUNE)
    sample_tokens: int = knob(200, "tokens sampled at each evaluation", bounds="[0, inf)", commands=FINETUNE)
    log_interval: int = knob(10, "steps between step events", bounds="[1, inf)")
    dtype: str = knob("auto", "compute dtype (auto: bf16 where fast)", choices=DTYPES, commands=TUNE, label="dtype")
    device: str = knob("auto", "where to train", choices=DEVICES, commands=TUNE, label="device")
    compile: bool = knob(False, "torch.compile the model", commands=TRAIN)
    seed: int = knob(1337, "random seed", commands=TUNE, label="seed")


@dataclass
class TaskConfig:
    """What the run trains for (engine.tasks) and where its weights started."""

    TABLE: ClassVar[str] = "task"
    kind: str = knob("lm", "lm | classify | instruct; data.corpus names the task's data", choices=TASK_KINDS,
                     label="task")
    init_from: str = knob("", "RUN[:latest|best] the weights start from (its shape and tokenizer, a fresh optimizer; "
                              "with task lm: continued pretraining); empty: random init", commands=TRAIN,
                          label="from")
    train: str = knob("", "base weights to train: all | head | last-N (classify default: last-1)",
                      commands=FINETUNE, label="train")
    text_col: str = knob("", "classification CSV/TSV text column (name or 0-based number)", commands=FINETUNE,
                         label="text col", tasks=CLASSIFY)
    label_col: str = knob("", "classification CSV/TSV label column (name or 0-based number)", commands=FINETUNE,
                          label="label col", tasks=CLASSIFY)
    balance: bool = knob(False, "classify: undersample every class to the rarest one's count", commands=FINETUNE,
                         label="balance", tasks=CLASSIFY)
    test_ratio: float = knob(0.1, "records held out for the final test report", bounds="[0, 0.5)",
                             commands=FINETUNE, label="test ratio", tasks=FINE_TUNES)
    eval_samples: int = knob(2, "instruct: held-out instructions answered at each eval", bounds="[0, inf)",
                             commands=FINETUNE, label="eval samples", tasks=INSTRUCT)


@dataclass
class LoraConfig:
    """LoRA adapters on a frozen base (engine.lora); flags --lora-rank etc."""

    TABLE: ClassVar[str] = "lora"
    FLAG_PREFIX: ClassVar[str] = "lora_"
    rank: int = knob(0, "train LoRA adapters of this rank on a frozen base (0: no LoRA)", bounds="[0, inf)",
                     commands=FINETUNE, label="LoRA rank")
    alpha: float = knob(16.0, "LoRA scale numerator (the update is alpha / rank * B A)", bounds="(0, inf)",
                        commands=FINETUNE, label="LoRA alpha")
    dropout: float = knob(0.05, "dropout on the adapters' input", bounds="[0, 1)", commands=FINETUNE,
                          label="LoRA dropout")
    targets: str = knob("c_attn,c_proj,c_fc", "comma-separated names of the Linear layers to adapt",
                        commands=FINETUNE, label="LoRA targets")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(getattr(self, name)) for name in _TABLES}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        unknown = set(d) - set(_TABLES)
        if unknown:
            raise ConfigError(f"Unknown config table(s) {sorted(unknown)}: use "
                              f"{', '.join(f'[{t}]' for t in _TABLES)}.")
        return cls(**{name: _build(c, d.get(name, {}), name) for name, c in _TABLES.items()})

    def save(self, path: Path) -> None:
        Path(path).write_text(dumps_toml(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        return cls.from_dict(load_toml(path))

    def validate(self) -> "RunConfig":
        validate(self)
        return self


@dataclass
class SamplingConfig:
    """How `engine.sampler.generate` picks tokens. temperature 0 = greedy."""

    TABLE: ClassVar[str] = "sample"
    temperature: float = knob(0.8, "softmax temperature, 0 = greedy", commands=GENERATE, label="temp")
    top_k: int | None = knob(None, "keep the k most likely tokens (above the vocab size: all)", commands=GENERATE,
                             label="top-k")
    top_p: float | None = knob(None, "keep the most likely tokens up to this probability mass", commands=GENERATE,
                               label="top-p")
    repetition_penalty: float = knob(1.0, "> 1 discourages ids already in the context (CTRL)", commands=GENERATE,
                                     label="rep")
    max_new_tokens: int = knob(200, "tokens to generate", commands=GENERATE, label="max")
    seed: int = knob(0, "random seed", commands=GENERATE, label="seed")
    stop: list[str] = knob([], "stop string (repeatable)", commands=GENERATE)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError with one sentence for the first invalid field."""
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be a whole number >= 0 (got {self.max_new_tokens!r}).")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a finite number >= 0, 0 meaning greedy (got {self.temperature!r}).")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"top_k must be a whole number >= 1, or unset to keep every token (got {self.top_k!r}).")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], or unset to keep every token (got {self.top_p!r}).")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty > 0):
            raise ConfigError(f"repetition_penalty must be a number > 0, 1 meaning none "
                              f"(got {self.repetition_penalty!r}).")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"stop must be a list of non-empty strings (got {self.stop!r}).")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be a whole number (got {self.seed!r}).")


# Presets set the model shape and, where the shape wants it, the training recipe. The GPT presets but gpt2
# (GPT-2's own choices) train the fastest way measured on 2 CPU cores (docs/PERFORMANCE.md): rotary positions
# and QK-norm in the model, Muon on the blocks' matrices, warmup-stable-decay.
_FAST_MODEL = dict(positions="rotary", qk_norm=True)
_FAST_TRAIN = dict(optimizer="muon", muon_lr=0.04, schedule="wsd", cooldown=0.3)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # tiny: nanoGPT's CPU shape, ~3 minutes on 2 CPU cores, past nanoGPT's CPU recipe's final loss in a
    # fraction of its time. A high lr suits a 0.8M-parameter model; frequent evals on fewer batches show the
    # samples turning into words.
    "tiny": {"model": dict(kind="gpt", n_layer=4, n_head=4, n_embd=128, block_size=64, mlp_ratio=4, **_FAST_MODEL),
             "train": dict(batch_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=50, max_steps=1500,
                           eval_interval=100, eval_batches=10, **_FAST_TRAIN)},
    # small, medium and seed19m: the same recipe, AdamW (embeddings, head, norms) at their old lr.
    "small": {"model": dict(kind="gpt", n_layer=6, n_head=6, n_embd=384, block_size=256, mlp_ratio=4, **_FAST_MODEL),
              "train": dict(lr=1e-3, min_lr=1e-4, batch_size=16, **_FAST_TRAIN)},
    "medium": {"model": dict(kind="gpt", n_layer=7, n_head=6, n_embd=384, block_size=256, mlp_ratio=4, **_FAST_MODEL),
               "train": dict(lr=1e-3, min_lr=1e-4, batch_size=16, **_FAST_TRAIN)},
    # The "19M-parameter GPT" of one source document; it says 7 heads, which cannot divide 384, so 6.
    "seed19m": {"model": dict(kind="gpt", n_layer=7, n_head=6, n_embd=384, block_size=512, mlp_ratio=6,
                              **_FAST_MODEL),
                "data": dict(tokenizer_kind="bpe", vocab_size=8192),
                "train": dict(lr=6e-4, min_lr=6e-5, batch_size=8, **_FAST_TRAIN)},
    "lstm": {"model": dict(kind="lstm", n_layer=2, n_embd=512, n_head=1, block_size=128),
             "train": dict(lr=2e-3, min_lr=2e-4)},
    "gpt2": {"model": dict(kind="gpt", n_layer=12, n_head=12, n_embd=768, block_size=1024, mlp_ratio=4,
                           vocab_size=50304),
             "train": dict(lr=6e-4, min_lr=6e-5, batch_size=8)},
}


def preset(name: str) -> RunConfig:
    """A RunConfig with the named preset applied over the defaults."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset '{name}': choose one of {', '.join(PRESETS)}.")
    return apply_overrides(RunConfig(), PRESETS[name])


# Fine-tuning recipe: a pretrained model wants a smaller step than training from scratch (seed 004 uses 5e-5
# on GPT-2 124M; small models take more), adapters a larger one (few, zero-initialised parameters).
RECIPE: dict[str, dict[str, object]] = {
    "train": dict(max_steps=300, batch_size=16, lr=3e-4, min_lr=3e-5, warmup_steps=20, eval_interval=50,
                  eval_batches=8, sample_tokens=60),
}
LORA_LR = 2e-3


def finetune_config(kind: str, init_from: str, data: str, overrides: dict[str, dict[str, object]] | None = None
                    ) -> RunConfig:
    """The config of a new fine-tuning run: the recipe, then the given {table: {key: value}} overrides
    (None values skipped, as unset flags)."""
    overrides = overrides or {}
    cfg = apply_overrides(RunConfig(), {**RECIPE, "task": {"kind": kind, "init_from": init_from},
                                        "data": {"corpus": data}})
    if (overrides.get("lora") or {}).get("rank"):
        cfg.train.lr, cfg.train.min_lr = LORA_LR, LORA_LR / 10
    cfg = apply_overrides(cfg, overrides)
    if (overrides.get("train") or {}).get("lr") is not None and (overrides.get("train") or {}).get("min_lr") is None:
        cfg.train.min_lr = cfg.train.lr / 10
    return cfg.validate()


_TABLES = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "task": TaskConfig, "lora": LoraConfig}


def apply_overrides(cfg: RunConfig, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """A copy of cfg with {table: {key: value}} applied; None values are skipped (an unset CLI flag)."""
    out = {}
    for table in _TABLES:
        obj = getattr(cfg, table)
        values = {k: v for k, v in overrides.get(table, {}).items() if v is not None}
        out[table] = _build(type(obj), {**asdict(obj), **values}, table)
    return RunConfig(**out)


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError with one clear sentence for the first invalid field: each knob's choices and bounds,
    then the rules that tie two knobs together."""
    for obj in (cfg.model, cfg.data, cfg.train, cfg.task, cfg.lora):
        for k in knobs(type(obj)):
            k.check(getattr(obj, k.name))
    m, t = cfg.model, cfg.train
    if m.kind == "gpt" and m.n_embd % m.n_head:
        raise ConfigError(f"n_embd ({m.n_embd}) must be divisible by n_head ({m.n_head}): "
                          f"pick a width that is a multiple of the head count.")
    if m.kind == "gpt" and m.positions == "rotary" and (m.n_embd // m.n_head) % 2:
        raise ConfigError(f"Rotary positions turn pairs of a head's dimensions, and n_embd / n_head = "
                          f"{m.n_embd // m.n_head} is odd: pick a width and head count with an even quotient.")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) must not exceed train.lr ({t.lr}).")
    _validate_task(cfg)


def _validate_task(cfg: RunConfig) -> None:
    k, lo = cfg.task, cfg.lora
    if k.train and not (k.train in ("all", "head") or re.fullmatch(r"last-[1-9][0-9]*", k.train)):
        raise ConfigError(f"task.train must be all, head or last-N such as last-1 (got '{k.train}').")
    if k.train == "head" and k.kind != "classify":
        raise ConfigError("task.train = head needs --task classify (only a classifier has a head of its own): "
                          "use last-N or all.")
    if k.kind != "lm" and cfg.model.kind != "gpt":
        raise ConfigError(f"The {k.kind} task needs a GPT run (got a {cfg.model.kind}): fine-tune a GPT.")
    if k.test_ratio + cfg.data.val_ratio >= 0.9:
        raise ConfigError(f"task.test_ratio {k.test_ratio} and data.val_ratio {cfg.data.val_ratio} leave too few "
                          f"records to train on: lower them.")
    if lo.rank:
        if k.train:
            raise ConfigError(f"LoRA trains adapters on a frozen base: drop --train {k.train}, or drop --lora-rank.")
        if not k.init_from:
            raise ConfigError("LoRA adapts pretrained weights: give the base run with --from RUN.")
        if not [t for t in lo.targets.split(",") if t.strip()]:
            raise ConfigError("lora.targets names no layer: give Linear layer names such as c_attn,c_proj,c_fc.")


def load_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist: check the path.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"Config file {path} is not valid TOML ({e}): fix it or start from a saved config.toml.") from None


def dumps_toml(tables: dict[str, dict[str, Any]]) -> str:
    """TOML for {table: {key: scalar}}: all our configs need (tomllib reads, the stdlib has no writer)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML's, and TOML also forbids a raw DEL (a control character in a path or corpus
        # name must not make the run's config.toml unreadable).
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _build(cls, values: dict[str, Any], table: str):
    """Construct a config dataclass from a dict, refusing unknown keys and converting/validating types."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{table}] must be a table of key = value pairs.")
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in [{table}]: known keys are {', '.join(known)}.")
    defaults = cls()
    out = {}
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        out[key] = _coerce(f"{table}.{key}", value, expected)
    return replace(defaults, **out)


def _coerce(name: str, value: Any, expected: type) -> Any:
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond any float (TOML integers have no limit in tomllib)
                raise ConfigError(f"{name} is too large (got an integer of {len(str(value))} digits).") from None
    elif expected is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{name} must be a {expected.__name__} (got {value!r}).")
