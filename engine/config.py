"""Run configuration: dataclasses saved to and loaded from TOML, presets, and validation.

A run's config.toml has five tables, [model], [data], [train], [task] and [lora], one per dataclass below. Unknown keys
are refused (a typo must not be silently ignored); missing keys take their defaults.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

MODEL_KINDS = ("gpt", "lstm")
TOKENIZER_KINDS = ("char", "word", "bpe")
DTYPES = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
TASK_KINDS = ("lm", "classify", "instruct")


@dataclass
class ModelConfig:
    kind: str = "gpt"
    vocab_size: int = 0  # taken from the tokenizer when the run is created
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    mlp_ratio: int = 4
    bias: bool = True
    n_classes: int = 0  # > 0: a classifier (engine.models.classifier), its head on the last real token


@dataclass
class DataConfig:
    corpus: str = "python-docs"
    tokenizer: str = ""  # path to a tokenizer.json; empty: train one of tokenizer_kind on the corpus
    tokenizer_kind: str = "char"
    vocab_size: int = 0  # for word/bpe tokenizers trained by the run; 0 means the kind's default
    val_ratio: float = 0.1


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    sample_tokens: int = 200
    log_interval: int = 10
    dtype: str = "auto"
    device: str = "auto"
    compile: bool = False
    seed: int = 1337


@dataclass
class TaskConfig:
    """What the run trains for (engine.tasks) and where its weights started (DESIGN 10)."""
    kind: str = "lm"  # lm | classify | instruct; data.corpus names the task's data
    init_from: str = ""  # "RUN[:latest|best]" the weights start from; empty: random init
    train: str = ""  # which base weights train: all | head | last-N; empty: the task's default
    text_col: str = ""  # classification CSV/TSV: column name or 0-based index; empty: "text" or the last
    label_col: str = ""  # ... empty: "label" or the first
    balance: bool = False  # classify: undersample every class to the rarest one's count
    test_ratio: float = 0.1  # records held out for the final test report (val: data.val_ratio)
    eval_samples: int = 2  # instruct: held-out instructions answered at each eval


@dataclass
class LoraConfig:
    rank: int = 0  # 0: no LoRA
    alpha: float = 16.0
    dropout: float = 0.05
    targets: str = "c_attn,c_proj,c_fc"  # Linear layer names (the last part of the module path)


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


# Presets set the model shape and, where the shape wants it, the training recipe. `tiny` is the classic
# CPU shakespeare-char shape; its batch and lr are tuned for time to a good loss on a small CPU.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # tiny: ~3 minutes on 2 CPU cores. A high lr suits a 0.8M-parameter model; frequent evals on fewer
    # batches show the samples turning into words as it trains.
    "tiny": {"model": dict(kind="gpt", n_layer=4, n_head=4, n_embd=128, block_size=64, mlp_ratio=4),
             "train": dict(batch_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=50, max_steps=1500,
                           eval_interval=100, eval_batches=10)},
    "small": {"model": dict(kind="gpt", n_layer=6, n_head=6, n_embd=384, block_size=256, mlp_ratio=4),
              "train": dict(lr=1e-3, min_lr=1e-4, batch_size=16)},
    "medium": {"model": dict(kind="gpt", n_layer=7, n_head=6, n_embd=384, block_size=256, mlp_ratio=4),
               "train": dict(lr=1e-3, min_lr=1e-4, batch_size=16)},
    # The "19M-parameter GPT" of one source document; it says 7 heads, which cannot divide 384, so 6.
    "seed19m": {"model": dict(kind="gpt", n_layer=7, n_head=6, n_embd=384, block_size=512, mlp_ratio=6),
                "data": dict(tokenizer_kind="bpe", vocab_size=8192),
                "train": dict(lr=6e-4, min_lr=6e-5, batch_size=8)},
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
    """Raise ConfigError with one clear sentence for the first invalid field."""
    m, d, t = cfg.model, cfg.data, cfg.train
    _choice("model.kind", m.kind, MODEL_KINDS)
    _choice("data.tokenizer_kind", d.tokenizer_kind, TOKENIZER_KINDS)
    _choice("train.dtype", t.dtype, DTYPES)
    _choice("train.device", t.device, DEVICES)
    for name, value in [("model.n_layer", m.n_layer), ("model.n_embd", m.n_embd), ("model.n_head", m.n_head),
                        ("model.block_size", m.block_size), ("model.mlp_ratio", m.mlp_ratio),
                        ("train.max_steps", t.max_steps), ("train.batch_size", t.batch_size),
                        ("train.grad_accum", t.grad_accum), ("train.eval_interval", t.eval_interval),
                        ("train.eval_batches", t.eval_batches), ("train.log_interval", t.log_interval)]:
        if value < 1:
            raise ConfigError(f"{name} must be a positive whole number (got {value}).")
    for name, value in [("model.n_classes", m.n_classes), ("data.vocab_size", d.vocab_size), ("train.warmup_steps", t.warmup_steps),
                        ("train.sample_tokens", t.sample_tokens)]:
        if value < 0:
            raise ConfigError(f"{name} must be zero or more (got {value}).")
    if m.kind == "gpt" and m.n_embd % m.n_head:
        raise ConfigError(f"n_embd ({m.n_embd}) must be divisible by n_head ({m.n_head}): "
                          f"pick a width that is a multiple of the head count.")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1) (got {m.dropout}).")
    if not 0.0 < d.val_ratio < 0.5:
        raise ConfigError(f"data.val_ratio must be between 0 and 0.5 (got {d.val_ratio}).")
    for name, value in [("train.lr", t.lr), ("train.min_lr", t.min_lr), ("train.weight_decay", t.weight_decay),
                        ("train.grad_clip", t.grad_clip)]:
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0 (got {value}).")
    if t.lr == 0:
        raise ConfigError("train.lr must be greater than 0.")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) must not exceed train.lr ({t.lr}).")
    for name, value in [("train.beta1", t.beta1), ("train.beta2", t.beta2)]:
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1) (got {value}).")
    _validate_task(cfg)


def _validate_task(cfg: RunConfig) -> None:
    k, lo = cfg.task, cfg.lora
    _choice("task.kind", k.kind, TASK_KINDS)
    if k.train and not (k.train in ("all", "head") or re.fullmatch(r"last-[1-9][0-9]*", k.train)):
        raise ConfigError(f"task.train must be all, head or last-N such as last-1 (got '{k.train}').")
    if k.train == "head" and k.kind != "classify":
        raise ConfigError("task.train = head needs --task classify (only a classifier has a head of its own): "
                          "use last-N or all.")
    if k.kind != "lm" and cfg.model.kind != "gpt":
        raise ConfigError(f"The {k.kind} task needs a GPT run (got a {cfg.model.kind}): fine-tune a GPT.")
    if not 0.0 <= k.test_ratio < 0.5 or k.test_ratio + cfg.data.val_ratio >= 0.9:
        raise ConfigError(f"task.test_ratio must be in [0, 0.5) and leave records to train on "
                          f"(got {k.test_ratio} with data.val_ratio {cfg.data.val_ratio}).")
    if k.eval_samples < 0:
        raise ConfigError(f"task.eval_samples must be zero or more (got {k.eval_samples}).")
    if lo.rank < 0:
        raise ConfigError(f"lora.rank must be zero (no LoRA) or more (got {lo.rank}).")
    if lo.rank:
        if k.train:
            raise ConfigError(f"LoRA trains adapters on a frozen base: drop --train {k.train}, or drop --lora-rank.")
        if not k.init_from:
            raise ConfigError("LoRA adapts pretrained weights: give the base run with --from RUN.")
        if not (math.isfinite(lo.alpha) and lo.alpha > 0) or not 0.0 <= lo.dropout < 1.0:
            raise ConfigError(f"lora.alpha must be > 0 and lora.dropout in [0, 1) (got {lo.alpha}, {lo.dropout}).")
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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)} (got '{value}').")


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
