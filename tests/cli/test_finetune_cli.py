"""`smallgpt finetune | classify | chat | lora` as real commands, from a tiny base run."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import one_json, smallgpt
from engine import runs
from engine.config import RunConfig, apply_overrides
from engine.trainer import train

FAST = ["--max-steps", "2", "--batch-size", "4", "--eval-interval", "2", "--eval-batches", "1", "--warmup-steps", "1",
        "--sample-tokens", "4"]


@pytest.fixture
def base(home, small_corpus) -> str:
    torch.set_num_threads(1)
    cfg = apply_overrides(RunConfig(), {"model": dict(n_layer=1, n_head=2, n_embd=32, block_size=256),
                                        "data": dict(corpus=str(small_corpus), tokenizer_kind="char"),
                                        "train": dict(max_steps=2, batch_size=2, eval_interval=2, eval_batches=1,
                                                      sample_tokens=0, warmup_steps=1)})
    train(runs.create_run(cfg, name="base"))
    return "base"


@pytest.mark.slow
def test_classifier_from_a_pretrained_run(home, base):
    out = one_json(smallgpt(home, "finetune", "--task", "classify", "--from", "base:latest", "--data", "python-kinds",
                            "--run", "cls", *FAST, "--json"))
    assert out["reason"] == "max_steps" and out["report"]["labels"] == ["code", "docstring", "error"]
    assert set(out["report"]["test"]) >= {"accuracy", "precision", "recall", "confusion"}
    probs = one_json(smallgpt(home, "classify", "cls", "return self.x + 1", "--json"))["probabilities"]
    assert set(probs) == {"code", "docstring", "error"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    r = smallgpt(home, "chat", "cls", "--prompt", "hi")
    assert r.returncode == 1 and "not instruction-tuned" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_lora_chat_model_merge_and_export(home, base):
    r = smallgpt(home, "finetune", "--task", "instruct", "--from", "base", "--data", "python-instruct", "--run", "chat",
                 "--lora-rank", "2", *FAST)
    assert r.returncode == 0, r.stderr
    assert "training " in r.stdout and "parameters (" in r.stdout  # the trainable count and share
    reply = one_json(smallgpt(home, "chat", "chat", "--prompt", "What does `len` do?", "--max-new-tokens", "5",
                              "--temperature", "0", "--json"))
    assert reply["prompt"] == "What does `len` do?" and reply["tokens"] <= 5
    turns = smallgpt(home, "chat", "chat", "--max-new-tokens", "3", "--json", stdin="hello\nagain\n\n")
    assert turns.returncode == 0 and turns.stdout.count('"reply"') == 2
    merged = one_json(smallgpt(home, "lora", "merge", "chat", "--checkpoint", "latest", "--json"))["path"]
    assert one_json(smallgpt(home, "chat", merged, "--prompt", "What does `len` do?", "--max-new-tokens", "5",
                             "--temperature", "0", "--json"))["reply"] == reply["reply"]  # greedy: the merged weights answer the same
    exported = one_json(smallgpt(home, "lora", "export", "chat", "--out", str(home / "peft"), "--json"))["path"]
    config = json.loads((home / "peft" / "adapter_config.json").read_text())
    assert exported == str(home / "peft") and config["peft_type"] == "LORA" and config["r"] == 2
    r = smallgpt(home, "lora", "merge", merged)
    assert r.returncode == 1 and "no LoRA adapters" in r.stderr
