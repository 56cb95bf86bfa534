"""The performance table: every row a ratio measured in this run, on this machine.

    python benchmarks/bench.py [--quick] [--rows train,quality,decode,int8,ui,memory,gpt2,serve] [--threads N] [--json]
                               [--quality-corpora python-docs,python-code] [--quality-seeds 3]

Prints one table and writes benchmarks/results.json. Absolute numbers drift on a shared machine; each row
compares two things measured back to back (interleaved or sandwiched where the row allows), so its ratio
holds. `--quick` shrinks every row (tiny shapes, few steps) into a smoke run of about two minutes.

Rows (docs/PERFORMANCE.md explains each, with the last full table):
- train: tokens/s of our trainer (the preset's defaults: bf16 autocast where the CPU has it, fused AdamW, our
  batched Muon where the preset trains with Muon, clip) vs a plain reference loop in this file (the same GPT
  and optimizers, fp32, SDPA, torch.optim.AdamW / torch.optim.Muon defaults), tiny and medium; model-FLOPs
  utilization of each against matmul ceilings measured here (fp32 and bf16).
- quality: seconds to the val loss nanoGPT's CPU recipe (4x4x128, block 64, batch 12, 2,000 iterations) ends at,
  char level: `smallgpt train --preset tiny` in its own process, from spawn (evals and checkpoints included)
  vs the recipe's training time, on the trainer's own val batches; per corpus (--quality-corpora), the median
  of --quality-seeds seeds.
- decode: tokens/s of 256 new tokens at batch 1, the sampler on the KV cache vs recomputing the whole
  context for every token (nanoGPT's generate), tiny and medium.
- int8: prefill (512 tokens) and decode tokens/s, checkpoint bytes and val perplexity, int8 vs fp32, on
  a medium model trained briefly by the train row.
- ui: tokens/s of a run watched by the TUI vs headless; time to the TUI's first frame vs `python -c pass`;
  tokens/s shown in the Generate tab vs the CLI.
- memory: peak RSS of the medium training process vs its parameter + optimizer bytes.
- gpt2: a random-weight GPT-2 124M (transformers' GPT2Config(), needs the test extra): `smallgpt import`
  time, greedy decode tokens/s ours vs transformers' generate (KV cache, one thread each), our int8 vs
  fp32, and peak RSS while generating vs its fp32 weight bytes.
- serve: `smallgpt serve` of a random-weight medium run: aggregate tokens/s of 4 concurrent streams vs 1
  (continuous batching), time to first token p95 under 4 streams, 1 stream vs `smallgpt generate`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.process import training_process_settings  # noqa: E402  (imports no torch)

# Before torch loads, as in every training process (OpenMP threads spin briefly, then sleep; malloc keeps
# freed blocks): the reference loop and every other baseline get the same runtime settings as ours.
training_process_settings()

import torch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results.json"
ROW_GROUPS = ("train", "quality", "decode", "int8", "ui", "memory", "gpt2", "serve")
MB = 1 << 20


@dataclass
class Row:
    """One line of the table: ours vs baseline, their ratio, and the target it is held to."""
    name: str
    ours: float | None
    base: float | None
    unit: str
    target: str = ""
    ok: bool | None = None  # None: no target, or not measured
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours is not None and self.base:
            self.ratio = self.ours / self.base


@dataclass
class Settings:
    """Sizes of every row; --quick shrinks them all and trains `tiny` where the full run trains `medium`."""
    quick: bool = False
    corpus: str = "python-docs"  # any corpus source; the smoke test uses a small file
    big: str = "medium"
    train_windows: dict[str, int] = field(default_factory=lambda: {"tiny": 6, "medium": 4})
    log_interval: dict[str, int] = field(default_factory=lambda: {"tiny": 10, "medium": 2})
    quality_corpora: tuple[str, ...] = ("python-docs",)
    quality_seeds: int = 1  # seeds per corpus (the median is reported); PERFORMANCE.md's table: 3
    quality_seed: int = 1337
    quality_ref_steps: int = 2000  # nanoGPT's CPU recipe: 2,000 iterations
    quality_evals: int = 20  # evals along the reference's run (each is eval_batches full batches, not timed)
    decode_tokens: int = 256
    prefill_tokens: int = 512
    int8_eval_tokens: int = 1 << 15
    ui_seconds: float = 10.0  # training seconds a UI-row run (benchmarks/ui_overhead.py says why)
    generate_tokens: int = 2000  # key presses while streaming 2,000 tokens

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if not quick:
            return cls()
        return cls(quick=True, big="tiny", train_windows={"tiny": 2}, log_interval={"tiny": 5},
                   quality_ref_steps=30, quality_evals=3,
                   decode_tokens=32, prefill_tokens=64, int8_eval_tokens=1 << 11, ui_seconds=1.0,
                   generate_tokens=100)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _timed(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    fn()
    return max(clock() - t0, 1e-9)


# --- shared set-up: corpus, tokenizer, the medium run -----------------------------------------------
class Bench:
    """State the rows share, built on first use: each corpus's char tokenizer and encoded splits (python-docs
    unless settings say otherwise), and the trained runs (the medium run feeds the train, int8 and memory rows)."""

    def __init__(self, settings: Settings, home: Path):
        self.s = settings
        self.home = home
        self.runs: dict[str, dict[str, Any]] = {}
        self._corpora: dict[str, tuple[Path, Any, Any, Any]] = {}

    def corpus(self, source: str) -> tuple[Path, Any, Any, Any]:
        """(char tokenizer path, tokenizer, train split, val split) of a corpus, exactly as the trainer sees them."""
        if source not in self._corpora:
            from engine.corpora import load_corpus
            from engine.dataset import TokenDataset, prepare_dataset
            from engine.tokenizer import train_tokenizer

            path = self.home / f"char-tokenizer-{len(self._corpora)}.json"
            text = load_corpus(source)
            tok = train_tokenizer(text, "char")
            tok.save(path)
            data_dir = prepare_dataset(text, tok)
            self._corpora[source] = (path, tok, TokenDataset(data_dir, "train"), TokenDataset(data_dir, "val"))
        return self._corpora[source]

    @property
    def data(self) -> tuple[Any, Any, Any]:
        """(tokenizer, train split, val split) of the settings' corpus."""
        return self.corpus(self.s.corpus)[1:]

    def config(self, preset_name: str, corpus: str | None = None, **train: Any) -> Any:
        """The preset on the corpus (default: the settings'), its char tokenizer and the given [train] overrides."""
        from engine.config import apply_overrides, preset

        path, tok, _, _ = self.corpus(corpus or self.s.corpus)
        cfg = apply_overrides(preset(preset_name), {"data": {"corpus": corpus or self.s.corpus, "tokenizer": str(path)},
                                                     "train": train})
        cfg.model.vocab_size = tok.vocab_size
        return cfg

    def trained_run(self, preset_name: str) -> dict[str, Any]:
        """Train the preset for a few log windows in its own process, as the TUI and the CLI do:
        {"run_dir", "tokens_per_s" (median window after the first), "peak_rss", "params", "seconds"}."""
        if preset_name in self.runs:
            return self.runs[preset_name]
        from engine.events import Start, Step, read_events, typed
        from engine.runs import create_run

        log_every = self.s.log_interval[preset_name]
        steps = log_every * (self.s.train_windows[preset_name] + 1)
        cfg = self.config(preset_name, max_steps=steps, log_interval=log_every, eval_interval=steps)
        run_dir = create_run(cfg, name=f"bench-{preset_name}")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"training {preset_name} failed: {output.strip()[-500:]}")
        events = typed(read_events(run_dir))
        rates = [e.tokens_per_s for e in events if isinstance(e, Step) and e.step > log_every]
        start = next(e for e in events if isinstance(e, Start))
        self.runs[preset_name] = {"run_dir": run_dir, "tokens_per_s": _median(rates), "windows": len(rates),
                                  "peak_rss": usage.ru_maxrss * 1024, "params": start.params,
                                  "dtype": start.dtype, "seconds": time.perf_counter() - t0}
        return self.runs[preset_name]


# --- the reference loop -----------------------------------------------------------------------------
class Reference:
    """The plain PyTorch loop (nanoGPT's, unfused): the same GPT in fp32, SDPA attention, the recipe's
    optimizers as torch ships them with their defaults (torch.optim.AdamW; with optimizer muon,
    torch.optim.Muon on the matrices our trainer gives Muon), no autocast, no clipping, no compile; batches
    from the same encoded split."""

    def __init__(self, cfg: Any, train_ds: Any, seed: int = 1337):
        from engine.models import build_model
        from engine.trainer import Chained, split_for_muon

        torch.manual_seed(seed)
        self.cfg = cfg
        self.model = build_model(cfg.model)
        self.model.train()
        muon, rest = split_for_muon(self.model, cfg)
        self.opt = Chained(torch.optim.AdamW(rest), *([torch.optim.Muon(muon)] if muon else []))
        self.train_ds = train_ds
        self.gen = torch.Generator().manual_seed(seed)

    def step(self) -> None:
        x, y = self.train_ds.get_batch(self.cfg.train.batch_size, self.cfg.model.block_size, self.gen)
        _, loss = self.model(x, y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def window_rates(self, windows: int, steps: int) -> list[float]:
        """tokens/s of `windows` windows of `steps` steps: the trainer's own log-window statistic."""
        tokens = self.cfg.train.batch_size * self.cfg.model.block_size * steps
        return [tokens / _timed(lambda: [self.step() for _ in range(steps)]) for _ in range(windows)]

    @torch.no_grad()
    def val_loss(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        self.model.eval()
        loss = sum(self.model(x, y)[1].item() for x, y in batches) / len(batches)
        self.model.train()
        return loss


class NanoGPTRecipe(Reference):
    """nanoGPT's own CPU recipe (README, "I only have a macbook"): 4 layers, 4 heads, 128 wide, block 64,
    batch 12, AdamW lr 1e-3 betas (0.9, 0.99) weight decay 0.1 on 2-D weights, 100 warmup steps then cosine
    to 1e-4 at 2,000 iterations, clip 1.0, dropout 0, fp32: the time-to-quality baseline."""

    SHAPE = dict(kind="gpt", n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0)
    TRAIN = dict(batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2000, weight_decay=0.1,
                 beta1=0.9, beta2=0.99, grad_clip=1.0, optimizer="adamw")

    def __init__(self, cfg: Any, train_ds: Any, seed: int = 1337):
        from engine.config import apply_overrides, preset

        recipe = apply_overrides(preset("tiny"), {"model": self.SHAPE, "train": self.TRAIN})
        recipe.model = type(recipe.model)(**{**asdict(type(recipe.model)()), **self.SHAPE,
                                             "vocab_size": cfg.model.vocab_size})  # every other choice: GPT-2's
        super().__init__(recipe, train_ds, seed)
        t = recipe.train
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=t.lr, betas=(t.beta1, t.beta2))
        self.it = 0

    def lr(self) -> float:
        """nanoGPT's get_lr."""
        t = self.cfg.train
        if self.it < t.warmup_steps:
            return t.lr * (self.it + 1) / (t.warmup_steps + 1)
        if self.it > t.max_steps:
            return t.min_lr
        ratio = (self.it - t.warmup_steps) / (t.max_steps - t.warmup_steps)
        return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (t.lr - t.min_lr)

    def step(self) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr()
        x, y = self.train_ds.get_batch(self.cfg.train.batch_size, self.cfg.model.block_size, self.gen)
        _, loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.it += 1


# --- rows: train throughput and MFU -----------------------------------------------------------------
def matmul_ceiling(dtype: torch.dtype, n: int = 1024, seconds: float = 0.4) -> float:
    """FLOP/s of an n x n x n matmul in dtype, best of three bursts: the attainable peak here."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    reps = max(1, int(seconds / _timed(lambda: torch.mm(a, b))))
    best = min(_timed(lambda: [torch.mm(a, b) for _ in range(reps)]) for _ in range(3))
    return 2 * n ** 3 * reps / best


def flops_per_token(cfg: Any, non_embedding_params: int) -> float:
    """nanoGPT's estimate (PaLM appendix B): 6N for the weights plus the attention scores, forward + backward."""
    m = cfg.model
    return 6 * non_embedding_params + 12 * m.n_layer * m.n_embd * m.block_size


def rows_train(b: Bench) -> list[Row]:
    presets = ["tiny"] if b.s.quick else ["tiny", "medium"]
    ceilings: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def measure_ceilings() -> None:  # interleaved: both ceilings see the same machine
        ceilings["fp32"].append(matmul_ceiling(torch.float32))
        ceilings["bf16"].append(matmul_ceiling(torch.bfloat16))

    measure_ceilings()
    targets = {"tiny": 1.5, "medium": 3.0}
    rows: list[Row] = []
    runs: list[tuple[str, Any, dict[str, Any], float, float]] = []
    for name in presets:
        _, train_ds, _ = b.data
        log_every = b.s.log_interval[name]
        cfg = b.config(name)
        ref = Reference(cfg, train_ds)
        ref.step()  # warm-up, as the trainer's first (unreported) window
        half = max(1, b.s.train_windows[name] // 2)
        # Sandwich: reference windows before and after our run, so drift on a shared machine cancels.
        ref_rates = ref.window_rates(half, log_every)
        run = b.trained_run(name)
        ref_rates += ref.window_rates(half, log_every)
        ours, base = run["tokens_per_s"], _median(ref_rates)
        rows.append(Row(f"train tokens/s {name}", ours, base, "tok/s", f">= {targets[name]}x",
                        ours / base >= targets[name],
                        f"ours {run['dtype']}, {cfg.train.optimizer}, clip; B={cfg.train.batch_size} T={cfg.model.block_size}"))
        runs.append((name, cfg, run, ours, base))
    measure_ceilings()  # again after the runs: the best of both is the least disturbed
    peak = {k: max(v) for k, v in ceilings.items()}
    rows.insert(0, Row("matmul ceiling bf16 vs fp32", peak["bf16"] / 1e9, peak["fp32"] / 1e9, "GFLOP/s",
                       note="1024^3 mm, best burst before/after the runs"))
    for name, cfg, run, ours, base in runs:
        fpt = flops_per_token(cfg, run["params"]["non_embedding"])
        ceiling = peak["bf16"] if run["dtype"] == "bf16" else peak["fp32"]
        rows.append(Row(f"MFU {name}", 100 * ours * fpt / ceiling, 100 * base * fpt / peak["fp32"], "%",
                        note=f"ours vs the {run['dtype']} ceiling, reference vs fp32"))
    return rows


# --- rows: time to quality --------------------------------------------------------------------------
def quality_reference(b: Bench, corpus: str, seed: int, val: list[Any]) -> list[tuple[float, float]]:
    """nanoGPT's CPU recipe trained to its end: (training seconds, val loss on `val`) every eval interval
    (evals not timed); the last point is its final loss at its total time."""
    _, _, train_ds, _ = b.corpus(corpus)
    ref = NanoGPTRecipe(b.config("tiny", corpus), train_ds, seed=seed)
    ref.cfg.train.max_steps = b.s.quality_ref_steps
    ref.cfg.train.warmup_steps = max(1, b.s.quality_ref_steps // 20)  # 100 of 2,000
    every = max(1, b.s.quality_ref_steps // b.s.quality_evals)
    trained, curve = 0.0, []
    while ref.it < b.s.quality_ref_steps:
        trained += _timed(lambda: [ref.step() for _ in range(min(every, b.s.quality_ref_steps - ref.it))])
        curve.append((trained, ref.val_loss(val)))
    return curve


def quality_ours(b: Bench, corpus: str, seed: int, target: float, until: float) -> list[tuple[float, float]]:
    """What a user gets from `smallgpt train --preset tiny`: its own process with the preset's defaults;
    (seconds since the process was spawned, val loss) at each eval, evals and checkpoints included. Stopped
    once an eval reached `target` and `until` seconds have passed (or at the preset's end)."""
    from engine.events import read_events
    from engine.runs import create_run

    over = {"seed": seed}
    if b.s.quick:
        over.update(max_steps=b.s.quality_ref_steps, eval_interval=max(1, b.s.quality_ref_steps // 3))
    run_dir = create_run(b.config("tiny", corpus, **over), name=f"bench-quality-{b.s.quality_corpora.index(corpus)}-{seed}")
    t0 = time.time()  # the events' `wall` is Unix time
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    curve: list[tuple[float, float]] = []
    while proc.poll() is None:
        time.sleep(0.5)
        curve = [(e["wall"] - t0, e["val_loss"]) for e in read_events(run_dir) if e["event"] == "eval"]
        if any(loss <= target for _, loss in curve) and time.time() - t0 >= until:
            proc.terminate()  # measured: the rest of the run would only cost bench time
            proc.wait()
            return curve
    if proc.returncode != 0:
        raise RuntimeError(f"training tiny failed: {(proc.stderr.read() if proc.stderr else '').strip()[-500:]}")
    return [(e["wall"] - t0, e["val_loss"]) for e in read_events(run_dir) if e["event"] == "eval"]


def loss_at(curve: list[tuple[float, float]], seconds: float) -> float:
    """The val loss of the last eval at or before `seconds` (NaN: none yet)."""
    before = [loss for t, loss in curve if t <= seconds]
    return before[-1] if before else math.nan


def rows_quality(b: Bench) -> list[Row]:
    """Per corpus, the median over seeds of ours' time to the reference's final val loss / the reference's
    total time; each seed the reference first, then ours, back to back, the corpora taking turns. The first
    seed of each corpus runs ours on to the reference's total time (its loss there); later ones stop ours
    at the target, to keep the row's length down."""
    from engine.trainer import EVAL_SEED

    vals, results = {}, {c: [] for c in b.s.quality_corpora}
    for corpus in b.s.quality_corpora:
        cfg = b.config("tiny", corpus)
        gen = torch.Generator().manual_seed(EVAL_SEED)  # the trainer's own fixed val batches
        val_ds = b.corpus(corpus)[3]
        vals[corpus] = [val_ds.get_batch(cfg.train.batch_size, cfg.model.block_size, gen)
                        for _ in range(cfg.train.eval_batches)]
    for i in range(b.s.quality_seeds):
        for corpus in b.s.quality_corpora:
            seed = b.s.quality_seed + i
            total, target = quality_reference(b, corpus, seed, vals[corpus])[-1]
            ours = quality_ours(b, corpus, seed, target, until=total if i == 0 else 0.0)
            reached = next((t for t, loss in ours if loss <= target), math.inf)
            results[corpus].append((seed, reached, total, target, loss_at(ours, total) if i == 0 else None))
            print(f"  quality {corpus} seed {seed}: {reached:.1f} / {total:.1f} s to {target:.3f}", file=sys.stderr,
                  flush=True)
    rows = []
    for corpus, res in results.items():
        ratio = _median([r / t for _, r, t, _, _ in res])
        notes = [f"seed {seed}: {_fmt(r)} / {t:.1f} s to {target:.3f}" for seed, r, t, target, _ in res]
        seed, _, total, target, at_total = res[0]
        notes.append(f"val loss at {total:.0f} s (seed {seed}): ours {_fmt(at_total)}, reference {target:.3f}")
        rows.append(Row(f"time to the reference's final val loss, tiny, {corpus}", _median([r for _, r, _, _, _ in res]),
                        _median([t for _, _, t, _, _ in res]), "s", "<= 0.5x", ratio <= 0.5, "; ".join(notes),
                        ratio=ratio))
    return rows


# --- rows: decode -----------------------------------------------------------------------------------
class _NoEOS:
    """The char tokenizer with an end-of-text id no model emits: a random or barely trained model must
    not end its greedy decode early, or the two sides would time different lengths."""

    eos_id = -1

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def decode_cached(model: Any, tokenizer: Any, n: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """tokens/s of the sampler (greedy, KV cache, sliding window) generating n tokens after a newline."""
    from engine.sampler import SamplingConfig, generate

    cfg = SamplingConfig(max_new_tokens=n, temperature=0.0)
    count = 0

    def run() -> None:
        nonlocal count
        count = sum(1 for _ in generate(model, _NoEOS(tokenizer), "\n", cfg))

    seconds = _timed(run, clock)
    assert count == n, f"decoded {count} of {n} tokens"
    return n / seconds


@torch.inference_mode()
def decode_recompute(model: Any, tokenizer: Any, n: int) -> float:
    """tokens/s of nanoGPT's generate: the whole (cropped) context through the model for every token."""
    model.eval()
    idx = torch.tensor([tokenizer.encode("\n")])
    block = model.config.block_size
    t0 = time.perf_counter()
    for _ in range(n):
        logits, _ = model(idx[:, -block:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return n / (time.perf_counter() - t0)


def best_of(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Each rate function called `repeats` times, interleaved; the best rate of each (least disturbed)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(fn())
    return {k: max(v) for k, v in out.items()}


def rows_decode(b: Bench) -> list[Row]:
    from engine.models import build_model

    tok = b.data[0]
    n = b.s.decode_tokens
    rows = []
    for name in (["tiny"] if b.s.quick else ["tiny", "medium"]):
        torch.manual_seed(0)
        model = build_model(b.config(name).model)  # random weights: speed does not depend on training
        decode_cached(model, tok, 8)  # warm-up
        r = best_of({"cache": lambda: decode_cached(model, tok, n),
                     "recompute": lambda: decode_recompute(model, tok, n)}, repeats=2)
        target = 5.0 if name == "medium" else None
        rows.append(Row(f"decode tokens/s {name}, cache vs recompute", r["cache"], r["recompute"], "tok/s",
                        f">= {target:g}x" if target else "", r["cache"] / r["recompute"] >= target if target else None,
                        f"{n} new tokens, batch 1, fp32, greedy"))
    return rows


# --- rows: int8 -------------------------------------------------------------------------------------
def prefill_rate(model: Any, tokens: int) -> float:
    """tokens/s of one prefill of `tokens` tokens: windows of at most block_size, batched."""
    block = model.config.block_size
    rows = max(1, tokens // block)
    width = min(tokens, block)
    idx = torch.randint(0, model.config.vocab_size, (rows, width), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return rows * width / _timed(lambda: model.step(idx, model.init_state(rows)))


def rows_int8(b: Bench) -> list[Row]:
    from engine.checkpoint import load_model
    from engine.int8 import save_int8

    run = b.trained_run(b.s.big)
    report = save_int8(run["run_dir"], "latest", eval_tokens=b.s.int8_eval_tokens)
    fp32, _, tok = load_model(run["run_dir"], "latest")
    int8, _, _ = load_model(run["run_dir"], "int8")
    n, p = b.s.decode_tokens, b.s.prefill_tokens
    for m in (fp32, int8):  # warm-up: allocator, the _int_mm shape probes
        prefill_rate(m, p)
        decode_cached(m, tok, 8)
    pre = best_of({"fp32": lambda: prefill_rate(fp32, p), "int8": lambda: prefill_rate(int8, p)}, repeats=3)
    dec = best_of({"fp32": lambda: decode_cached(fp32, tok, n), "int8": lambda: decode_cached(int8, tok, n)},
                  repeats=2)
    block = fp32.config.block_size
    shape = f"{max(1, p // block)} x {min(p, block)}" if p > block else f"1 x {p}"
    trained = f"{b.s.big} trained {run['windows'] + 1} log windows by the train row"
    ppl = report["int8_perplexity"] / report["fp32_perplexity"]
    size = report["int8_bytes"] / report["fp32_bytes"]
    name = b.s.big
    return [
        Row(f"int8 prefill tokens/s {name}", pre["int8"], pre["fp32"], "tok/s", ">= 3x", pre["int8"] / pre["fp32"] >= 3,
            f"{p} tokens as {shape}; int_mm={report['int_mm']}"),
        Row(f"int8 decode tokens/s {name}", dec["int8"], dec["fp32"], "tok/s", ">= 1.2x",
            dec["int8"] / dec["fp32"] >= 1.2, f"{n} new tokens, batch 1"),
        Row(f"int8 checkpoint bytes {name}", report["int8_bytes"] / MB, report["fp32_bytes"] / MB, "MB", "<= 0.3x",
            size <= 0.3, "model.safetensors"),
        Row(f"int8 val perplexity {name}", report["int8_perplexity"], report["fp32_perplexity"], "ppl", "<= 1.01x",
            ppl <= 1.01, f"{report['eval_tokens']} val tokens; {trained}"),
    ]


# --- rows: GPT-2 124M (issue 17) ---------------------------------------------------------------------
def gpt2_folder(path: Path) -> Path:
    """A random-weight GPT-2 124M (transformers' default GPT2Config()) saved as `huggingface-cli download
    gpt2` would leave it, built offline: the tokenizer is a synthetic byte-level BPE of GPT-2's 50,257
    tokens (<|endoftext|> last), as speed and memory do not depend on what the merges are."""
    import transformers
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    from engine.tokenizer import _unicode_to_byte

    torch.manual_seed(0)
    config = transformers.GPT2Config()
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    base = sorted(_unicode_to_byte())
    vocab = {c: i for i, c in enumerate(base)}
    merges = [(a, b) for a in base for b in base][:config.vocab_size - 1 - len(base)]  # two-byte tokens
    vocab.update({a + b: len(base) + i for i, (a, b) in enumerate(merges)})
    vocab["<|endoftext|>"] = len(vocab)
    tk = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>"])
    tk.save(str(path / "tokenizer.json"))
    return path


def decode_transformers(model: Any, n: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """tokens/s of transformers' generate: greedy, KV cache, batch 1, n new tokens after one token, on
    one thread like the sampler's decode steps."""
    from engine.sampler import torch_threads

    ids = torch.tensor([[198]])
    with torch.inference_mode(), torch_threads(1):
        seconds = _timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                                max_new_tokens=n, min_new_tokens=n, use_cache=True,
                                                pad_token_id=0), clock)
    return n / seconds


def gemv_rate(mb: int = 512) -> float:
    """GB/s one thread's fp32 matrix-vector product reads from memory at best (an [in, out] weight far
    larger than the caches, the faster layout for MKL), CPU time: a decode step reads every weight once."""
    from engine.sampler import torch_threads

    w = torch.ones(3072, (mb * MB) // (3072 * 4))  # rows as long as GPT-2's MLP: the fastest measured
    x = torch.ones(1, 3072)
    with torch_threads(1):
        return max(w.numel() * 4 / 1e9 / _timed(lambda: x @ w, time.thread_time) for _ in range(3))


GPT2_RSS = """
import json, sys
from engine.checkpoint import load_model
from engine.sampler import SamplingConfig, generate
model, _, tok = load_model(sys.argv[1], "latest")
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
loaded = hwm()
with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
    f.write("5")
n = sum(1 for _ in generate(model, tok, "Hello", SamplingConfig(max_new_tokens=int(sys.argv[2]), temperature=0)))
print(json.dumps({"load_peak": loaded, "generate_peak": hwm(), "tokens": n}))
"""


def rows_gpt2(b: Bench) -> list[Row]:
    import transformers

    from engine.checkpoint import load_model
    from engine.interop import import_model
    from engine.quantize import quantize_model

    folder = gpt2_folder(b.home / "gpt2-random")
    t0 = time.perf_counter()
    summary = import_model(str(folder), "gpt2-random")
    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    hf_load = time.perf_counter() - t0
    fp32, _, tok = load_model(summary["path"], "latest")
    int8 = quantize_model(load_model(summary["path"], "latest")[0])
    n = b.s.decode_tokens
    decode_cached(fp32, tok, 8)  # warm-up
    decode_cached(int8, tok, 8)
    decode_transformers(hf, 8)
    # Every side decodes on one thread, so the CPU time of this thread is its work alone: on a shared
    # machine, wall time would also measure the neighbours.
    cpu = time.thread_time
    r = best_of({"ours": lambda: decode_cached(fp32, tok, n, cpu), "hf": lambda: decode_transformers(hf, n, cpu),
                 "int8": lambda: decode_cached(int8, tok, n, cpu)}, repeats=2)
    weight_bytes = summary["params"] * 4
    floor = weight_bytes / 1e9 / gemv_rate()  # seconds a token must take to read the fp32 weights once
    out = subprocess.run([sys.executable, "-c", GPT2_RSS, summary["path"], str(n)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    limit = weight_bytes * 1.3 + 400 * MB
    params = f"{summary['params'] / 1e6:.1f}M params"
    return [
        Row("import GPT-2 124M (s), ours vs transformers from_pretrained", imported, hf_load, "s", "", None,
            f"ours: folder -> run dir (checks, sha256, atomic write); theirs: folder -> model in memory; {params}"),
        Row("decode tokens/s GPT-2 124M, ours vs transformers", r["ours"], r["hf"], "tok/s", ">= 1.3x",
            r["ours"] / r["hf"] >= 1.3, f"{n} new tokens, batch 1, fp32, greedy, KV cache both, 1 thread both, "
            f"per CPU second; reading the fp32 weights once a token "
            f"at the best one-thread GEMV rate caps any decoder at {1 / floor:.1f} tok/s, so at most "
            f"{r['hf'] and 1 / floor / r['hf']:.2f}x"),
        Row("int8 decode tokens/s GPT-2 124M", r["int8"], r["ours"], "tok/s", ">= 1.3x", r["int8"] / r["ours"] >= 1.3,
            f"{n} new tokens, batch 1, per CPU second"),
        Row("peak RSS generating GPT-2 124M", rss["generate_peak"] / MB, limit / MB, "MB",
            "<= fp32 weights x 1.3 + 400 MB", rss["generate_peak"] <= limit,
            f"{n} tokens, own process; weights {weight_bytes / MB:.0f} MB; load peak {rss['load_peak'] / MB:.0f} MB"),
    ]


# --- rows: UI ---------------------------------------------------------------------------------------
FIRST_FRAME = """
import sys
from tui.app import SmallGPTApp

async def first_frame(pilot):  # the app is ready once its first frame is composed and painted
    print("FIRST_FRAME", flush=True)
    pilot.app.exit()

SmallGPTApp().run(headless=True, size=(120, 40), auto_pilot=first_frame)
"""


def first_frame_seconds() -> float:
    """Wall time from spawning the TUI process to its first frame (headless driver, no terminal needed)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", FIRST_FRAME], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "FIRST_FRAME":
            seconds = time.perf_counter() - t0
            break
    else:
        raise RuntimeError(f"the TUI exited before its first frame: {proc.stderr.read()[-500:] if proc.stderr else ''}")
    proc.wait(timeout=60)
    return seconds


def python_startup_seconds() -> float:
    return _timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))


def _ui_script(name: str, *args: str) -> dict[str, Any]:
    """Run a UI benchmark script (benchmarks/NAME.py --json) in its own process, as a user's TUI is: in this
    process the earlier rows' state and torch's thread pools would slow the app down."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks/{name}.py exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows_ui(b: Bench) -> list[Row]:
    rounds = 1 if b.s.quick else 2
    r = _ui_script("ui_overhead", "--seconds", str(b.s.ui_seconds), "--rounds", str(rounds))
    rows = [Row("UI-watched training tokens/s", r["watched_tokens_per_s"], r["headless_tokens_per_s"], "tok/s",
                ">= 0.95x", r["ratio"] >= 0.95, f"{4 * rounds} alternating runs of {r['steps']} steps "
                f"(~{b.s.ui_seconds:g} s); the UI used {r['ui_cpu_share']:.0%} of a core")]
    times = best_of({"frame": lambda: 1 / first_frame_seconds(), "python": lambda: 1 / python_startup_seconds()},
                    repeats=2 if b.s.quick else 3)
    frame, python = 1 / times["frame"], 1 / times["python"]
    rows.append(Row("TUI first frame", frame, python, "s", "<= 1.5 s", frame <= 1.5,
                    "vs `python -c pass`; best of runs"))
    r = _ui_script("ui_generate", "--tokens", str(b.s.generate_tokens), "--repeats", "1" if b.s.quick else "2")
    rows.append(Row("Generate tab tokens/s vs CLI", r["tui_tokens_per_s"], r["cli_tokens_per_s"], "tok/s",
                    ">= 0.9x", r["ratio"] >= 0.9, f"tiny shape, {r['tokens']} tokens streamed"))
    p95 = r["key_latency_p95_ms"]
    rows.append(Row("key latency p95 while streaming", p95, None, "ms", "< 100 ms",
                    p95 < 100 if p95 is not None else None, f"{r['key_presses']} presses, max {r['key_latency_max_ms']} ms"))
    r = _ui_script("ui_generate", "--view", "chat", "--tokens", str(b.s.generate_tokens),
                   "--repeats", "1" if b.s.quick else "2")
    rows.append(Row("Chat view tokens/s vs CLI", r["tui_tokens_per_s"], r["cli_tokens_per_s"], "tok/s",
                    ">= 0.9x", r["ratio"] >= 0.9, f"tiny shape fine-tuned for instruct, one reply of {r['tokens']} tokens"))
    p95 = r["key_latency_p95_ms"]
    rows.append(Row("key latency p95 while a chat streams", p95, None, "ms", "< 100 ms",
                    p95 < 100 if p95 is not None else None, f"{r['key_presses']} presses, max {r['key_latency_max_ms']} ms"))
    return rows


# --- rows: serve ------------------------------------------------------------------------------------
def serve_run(b: Bench, name: str) -> Path:
    """A run of the preset's shape with random weights (speed does not depend on training) whose
    end-of-text is out of reach, so every stream runs its full max_tokens (benchmarks/tiny_run.py)."""
    from engine.config import preset
    from benchmarks.tiny_run import make_tiny_run

    m = preset(name).model
    return make_tiny_run(b.home, name=f"bench-serve-{name}",
                         model={k: getattr(m, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "mlp_ratio")})


def stream_completion(info: dict[str, Any], tokens: int, seed: int) -> dict[str, float]:
    """One streamed /v1/completions request over plain HTTP: {"tokens", "seconds", "ttft"} (time to the
    first text), timed from sending the request to [DONE]."""
    import http.client

    conn = http.client.HTTPConnection(info["host"], info["port"], timeout=600)
    body = json.dumps({"model": info["model"], "prompt": "\n", "max_tokens": tokens, "temperature": 1.0,
                       "seed": seed, "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    ttft, usage = None, 0
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if ttft is None and chunk["choices"] and chunk["choices"][0]["text"]:
            ttft = time.perf_counter() - t0
        if chunk.get("usage"):
            usage = chunk["usage"]["completion_tokens"]
    seconds = time.perf_counter() - t0
    conn.close()
    assert usage == tokens, f"streamed {usage} of {tokens} tokens"
    return {"tokens": usage, "seconds": seconds, "ttft": ttft or seconds}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc): what it cost, whatever else the machine was doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_round(info: dict[str, Any], streams: int, tokens: int, seed: int) -> tuple[float, list[float], float]:
    """`streams` concurrent streams: (aggregate tokens/s over the round's wall time, each stream's TTFT,
    the server's CPU ms per token)."""
    from concurrent.futures import ThreadPoolExecutor

    cpu0, t0 = _cpu_seconds(info["pid"]), time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda i: stream_completion(info, tokens, seed + i), range(streams)))
    total = sum(r["tokens"] for r in results)
    return (total / (time.perf_counter() - t0), [r["ttft"] for r in results],
            1000 * (_cpu_seconds(info["pid"]) - cpu0) / total)


def cli_generate_rate(run_dir: Path, tokens: int) -> float:
    """tokens/s that `smallgpt generate --json` reports for the same run and length."""
    out = subprocess.run([sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())", "generate",
                          str(run_dir), "--checkpoint", "latest", "--prompt", "\n", "--max-new-tokens", str(tokens),
                          "--temperature", "1.0", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["tokens_per_s"]


def rows_serve(b: Bench) -> list[Row]:
    """`smallgpt serve` (its own process, as users run it) streaming to 1 and to 4 concurrent clients;
    the single stream against `smallgpt generate` of the same run."""
    from engine.runs import server_info, stop_server
    from serve.server import launch

    name = b.s.big
    run_dir = serve_run(b, name)
    n, rounds = (32, 1) if b.s.quick else (256, 5)
    info = launch(run_dir, ["--checkpoint", "latest", "--port", "0", "--max-batch", "4"])
    try:
        serve_round(info, 4, 8, 0)  # warm-up: the first steps make the transposed weight copies
        one, four, cli, ttfts, cpu1, cpu4 = [], [], [], [], [], []
        for i in range(rounds):  # interleaved, each side its median
            rate, _, cpu = serve_round(info, 1, n, 10 * i)
            one.append(rate)
            cpu1.append(cpu)
            rate, ttft, cpu = serve_round(info, 4, n, 10 * i)
            four.append(rate)
            cpu4.append(cpu)
            ttfts += ttft
            cli.append(cli_generate_rate(run_dir, n))
    finally:
        if server_info(run_dir) is not None:
            stop_server(run_dir)
    p95 = sorted(ttfts)[max(0, math.ceil(0.95 * len(ttfts)) - 1)]
    note = (f"{name}, random weights, {n} tokens a stream, median of {rounds} rounds; server CPU "
            f"{_median(cpu4):.1f} ms a token with 4 streams, {_median(cpu1):.1f} with 1")
    return [Row("serve tokens/s, 4 streams vs 1", _median(four), _median(one), "tok/s", ">= 2.5x",
                _median(four) >= 2.5 * _median(one), note),
            Row("serve time to first token p95, 4 streams", p95, None, "s", "<= 1 s", p95 <= 1.0,
                f"{len(ttfts)} streams"),
            Row("serve 1 stream vs `smallgpt generate`", _median(one), _median(cli), "tok/s", ">= 0.9x",
                _median(one) >= 0.9 * _median(cli), "the CLI's own tokens/s; ours at the client, HTTP included")]


# --- rows: memory -----------------------------------------------------------------------------------
def rows_memory(b: Bench) -> list[Row]:
    run = b.trained_run(b.s.big)
    total = run["params"]["total"]
    state_bytes = total * 4 * 3  # fp32 weights + AdamW's exp_avg and exp_avg_sq
    rss = run["peak_rss"]
    return [Row(f"peak RSS {b.s.big} training", rss / MB, state_bytes / MB, "MB", "<= 3x + 300 MB",
                rss <= 3 * state_bytes + 300 * MB, f"{total / 1e6:.1f}M params; the whole process, torch included")]


ROWS: dict[str, Callable[[Bench], list[Row]]] = {"train": rows_train, "quality": rows_quality,
                                                 "decode": rows_decode, "int8": rows_int8, "ui": rows_ui,
                                                 "memory": rows_memory, "gpt2": rows_gpt2, "serve": rows_serve}


# --- output -----------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def table(rows: list[Row]) -> str:
    """A Markdown table: it prints readably and pastes into docs/PERFORMANCE.md as is."""
    head = ["row", "ours", "baseline", "unit", "ratio", "target", "met", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r.ok]
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        lines.append(f"| {r.name} | {_fmt(r.ours)} | {_fmt(r.base)} | {r.unit} | {ratio} | {r.target} | {met} | {r.note} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    flags = set()
    try:
        flags = set(next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "isa": sorted(flags & {"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"}),
            "load_average": os.getloadavg()}


def run(groups: list[str], settings: Settings, home: Path | None = None) -> dict[str, Any]:
    """Measure the row groups; returns {"machine", "settings", "rows", "seconds"}. A group that fails
    becomes one row saying why, so one broken measurement does not lose the table."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smallgpt-bench-") as tmp:
        old = {k: os.environ.get(k) for k in ("SMALLGPT_HOME", "SMALLGPT_BUILTIN_CACHE")}
        # Runs and encoded data go to a scratch home; the built-in corpus is extracted once, where the
        # app keeps it, unless the caller (the tests) points elsewhere.
        os.environ.setdefault("SMALLGPT_BUILTIN_CACHE", str(ROOT / "corpora" / "cache" / "builtin"))
        os.environ["SMALLGPT_HOME"] = str(home or tmp)
        try:
            bench = Bench(settings, Path(home or tmp))
            rows: list[Row] = []
            for g in groups:
                g0 = time.perf_counter()
                try:
                    rows += ROWS[g](bench)
                except Exception as e:  # noqa: BLE001  (reported in the table, with its type)
                    rows.append(Row(f"{g} (failed)", None, None, "", "", False, f"{type(e).__name__}: {e}"[:200]))
                print(f"  {g}: {time.perf_counter() - g0:.0f} s", file=sys.stderr, flush=True)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return {"machine": machine(), "settings": asdict(settings), "rows": [asdict(r) for r in rows],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes and few steps: a smoke run (~2 min)")
    p.add_argument("--rows", default=",".join(ROW_GROUPS), help=f"comma-separated groups of {', '.join(ROW_GROUPS)}")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    p.add_argument("--quality-corpora", default="python-docs",
                   help="comma-separated corpora of the quality row (e.g. python-docs,python-code)")
    p.add_argument("--quality-seeds", type=int, default=1, help="seeds per corpus in the quality row (median)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    args = p.parse_args(argv)
    groups = [g.strip() for g in args.rows.split(",") if g.strip()]
    unknown = [g for g in groups if g not in ROWS]
    if unknown:
        p.error(f"unknown row group(s) {', '.join(unknown)}: choose from {', '.join(ROW_GROUPS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings.make(args.quick)
    settings.quality_corpora = tuple(c.strip() for c in args.quality_corpora.split(",") if c.strip())
    settings.quality_seeds = args.quality_seeds
    results = run(groups, settings)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    if args.json:
        print(json.dumps(results, default=str))
    else:
        m = results["machine"]
        print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
              f"{' '.join(m['isa'])}; load {m['load_average'][0]:.1f}; {results['seconds']:.0f} s"
              f"{' (quick)' if args.quick else ''}\n")
        print(table([Row(**r) for r in results["rows"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
