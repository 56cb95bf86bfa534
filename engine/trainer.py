"""The training loop of a run: `train(run_dir, resume=False, on_event=None) -> summary`.

AdamW (decay on 2-D weights only) or Muon on the blocks' matrices with AdamW on the rest, linear warmup
then cosine decay to min_lr (or warmup-stable-decay), gradient clipping and
accumulation, bf16 autocast where the hardware has it, optional torch.compile, evals on fixed batches,
samples, checkpoints latest + best, exact resume, clean stop on SIGINT/SIGTERM, DDP under torchrun.

The hot loop stays lean: the loss is accumulated on the device and read (.item(), a sync on GPUs) only
at log, eval and stop points; nothing else per step beyond the optimizer's own work.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from .config import RunConfig
from .errors import CheckpointError, ConfigError, RunError, SmallGPTError
from .events import EventWriter, read_events, sanitize
from .inspection import heads_event
from .lora import frozen_base_to, trainable_counts
from .models import count_params
from .process import FreeCores, pick_device, pick_dtype, torch_threads
from .rundir import RunDir
from .runs import hold_lock, install_tokenizer
from .tasks import make_task
from .tokenizer import Tokenizer

log = logging.getLogger("engine.trainer")

EventCallback = Callable[[dict[str, Any]], None]
EVAL_SEED = 4321  # the fixed eval batches are drawn with their own generator, the same every eval


@dataclass
class Dist:
    """Where this process sits in a torchrun job; rank 0 of world 1 outside one."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   world_size=int(os.environ.get("WORLD_SIZE", 1)))


def train(run_dir: Path, resume: bool = False, on_event: EventCallback | None = None) -> dict[str, Any]:
    """Train the run in run_dir (from RUN/config.toml) to max_steps or until stopped; return a summary.

    Only rank 0 holds the run lock and writes events, train.log and checkpoints; other ranks train.
    """
    rd = RunDir(run_dir)
    if not rd.is_run():
        raise RunError(f"{rd.path} is not a run directory (no {rd.config.name}): create it with `smallgpt train`.")
    RunConfig.load(rd.config).validate()  # a broken config fails at once, before the lock and events
    dist = Dist.from_env()
    if not dist.main:
        return _Trainer(rd, resume, None, dist).run()
    with hold_lock(rd.path), _file_log(rd.log):
        return _Trainer(rd, resume, on_event, dist).run()


def lr_at(step: int, cfg_lr: float, min_lr: float, warmup: int, max_steps: int, schedule: str = "cosine",
          cooldown: float = 0.2) -> float:
    """Linear warmup to lr over `warmup` steps, then cosine decay to min_lr at max_steps; or (wsd) lr held
    until the last `cooldown` share of max_steps, which decays linearly to min_lr."""
    if step < warmup:
        return cfg_lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    if schedule == "wsd":
        decay_from = max(warmup, max_steps - cooldown * max_steps)
        return cfg_lr + (min_lr - cfg_lr) * max(0.0, step - decay_from) / max(1.0, max_steps - decay_from)
    progress = (step - warmup) / max(1, max_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg_lr - min_lr)


class Chained:
    """Optimizers stepped as one, with one state_dict whose parameter ids run on across them (a
    checkpoint's optimizer file and resume treat it as a single optimizer)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for o in self.optimizers:
            sd = o.state_dict()
            state.update({offset + i: v for i, v in sd["state"].items()})
            groups += [{**g, "params": [offset + i for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        groups = iter(sd["param_groups"])
        offset = 0
        for o in self.optimizers:
            mine = [next(groups) for _ in o.param_groups]
            n = sum(len(g["params"]) for g in mine)
            o.load_state_dict({"state": {i - offset: v for i, v in sd["state"].items() if offset <= i < offset + n},
                               "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in mine]})
            offset += n


# torch.optim.Muon is in torch >= 2.9; with an older torch, runs train with AdamW only (make_optimizer says so).
if hasattr(torch.optim, "Muon"):
    from torch.optim._muon import _adjust_lr

    class Muon(torch.optim.Muon):
        """torch.optim.Muon's update, hyper-parameters and state, with Newton-Schulz run once per group of
        same-shape matrices (batched bf16 matmuls) instead of once per matrix: on a CPU, torch's loop over
        small matrices (with a copy for each transposed one) took 1.5x as long for `tiny`."""

        @torch.no_grad()
        def step(self, closure: Callable[[], Any] | None = None) -> Any:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params: list[torch.Tensor] = []
                grads: list[torch.Tensor] = []
                bufs: list[torch.Tensor] = []
                self._init_group(group, params, grads, bufs)
                if not params:
                    continue
                lr, momentum = float(group["lr"]), group["momentum"]
                torch._foreach_lerp_(bufs, grads, 1 - momentum)
                updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
                shapes: dict[torch.Size, list[int]] = {}
                for i, p in enumerate(params):
                    shapes.setdefault(p.shape, []).append(i)
                for shape, idx in shapes.items():
                    ortho = _newton_schulz(torch.stack([updates[i] for i in idx]), group["ns_coefficients"],
                                           group["ns_steps"], group["eps"])
                    adjusted = _adjust_lr(lr, group["adjust_lr_fn"], shape)
                    torch._foreach_add_([params[i] for i in idx], list(ortho.unbind(0)), alpha=-adjusted)
            return loss
else:
    Muon = None


def _newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """torch.optim.Muon's orthogonalisation (its `_zeropower_via_newtonschulz`) of a stack g [n, rows, cols]."""
    a, b, c = coefficients
    tall = g.size(1) > g.size(2)
    x = (g.mT if tall else g).to(torch.bfloat16, memory_format=torch.contiguous_format)
    x.div_(torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True).clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def split_for_muon(model: nn.Module, cfg: RunConfig) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the trainable parameters Muon steps, the ones AdamW steps): with optimizer muon, the blocks' 2-D
    matrices go to Muon; embeddings, the head, biases and norms (and everything with adamw) to AdamW."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon = [p for n, p in named if cfg.train.optimizer == "muon" and p.dim() == 2 and ".h." in f".{n}"]
    return muon, [p for n, p in named if not any(p is q for q in muon)]


def make_optimizer(model: nn.Module, cfg: RunConfig, device: str) -> torch.optim.Optimizer | Chained:
    """AdamW; weight decay on 2-D weights (matmuls, embeddings) only, never on biases and norms. With
    optimizer muon, the blocks' matrices go to Muon (orthogonalised momentum, at muon_lr) instead."""
    t = cfg.train
    muon, rest = split_for_muon(model, cfg)
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    fast = {"fused": True} if device in ("cuda", "cpu", "mps") else {"foreach": True}
    try:
        adamw = torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), **fast)
    except (RuntimeError, TypeError):  # an older torch or device without the fused kernel
        adamw = torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), foreach=True)
    if not muon:
        return adamw
    if Muon is None:
        raise ConfigError(f"optimizer = \"muon\" needs torch 2.9 or newer (this is {torch.__version__}): "
                          "upgrade torch, or train with --optimizer adamw.")
    return Chained(adamw, Muon(muon, lr=t.muon_lr, weight_decay=t.weight_decay))


def set_lr(optimizer: torch.optim.Optimizer | Chained, factor: float, cfg: RunConfig) -> None:
    """Every group at its optimizer's peak learning rate (lr; Muon: muon_lr) times the schedule's factor."""
    for o in getattr(optimizer, "optimizers", (optimizer,)):
        peak = cfg.train.lr if isinstance(o, torch.optim.AdamW) else cfg.train.muon_lr
        for group in o.param_groups:
            group["lr"] = peak * factor


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():  # signals only install there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: the user wants out now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _Trainer:
    """One training session of a run: set-up (`_setup`), then the loop (`_loop`) with its evals, samples
    and checkpoints."""

    def __init__(self, rd: RunDir, resume: bool, on_event: EventCallback | None, dist: Dist):
        self.rd = rd
        self.resume = resume
        self.on_event = on_event
        self.dist = dist
        self.writer: EventWriter | None = None
        self.step = 0

    # --- events -----------------------------------------------------------------------------------
    def emit(self, kind: str, /, **fields: Any) -> None:  # positional-only: a `kind=` field is allowed
        if self.writer is None:
            return
        record = self.writer.emit(kind, self.step, **fields)
        if self.on_event is not None:
            self.on_event(record)

    def run(self) -> dict[str, Any]:
        try:
            state = self._setup()
            result = self._loop(state)
            if self.dist.world_size > 1:  # no rank tears gloo down while another still talks to it (an
                torch.distributed.barrier()  # abort at exit, "terminate called without an active exception")
            return result
        except Exception as e:
            log.exception("training failed at step %d", self.step)
            message = str(e) if isinstance(e, SmallGPTError) else f"{type(e).__name__}: {e}"
            self.emit("error", message=message)
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.dist.world_size > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    # --- set-up -----------------------------------------------------------------------------------
    def _setup(self) -> dict[str, Any] | None:
        """Everything before the first step; returns the resumed checkpoint's state.json (None: fresh)."""
        rd, dist = self.rd, self.dist
        run_dir = rd.path
        self.cfg = cfg = RunConfig.load(rd.config).validate()
        latest = ckpt.checkpoint_dir(run_dir, "latest")
        if latest is not None and not self.resume:
            step = ckpt.read_state(latest)["step"]
            raise RunError(f"Run {run_dir} already has a checkpoint at step {step}: "
                           f"continue it with --resume or start a new run.")
        state: dict[str, Any] | None = ckpt.read_state(latest) if (self.resume and latest is not None) else None
        if state is not None:  # refused before any event: a mistaken resume must not mark the run failed
            ckpt.check_model_config(state.get("model_config", {}), asdict(cfg.model), run_dir)
            if state["step"] >= cfg.train.max_steps:
                raise RunError(f"Run {run_dir} already reached max_steps {cfg.train.max_steps}: "
                               f"raise --max-steps to train it further.")
        if dist.world_size > 1:
            self._init_distributed(cfg)

        if dist.world_size > 1 and not dist.main:
            torch.distributed.barrier()  # rank 0 installs the tokenizer and encodes the dataset first
        if rd.tokenizer.is_file():
            tokenizer = Tokenizer.load(rd.tokenizer)
        elif dist.main and state is None:
            tokenizer = install_tokenizer(run_dir, cfg)
        else:
            raise RunError(f"Run {run_dir} has no {rd.tokenizer.name}: copy the tokenizer it was trained with there.")
        if cfg.model.vocab_size == 0:
            cfg.model.vocab_size = tokenizer.vocab_size
        if tokenizer.vocab_size != cfg.model.vocab_size:
            raise CheckpointError(
                f"The tokenizer {rd.tokenizer} has {tokenizer.vocab_size} tokens but the run's model has "
                f"{cfg.model.vocab_size}: restore the tokenizer.json the run was created with.")
        self.tokenizer = tokenizer
        if dist.main:
            if state is None:  # a fresh start: the events of earlier attempts describe nothing kept
                rd.events.unlink(missing_ok=True)
            self.writer = EventWriter(run_dir, time_offset=self._time_offset(state))

        self.task = make_task(cfg, tokenizer, run_dir)  # lm: the corpus encoded; classify/instruct: records
        if dist.world_size > 1 and dist.main:
            torch.distributed.barrier()

        device = pick_device(cfg.train.device)
        if device == "cuda" and dist.world_size > 1:
            device = f"cuda:{dist.local_rank}"
            torch.cuda.set_device(device)
        self.device, self.dev_type = device, device.split(":")[0]
        self.dtype = pick_dtype(cfg.train.dtype, self.dev_type)
        if self.dev_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(cfg.train.seed)
        self.model = ckpt.build_for_training(cfg, fresh=state is None).to(device)
        if self.dtype == "bf16":
            frozen_base_to(self.model, torch.bfloat16)  # LoRA: the base never updates, bf16 is all it needs
        self.optimizer = make_optimizer(self.model, cfg, self.dev_type)
        # Each rank draws its own batches: seeds differ by rank, like a DistributedSampler's shards.
        self.gen = torch.Generator().manual_seed(cfg.train.seed + 7919 * dist.rank)
        self.best_val = math.inf
        if state is not None:
            ckpt.load_training_state(run_dir, self.model, self.optimizer, device)
            self.step = int(state["step"])
            self.best_val = float(state.get("best_val_loss") or math.inf)
            torch.set_rng_state(ckpt.decode_bytes(state["rng"]))
            if self.dev_type == "cuda" and state.get("cuda_rng"):
                torch.cuda.set_rng_state(ckpt.decode_bytes(state["cuda_rng"]))
            gens = state.get("data_rng") or []
            if len(gens) == dist.world_size:
                self.gen.set_state(ckpt.decode_bytes(gens[dist.rank]))
            else:  # a different world size: the data order cannot be exact, but stays seeded
                self.gen.manual_seed(cfg.train.seed + 7919 * dist.rank + 104729 * self.step)
                log.warning("world size changed on resume; data order reseeded")

        t = cfg.train
        self.params = count_params(self.model)
        trainable = trainable_counts(self.model)
        self.tokens_seen = int(state.get("tokens_seen", 0)) if state else 0
        self.last_eval: dict[str, float] = {}
        self.train_time = 0.0
        self.trained_tokens = 0
        self.emit("start", config=cfg.to_dict(), params=self.params, device=device, dtype=self.dtype,
                  resumed_from=self.step if state is not None else None, world_size=dist.world_size,
                  tokens_per_step=t.batch_size * cfg.model.block_size * t.grad_accum * dist.world_size,
                  task=cfg.task.kind, init_from=cfg.task.init_from,
                  init_source=ckpt.init_source(cfg.task.init_from) if cfg.task.init_from and state is None else None,
                  trainable=trainable, **self.task.start_fields())
        log.info("start: step %d/%d, %s params (%d trainable), %s %s%s", self.step, t.max_steps, self.params,
                 trainable["trainable"], device, self.dtype, " (resumed)" if state is not None else "")
        self.net = self._wrap(self.model)
        eval_gen = torch.Generator().manual_seed(EVAL_SEED)
        # Pre-drawn: every eval sees exactly the same batches, so successive evals are comparable.
        self.eval_sets = self.task.eval_sets(t.batch_size, t.eval_batches, eval_gen)
        return state

    def _time_offset(self, state: dict[str, Any] | None) -> float:
        """Seconds the run had already run: `time` keeps counting across resumes."""
        if state is None:
            return 0.0
        events = read_events(self.rd.path)
        return max([float(state.get("time", 0.0))] + [float(e.get("time") or 0.0) for e in events[-1:]])

    def _init_distributed(self, cfg: RunConfig) -> None:
        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.train.device in ("auto", "cuda") else "gloo"
            torch.distributed.init_process_group(backend=backend)

    def _wrap(self, model: nn.Module) -> nn.Module:
        net = model
        if self.dist.world_size > 1:
            net = DistributedDataParallel(model, device_ids=[self.dist.local_rank] if self.dev_type == "cuda" else None)
        if self.cfg.train.compile:
            net = torch.compile(net)
        return net

    def autocast(self) -> Any:
        if self.dtype == "bf16":
            return torch.autocast(device_type=self.dev_type, dtype=torch.bfloat16)
        return nullcontext()

    # --- the loop ---------------------------------------------------------------------------------
    def _loop(self, state: dict[str, Any] | None) -> dict[str, Any]:
        t = self.cfg.train
        ddp = self.dist.world_size > 1
        reason = "max_steps"
        loss_sum = torch.zeros((), device=self.device)
        n_loss = 0
        window_t0, window_steps, window_tokens = time.perf_counter(), 0, 0
        free_cores = FreeCores(torch.get_num_threads()) if self.dev_type == "cpu" else None
        self.model.train()
        # torch_threads(): the thread count FreeCores changes is restored after (train() may run in-process).
        with _Stop() as stop, torch_threads():
            while self.step < t.max_steps:
                lr = lr_at(self.step, t.lr, t.min_lr, t.warmup_steps, t.max_steps, t.schedule, t.cooldown)
                set_lr(self.optimizer, lr / t.lr, self.cfg)
                step_tokens = 0
                for micro in range(t.grad_accum):
                    batch = [b.to(self.device, non_blocking=True) for b in self.task.train_batch(t.batch_size, self.gen)]
                    step_tokens += batch[0].numel() * self.dist.world_size
                    # DDP: all-reduce gradients only on the last micro-step of an accumulation.
                    sync = self.net.no_sync() if ddp and micro < t.grad_accum - 1 else nullcontext()
                    with sync:
                        with self.autocast():  # the forward only: backward runs in the dtypes autocast chose
                            _, loss = self.net(*batch)
                        (loss / t.grad_accum).backward()
                    loss_sum += loss.detach()
                n_loss += t.grad_accum
                if t.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.tokens_seen += step_tokens
                window_steps += 1
                window_tokens += step_tokens

                stopping = self._stop_agreed(stop.requested) if ddp else stop.requested
                at_log = self.step % t.log_interval == 0 or self.step == t.max_steps or stopping
                at_eval = self.step % t.eval_interval == 0 or self.step == t.max_steps
                if at_log and n_loss:
                    if ddp:  # log the mean over ranks; a NaN on any rank stops every rank at the same step
                        torch.distributed.all_reduce(loss_sum)
                        loss_sum /= self.dist.world_size
                    loss = loss_sum.item() / n_loss  # the one sync per log interval
                    loss_sum.zero_()
                    n_loss = 0
                    elapsed = time.perf_counter() - window_t0
                    self.train_time += elapsed
                    self.trained_tokens += window_tokens
                    self._check_finite(loss)
                    tps = window_tokens / max(elapsed, 1e-9)
                    eta = (t.max_steps - self.step) * elapsed / window_steps
                    self.emit("step", loss=loss, lr=lr, tokens_per_s=round(tps, 1), tokens_seen=self.tokens_seen,
                              eta_s=round(eta, 1))
                    self._fit_threads(free_cores)
                    window_t0, window_steps, window_tokens = time.perf_counter(), 0, 0
                if at_eval:
                    paused = time.perf_counter()
                    self._evaluate()
                    window_t0 += time.perf_counter() - paused  # evals do not count as training time
                if stopping:
                    reason = "stopped"
                    if not at_eval:  # an eval just saved latest at this very step
                        self._checkpoint(best=False)
                    break
        if self.dist.main and reason == "max_steps":
            self._report()
        self.emit("done", reason=reason, tokens_seen=self.tokens_seen)
        log.info("done (%s) at step %d", reason, self.step)
        return self.summary(reason)

    @staticmethod
    def _fit_threads(free_cores: FreeCores | None) -> None:
        """On a CPU shared with busy processes, train on the cores they leave free (FreeCores)."""
        if free_cores is None:
            return
        threads = free_cores.threads()
        if threads is not None and threads != torch.get_num_threads():
            log.info("training on %d thread(s): other processes use %.1f of the %d cores",
                     threads, free_cores.others, free_cores.cores)
            torch.set_num_threads(threads)

    def _stop_agreed(self, requested: bool) -> bool:
        """Under DDP every rank must stop at the same step, whichever rank got the signal."""
        flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise RunError(f"The training loss became {loss} at step {self.step}: lower --lr or raise "
                           f"--warmup-steps and resume; the last good checkpoint is kept.")

    # --- evaluation, samples, checkpoints -----------------------------------------------------------
    @torch.no_grad()
    def loss_on(self, batches: list[tuple[torch.Tensor, ...]]) -> float:
        total = torch.zeros((), device=self.device)
        for batch in batches:
            with self.autocast():
                _, loss = self.model(*[b.to(self.device) for b in batch])
            total += loss.float()
        return total.item() / len(batches)

    def _evaluate(self) -> None:
        if not self.dist.main:
            self._checkpoint(best=False)  # only to take part in gathering every rank's data position
            return
        # Evals and samples use their own RNG streams, so training continues exactly as without them.
        with torch.random.fork_rng(devices=[self.device] if self.dev_type == "cuda" else []):
            self.model.eval()
            val_loss = self.loss_on(self.eval_sets["val"])
            train_loss = self.loss_on(self.eval_sets["train"])
            self._check_finite(val_loss)
            self.last_eval = {"train_loss": train_loss, "val_loss": val_loss}
            self.emit("eval", train_loss=train_loss, val_loss=val_loss,
                      val_perplexity=sanitize(math.exp(min(val_loss, 700.0))), **self.task.eval_fields(self.model))
            text = self.task.sample(self.model, self.cfg.train.sample_tokens) if self.cfg.train.sample_tokens else None
            if text is not None:
                self.emit("sample", text=text)
            # Per layer and head metrics of the GPT on a fixed probe (one validation window); None for an LSTM.
            heads = heads_event(self.model, self.eval_sets["val"][0][0][:1])
            if heads is not None:
                self.emit("heads", **heads)
            self.model.train()
        improved = val_loss < self.best_val
        if improved:
            self.best_val = val_loss
        self._checkpoint(best=improved)

    def _report(self) -> None:
        """The task's final report (a classifier's metrics on val and test), from the model as trained."""
        with torch.random.fork_rng(devices=[self.device] if self.dev_type == "cuda" else []):
            self.model.eval()
            report = self.task.report(self.model)
            self.model.train()
        if report is not None:
            self.emit("report", **report)

    def _checkpoint(self, best: bool) -> None:
        """Write latest (and best). Under DDP every rank calls it: the gather is collective."""
        data_rng = [ckpt.encode_bytes(self.gen.get_state())]
        if self.dist.world_size > 1:  # every rank's data position, so a resume is exact for all of them
            gathered: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, data_rng[0])
            data_rng = gathered
        if not self.dist.main:
            return
        for which in ("latest", "best") if best else ("latest",):
            self._save(which, data_rng)

    def _save(self, which: str, data_rng: list[str]) -> None:
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "best_val_loss": sanitize(self.best_val),
                 "time": self.writer.elapsed() if self.writer else 0.0,
                 "rng": ckpt.encode_bytes(torch.get_rng_state()), "data_rng": data_rng,
                 "model_config": asdict(self.cfg.model),
                 "cuda_rng": ckpt.encode_bytes(torch.cuda.get_rng_state()) if self.dev_type == "cuda" else None,
                 **self.last_eval}
        path = ckpt.save_checkpoint(self.rd.path, which, self.model, self.optimizer, state)
        self.emit("checkpoint", path=str(path), kind=which)

    def summary(self, reason: str) -> dict[str, Any]:
        return {"run_dir": str(self.rd.path), "steps": self.step, "reason": reason,
                "train_loss": self.last_eval.get("train_loss"), "val_loss": self.last_eval.get("val_loss"),
                "best_val_loss": sanitize(self.best_val),
                "tokens_per_s": round(self.trained_tokens / self.train_time, 1) if self.train_time else None,
                "tokens_seen": self.tokens_seen, "params": self.params["total"], "device": self.device,
                "dtype": self.dtype}


@contextmanager
def _file_log(path: Path) -> Iterator[None]:
    """Send engine.* logging to RUN/train.log while the run trains (foreground or detached alike)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("engine")
    logger.addHandler(handler)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
