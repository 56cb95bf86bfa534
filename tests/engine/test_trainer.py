"""The trainer: it learns, resumes exactly, stops cleanly, refuses what it cannot do with one sentence."""

from __future__ import annotations

import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from engine import checkpoint as ckpt
from engine import runs
from engine import trainer as trainer_module
from engine.config import RunConfig, apply_overrides, preset
from engine.corpora import load_corpus
from engine.dataset import TokenDataset, prepare_dataset
from engine.errors import CheckpointError, ConfigError, RunError
from engine.events import read_events
from engine.trainer import lr_at, train

# Small enough for seconds per run on a shared 2-core CPU, big enough to learn something.
SMALL = {"model": dict(n_layer=2, n_head=2, n_embd=32, block_size=32),
         "train": dict(batch_size=8, max_steps=12, warmup_steps=3, eval_interval=4, eval_batches=2,
                       log_interval=1, sample_tokens=16)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core CPU train faster, and steadier, on one thread (no spin-waiting on
    a core another process holds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_run(corpus: Path, name: str = "r", **over: dict) -> Path:
    tables = {t: {**SMALL.get(t, {}), **over.get(t, {})} for t in ("model", "data", "train")}
    tables["data"] = {"corpus": str(corpus), "tokenizer_kind": "char", **tables["data"]}
    return runs.create_run(apply_overrides(preset(over.pop("preset", "tiny") if "preset" in over else "tiny"),
                                           tables), name=name)


def losses(run_dir: Path, kind: str = "step", key: str = "loss") -> dict[int, float]:
    return {e["step"]: e[key] for e in read_events(run_dir) if e["event"] == kind}


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    lrs = [lr_at(s, 1.0, 0.1, 10, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(0.1)


def test_wsd_schedule_holds_the_peak_then_decays_linearly_over_the_cooldown():
    lrs = [lr_at(s, 1.0, 0.1, 10, 100, "wsd", 0.2) for s in range(101)]
    assert lrs[9] == pytest.approx(1.0) and lrs[10:81] == [pytest.approx(1.0)] * 71
    assert lrs[90] == pytest.approx(0.55) and lrs[100] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))


def test_our_muon_updates_as_torch_muon_does():
    """The batched Newton-Schulz changes only the order of work: tall, wide and square matrices, several
    of a shape, Nesterov on and off, land where torch.optim.Muon puts them (up to bf16 rounding in the
    matmuls: a wrong rule moves a weight by ~lr, the bound is 1% of that)."""
    from engine.trainer import Muon

    shapes = [(48, 16), (16, 16), (48, 16), (16, 48), (16, 16)]
    torch.manual_seed(0)
    start = [torch.randn(s) * 0.1 for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]

    def trained(cls: type) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = cls([{"params": params[:3]}, {"params": params[3:], "nesterov": False, "lr": 0.02}],
                  lr=0.05, weight_decay=0.1)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        return params, opt

    ours, our_opt = trained(Muon)
    ref, ref_opt = trained(torch.optim.Muon)
    for a, b, p0 in zip(ours, ref, start):
        assert (b - p0).abs().max() > 0.01  # each moved by several lr-sized steps
        torch.testing.assert_close(a, b, rtol=0, atol=5e-4)
        assert torch.equal(our_opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"])


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest_in_one_resumable_state():
    from engine.config import ModelConfig
    from engine.models import build_model
    from engine.trainer import Chained, make_optimizer, set_lr

    cfg = apply_overrides(preset("tiny"), {"model": dict(vocab_size=20, n_layer=2, n_embd=32, n_head=2,
                                                         block_size=16, tie_head=False),
                                           "train": dict(optimizer="muon", lr=1e-3, muon_lr=0.05)})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = make_optimizer(model, cfg, "cpu")
    assert isinstance(opt, Chained)
    adamw, muon = opt.optimizers
    names = {p: n for n, p in model.named_parameters()}
    in_muon = {names[p] for g in muon.param_groups for p in g["params"]}
    assert in_muon == {n for n, p in model.named_parameters() if ".h." in n and p.dim() == 2}
    assert len(in_muon) == 8  # c_attn, attn c_proj, c_fc, mlp c_proj of 2 blocks
    assert {names[p] for g in adamw.param_groups for p in g["params"]} == set(names.values()) - in_muon
    set_lr(opt, 0.5, cfg)
    assert {g["lr"] for g in adamw.param_groups} == {5e-4} and {g["lr"] for g in muon.param_groups} == {0.025}

    def steps(o: Chained, n: int) -> None:
        g = torch.Generator().manual_seed(1)
        for _ in range(n):
            x = torch.randint(0, 20, (4, 16), generator=g)
            model(x, x)[1].backward()
            o.step()
            o.zero_grad()

    steps(opt, 3)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    restored = make_optimizer(model, cfg, "cpu")
    tensors, meta = ckpt._flatten_optimizer(opt.state_dict())  # the checkpoint's own round trip
    restored.load_state_dict(ckpt._unflatten_optimizer({k: v.clone() for k, v in tensors.items()}, meta))
    steps(opt, 2)
    after_original = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(saved)
    steps(restored, 2)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, after_original[k], atol=0, rtol=0)


def test_run_directory_and_events(home, small_corpus):
    seen: list[str] = []
    run_dir = make_run(small_corpus)
    summary = train(run_dir, on_event=lambda e: seen.append(e["event"]))
    assert {p.name for p in run_dir.iterdir()} >= {"config.toml", "tokenizer.json", "events.jsonl", "train.log",
                                                    "run.lock", "ckpt"}
    assert not (run_dir / "pid").exists() and not runs.is_running(run_dir)
    assert {p.name for p in (run_dir / "ckpt").iterdir()} == {"latest", "best"}
    events = read_events(run_dir)
    assert [e["event"] for e in events] == seen
    assert seen[0] == "start" and seen[-1] == "done" and events[-1]["reason"] == "max_steps"
    assert seen.count("eval") == 3 and seen.count("sample") == 3 and seen.count("step") == 12
    start = events[0]
    assert start["params"]["total"] > 0 and start["device"] == "cpu" and start["resumed_from"] is None
    assert start["config"]["model"]["vocab_size"] == RunConfig.load(run_dir / "config.toml").model.vocab_size
    step = next(e for e in events if e["event"] == "step")
    assert {"loss", "lr", "tokens_per_s", "tokens_seen", "eta_s", "time", "wall"} <= set(step)
    ev = next(e for e in events if e["event"] == "eval")
    assert ev["val_perplexity"] == pytest.approx(math.exp(ev["val_loss"]))
    last_eval = [e for e in events if e["event"] == "eval"][-1]
    assert summary["steps"] == 12 and summary["val_loss"] == last_eval["val_loss"] and last_eval["step"] == 12
    assert "start: step 0/12" in (run_dir / "train.log").read_text()
    # The checkpoint loads back into a model that gives the logged losses on the eval's fixed batches (drawn
    # from their own seed: val first, then train).
    model, cfg, tok = ckpt.load_model(run_dir, "latest")
    assert cfg.model.vocab_size == tok.vocab_size and not model.training
    data_dir = prepare_dataset(load_corpus(cfg.data.corpus), tok, val_ratio=cfg.data.val_ratio)
    eval_gen = torch.Generator().manual_seed(trainer_module.EVAL_SEED)
    for split, key in (("val", "val_loss"), ("train", "train_loss")):
        ds = TokenDataset(data_dir, split)
        batches = [ds.get_batch(cfg.train.batch_size, cfg.model.block_size, eval_gen)
                   for _ in range(cfg.train.eval_batches)]
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=start["dtype"] == "bf16"):
            reloaded = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
        assert reloaded == pytest.approx(last_eval[key], rel=1e-6), split
    assert runs.run_info(run_dir).status == "finished"


def test_the_trainer_gives_up_threads_to_busy_processes(home, small_corpus, monkeypatch):
    class Crowded:  # FreeCores on 2 cores, another process busy on one of them
        cores, others = 2, 1.0

        def __init__(self, threads: int):
            assert threads == 2  # what torch had when training started

        def threads(self) -> int:
            return 1

    monkeypatch.setattr(trainer_module, "FreeCores", Crowded)
    torch.set_num_threads(2)
    run_dir = make_run(small_corpus)
    threads: list[int] = []
    train(run_dir, on_event=lambda e: threads.append(torch.get_num_threads()) if e["event"] == "step" else None)
    assert threads[0] == 2 and set(threads[1:]) == {1}  # from the first log window on
    assert torch.get_num_threads() == 2  # restored: train() may run inside a longer-lived process
    assert "training on 1 thread(s): other processes use 1.0 of the 2 cores" in (run_dir / "train.log").read_text()


def test_evals_use_the_same_batches_every_time(home, small_corpus):
    """Evals are on pre-drawn fixed batches: with the weights barely moving (lr ~ 0), two evals agree."""
    run_dir = make_run(small_corpus, train=dict(max_steps=8, eval_interval=4, lr=1e-9, muon_lr=1e-9, min_lr=0.0,
                                                warmup_steps=0))
    train(run_dir)
    evals = list(losses(run_dir, "eval", "val_loss").values())
    assert len(evals) == 2 and evals[0] == pytest.approx(evals[1], abs=1e-4)  # lr ~0: same weights, same batches


def test_best_is_replaced_only_when_val_loss_improves_and_eval_events_come_in_order(home, small_corpus, monkeypatch):
    # The val losses of the four evals are set (the real ones are computed, then replaced): worse at step 8,
    # better at 12, equal at 16 (equal is no improvement).
    scripted = iter([3.0, 4.0, 2.5, 2.5])
    real_loss_on = trainer_module._Trainer.loss_on

    def loss_on(loop, batches):
        real = real_loss_on(loop, batches)
        return next(scripted) if batches is loop.eval_sets["val"] else real

    monkeypatch.setattr(trainer_module._Trainer, "loss_on", loss_on)
    run_dir = make_run(small_corpus, train=dict(max_steps=16, eval_interval=4, log_interval=4))
    best_after: dict[int, int] = {}  # eval step -> the step of ckpt/best once that eval's checkpoints are written
    weights: dict[tuple[str, int], dict] = {}

    def watch(e: dict) -> None:
        if e["event"] == "checkpoint":
            best = ckpt.checkpoint_dir(run_dir, "best")
            best_after[e["step"]] = ckpt.read_state(best)["step"] if best else None
            weights[(e["kind"], e["step"])] = ckpt.load_model(run_dir, e["kind"])[0].state_dict()

    summary = train(run_dir, on_event=watch)
    assert best_after == {4: 4, 8: 4, 12: 12, 16: 12}
    assert summary["best_val_loss"] == 2.5
    best = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "best"))
    assert (best["step"], best["val_loss"], best["best_val_loss"]) == (12, 2.5, 2.5)
    model, _, _ = ckpt.load_model(run_dir, "best")  # best holds step 12's weights, not step 16's
    assert all(torch.equal(v, weights[("latest", 12)][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, weights[("latest", 16)][k]) for k, v in model.state_dict().items())
    # At each eval: eval, sample, heads, checkpoint latest, then checkpoint best only if it improved.
    events = read_events(run_dir)
    for step, improved in [(4, True), (8, False), (12, True), (16, False)]:
        at = [(e["event"], e.get("kind")) for e in events if e["step"] == step and e["event"] not in ("step", "done")]
        expected = [("eval", None), ("sample", None), ("heads", None), ("checkpoint", "latest")]
        assert at == expected + ([("checkpoint", "best")] if improved else []), step


def test_evals_leave_the_training_rng_untouched(home, small_corpus):
    """Dropout and batches draw from the training RNG; evals (and their samples) must not: a run that evaluates
    every 2 steps trains exactly like one that evaluates only at the end."""
    over = dict(model=dict(dropout=0.1), train=dict(max_steps=10, log_interval=1))
    often = make_run(small_corpus, "often", model=over["model"], train={**over["train"], "eval_interval": 2})
    once = make_run(small_corpus, "once", model=over["model"], train={**over["train"], "eval_interval": 10})
    train(often)
    train(once)
    assert len(losses(often, "eval", "val_loss")) == 5 and len(losses(once, "eval", "val_loss")) == 1
    assert losses(often) == losses(once)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(home, small_corpus, optimizer):
    over = dict(model=dict(dropout=0.1),  # dropout: RNG must resume too
                train=dict(max_steps=12, eval_interval=4, optimizer=optimizer))
    straight = make_run(small_corpus, "straight", **over)
    train(straight)

    interrupted = make_run(small_corpus, "interrupted", **over)

    def stop_at_6(e: dict) -> None:
        if e["event"] == "step" and e["step"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal path: finish the step, checkpoint, exit

    summary = train(interrupted, on_event=stop_at_6)
    assert summary["reason"] == "stopped" and summary["steps"] == 7
    events = read_events(interrupted)
    assert events[-1]["event"] == "done" and events[-1]["reason"] == "stopped"
    assert runs.run_info(interrupted).status == "stopped"
    resumed = train(interrupted, resume=True)
    assert resumed["reason"] == "max_steps" and resumed["steps"] == 12
    starts = [e for e in read_events(interrupted) if e["event"] == "start"]
    assert starts[-1]["resumed_from"] == 7
    a, b = losses(straight), losses(interrupted)
    assert [a[s] for s in range(8, 13)] == [b[s] for s in range(8, 13)]
    assert losses(straight, "eval", "val_loss") == losses(interrupted, "eval", "val_loss")
    # `time` keeps counting across the resume.
    times = [e["time"] for e in read_events(interrupted)]
    assert times == sorted(times)


def test_resume_refuses_a_changed_model_config(home, small_corpus):
    run_dir = make_run(small_corpus, train=dict(max_steps=4))
    train(run_dir)
    cfg = RunConfig.load(run_dir / "config.toml")
    cfg.model.n_embd = 64
    cfg.train.max_steps = 8
    cfg.save(run_dir / "config.toml")
    with pytest.raises(ConfigError, match=r"model config .* changed .*n_embd 32 -> 64"):
        train(run_dir, resume=True)
    assert runs.run_info(run_dir).status == "finished"  # a refused resume does not mark the run failed


def test_starting_over_a_checkpoint_needs_resume(home, small_corpus):
    run_dir = make_run(small_corpus, train=dict(max_steps=4))
    train(run_dir)
    with pytest.raises(RunError, match="already has a checkpoint at step 4.*--resume"):
        train(run_dir)
    with pytest.raises(RunError, match="already reached max_steps 4.*--max-steps"):
        train(run_dir, resume=True)
    assert runs.run_info(run_dir).status == "finished"  # neither refusal touched the run


def test_a_second_trainer_on_a_live_run_is_refused(home, small_corpus):
    run_dir = make_run(small_corpus)
    with runs.hold_lock(run_dir):  # as a live trainer holds it
        with pytest.raises(RunError, match="already being trained by another process"):
            train(run_dir, resume=True)


def test_non_finite_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint(home, small_corpus, monkeypatch):
    real_build = ckpt.build_model  # the trainer builds through checkpoint.build_for_training
    calls = {"n": 0}

    def poisoned(cfg):
        model = real_build(cfg)

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] > 6:  # from step 7 on the loss is NaN
                    return output[0], output[1] * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(ckpt, "build_model", poisoned)
    run_dir = make_run(small_corpus, train=dict(log_interval=2))
    with pytest.raises(RunError, match=r"loss became nan at step (\d+).*last good checkpoint is kept") as e:
        train(run_dir)
    # Found at some step from 7 on (the loss is read at log points), before anything of it was saved.
    found = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    assert 7 <= found <= 12
    events = read_events(run_dir)
    assert events[-1]["event"] == "error" and events[-1]["step"] == found and "nan" in events[-1]["message"]
    assert runs.run_info(run_dir).status == "failed"
    assert [c["step"] for c in events if c["event"] == "checkpoint"] == [4, 4]  # latest and best at step 4
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    assert state["step"] == 4  # the eval before the first NaN step
    model, _, _ = ckpt.load_model(run_dir, "latest")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_block_size_larger_than_the_validation_split(home, small_corpus):
    short = home / "short.txt"
    short.write_text(small_corpus.read_text()[:3000])
    run_dir = make_run(short, model=dict(block_size=512))
    with pytest.raises(ConfigError, match="block_size 512 needs at least 513 tokens but the validation split has"):
        train(run_dir)


def test_vocab_mismatch_between_tokenizer_and_checkpoint(home, small_corpus):
    from engine.tokenizer import train_tokenizer
    from engine.corpora import load_corpus

    run_dir = make_run(small_corpus, train=dict(max_steps=4))
    train(run_dir)
    other = train_tokenizer(load_corpus(str(small_corpus)), "word", 300)
    other.save(run_dir / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer .* has 300 tokens but the run's model was trained with"):
        ckpt.load_model(run_dir, "best")
    cfg = RunConfig.load(run_dir / "config.toml")
    cfg.train.max_steps = 8  # room to resume, so the tokenizer is what stops it
    cfg.save(run_dir / "config.toml")
    with pytest.raises(CheckpointError, match="has 300 tokens"):
        train(run_dir, resume=True)


def test_corrupt_checkpoint_is_named_on_load(home, small_corpus):
    run_dir = make_run(small_corpus, train=dict(max_steps=4))
    train(run_dir)
    path = run_dir / "ckpt" / "best" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(path)):
        ckpt.load_model(run_dir, "best")


def test_n_embd_must_divide_by_n_head(home, small_corpus):
    with pytest.raises(ConfigError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        make_run(small_corpus, model=dict(n_embd=30, n_head=4))


# Measured on python-docs (first 200 KB, char-level, vocab ~100, ln(vocab) ~ 4.6): the GPT ends at ~2.45 and
# the LSTM at ~2.2 (a character unigram model scores ~3.0), so these bounds leave a margin for thread timing.
@pytest.mark.slow
@pytest.mark.parametrize("model, lr, steps, bound", [
    (dict(kind="gpt", n_layer=2, n_head=2, n_embd=64, block_size=32), 3e-3, 250, 2.65),
    (dict(kind="lstm", n_layer=1, n_head=1, n_embd=128, block_size=32), 1e-2, 200, 2.45),
    # Muon on the blocks' matrices: the same GPT and steps, held to a tighter bound.
    (dict(kind="gpt", n_layer=2, n_head=2, n_embd=64, block_size=32, optimizer="muon"), 3e-3, 250, 2.4),
])
def test_tiny_models_learn(home, small_corpus, model, lr, steps, bound):
    optimizer = model.pop("optimizer", "adamw")
    run_dir = make_run(small_corpus, model=model, train=dict(max_steps=steps, batch_size=16, lr=lr, min_lr=lr / 10,
                                                             warmup_steps=10, eval_interval=steps, eval_batches=8,
                                                             log_interval=50, optimizer=optimizer))
    summary = train(run_dir)
    vocab = RunConfig.load(run_dir / "config.toml").model.vocab_size
    first = losses(run_dir)[50]
    assert summary["val_loss"] < bound < 0.6 * math.log(vocab)
    assert summary["val_loss"] < first  # and the loss fell on the way


@pytest.mark.slow
def test_two_process_ddp_on_cpu(home, small_corpus):
    """torchrun, gloo: both ranks train in step, only rank 0 writes events and checkpoints."""
    import subprocess
    import sys

    run_dir = make_run(small_corpus, train=dict(max_steps=6, eval_interval=3, grad_accum=2))  # no_sync path too
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                        "-m", "engine", "train", "--run-dir", str(run_dir)],
                       capture_output=True, text=True, env=env, cwd=home, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("done: max_steps at step 6") == 2  # both ranks ran to the end
    events = read_events(run_dir)
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    assert starts[0]["tokens_per_step"] == 2 * 2 * 8 * 32  # ranks x accumulation x batch x block
    assert events[-1]["event"] == "done" and events[-1]["tokens_seen"] == 6 * 2 * 2 * 8 * 32
    assert len(losses(run_dir)) == 6
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    assert state["step"] == 6 and len(state["data_rng"]) == 2 and state["data_rng"][0] != state["data_rng"][1]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes in Linux's /proc")
def test_sigterm_to_one_torchrun_rank_stops_every_rank_cleanly(home, small_corpus):
    """torchrun, 2 ranks, gloo: SIGTERM to rank 1 alone (rank 0 holds the lock and writes); all ranks agree on
    the stop, both finish the same step, rank 0 checkpoints it, and torchrun exits 0 instead of hanging."""
    import subprocess
    import sys

    run_dir = make_run(small_corpus, model=dict(n_layer=1, n_head=1, n_embd=16, block_size=16),
                       train=dict(max_steps=100_000, batch_size=4, eval_interval=1000, sample_tokens=0,
                                  device="cpu", dtype="fp32"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                             "-m", "engine", "train", "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=home,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240  # two torch imports on a loaded 2-core machine
        while not [e for e in read_events(run_dir) if e["event"] == "step" and e["step"] >= 3]:
            assert proc.poll() is None and time.monotonic() < deadline, "the ranks did not start training"
            time.sleep(0.2)
        [rank1] = [pid for pid in _children(proc.pid) if _rank_of(pid) == 1]
        os.kill(rank1, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("torchrun still runs 120 s after SIGTERM to rank 1: a rank hangs")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    done = re.findall(r"done: stopped at step (\d+)", out)
    assert len(done) == 2 and done[0] == done[1], out  # both ranks stopped, at the same step
    events = read_events(run_dir)
    assert events[-1]["event"] == "done" and events[-1]["reason"] == "stopped" and events[-1]["step"] == int(done[0])
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    assert state["step"] == int(done[0]) and len(state["data_rng"]) == 2
    assert not runs.is_running(run_dir)
