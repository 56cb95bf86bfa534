"""Fine-tuning: tasks (classify, instruct) behind the trainer, frozen scopes, LoRA adapters (zero start,
merge, PEFT export checked against transformers + peft), exact resume, and one sentence per bad data row."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from engine import checkpoint as ckpt
from engine import runs
from engine.config import ModelConfig, RunConfig, apply_overrides
from engine.errors import ConfigError, CorpusError
from engine.events import read_events
from engine.config import finetune_config
from engine.finetune import create_finetune_run
from engine.lora import LoRALinear, apply_lora, export_peft, merge
from engine.models import build_model
from engine.tasks.records import load_task_data
from engine.trainer import train

# block_size 256: the Alpaca template alone is ~170 characters for a char tokenizer.
BASE = {"model": dict(n_layer=2, n_head=2, n_embd=32, block_size=256),
        "train": dict(max_steps=3, batch_size=4, eval_interval=3, eval_batches=1, sample_tokens=0, warmup_steps=1,
                      log_interval=1)}
FAST = dict(max_steps=4, batch_size=4, eval_interval=2, eval_batches=2, sample_tokens=8, warmup_steps=1,
            log_interval=1)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, builtin_cache) -> Path:
    """A base run trained a few steps on python-docs text (char tokenizer), made once for the module."""
    from engine.corpora import prepare_builtin

    root = tmp_path_factory.mktemp("base-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLGPT_HOME", str(root))
        text = prepare_builtin("python-docs").read_text(encoding="utf-8")[:100_000]
        (root / "docs.txt").write_text(text, encoding="utf-8")
        cfg = apply_overrides(RunConfig(), {**BASE, "data": dict(corpus=str(root / "docs.txt"), tokenizer_kind="char")})
        run_dir = runs.create_run(cfg, name="base")
        train(run_dir)
    return run_dir


@pytest.fixture
def base(home, pretrained) -> str:
    shutil.copytree(pretrained, home / "checkpoints" / "base")
    return "base"


def finetune(kind: str, data: str, name: str, **over: dict) -> Path:
    overrides = {"train": {**FAST, **over.pop("train", {})}, **over}
    return create_finetune_run(finetune_config(kind, "base", data, overrides), name=name)


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- the masked loss -------------------------------------------------------------------------------
def test_masked_positions_contribute_exactly_zero_gradient(base, home):
    from engine.tasks import make_task

    run_dir = finetune("instruct", "python-instruct", "ins")
    cfg = RunConfig.load(run_dir / "config.toml")
    model, _, tokenizer = ckpt.load_model(Path(home / "checkpoints" / "base"), "latest")
    from engine.tasks.instruct import collate

    task = make_task(cfg, tokenizer, run_dir)
    x, y = collate(task.split["train"][:4], tokenizer.pad_id)  # records of different lengths: padding too
    assert (y == -1).any() and (y != -1).any() and (x == tokenizer.pad_id).any()  # prompts and padding masked
    model.train()
    logits, loss = model(x, y)
    logits.retain_grad()
    loss.backward()
    keep = y != -1
    by_hand = -F.log_softmax(logits.detach().float(), -1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert torch.count_nonzero(logits.grad[~keep]) == 0  # exactly zero, not small
    assert torch.count_nonzero(logits.grad[keep]) > 0


def test_response_targets_follow_the_alpaca_template(base, home):
    from engine.tasks.instruct import TEMPLATES, encode, messages_of, prompt_text, render

    record = {"instruction": "Say hi.", "input": "twice", "output": "hi hi"}
    segments = render(TEMPLATES["alpaca"], messages_of(record))
    assert segments == [("Below is an instruction that describes a task. Write a response that appropriately "
                         "completes the request.\n\n### Instruction:\nSay hi.\n\n### Input:\ntwice\n\n### Response:\n",
                         False), ("hi hi", True), (None, True)]
    tokenizer = ckpt.load_model(home / "checkpoints" / "base", "latest")[2]
    ids, target = encode(tokenizer, segments)
    assert ids[-1] == tokenizer.eos_id and target[-1] and tokenizer.decode([i for i, t in zip(ids, target) if t]) \
        == "hi hi<|endoftext|>"
    assert prompt_text(TEMPLATES["alpaca"], messages_of(record)[:1]) == segments[0][0]


def test_prompts_longer_than_the_block_name_the_block_size_they_need(base, home):
    from engine.tasks import make_task
    from engine.tasks.instruct import TEMPLATES, messages_of, prompt_text

    records = [{"instruction": f"Say hi to {name}.", "input": "", "output": "hi"} for name in "abcdefghijkl"]
    (home / "hi.json").write_text(json.dumps(records))
    run_dir = finetune("instruct", str(home / "hi.json"), "hi")
    cfg = RunConfig.load(run_dir / "config.toml")
    tokenizer = ckpt.load_model(home / "checkpoints" / "base", "latest")[2]
    prompt = len(prompt_text(TEMPLATES["alpaca"], messages_of(records[0])[:1]))  # a char tokenizer: chars = tokens
    cfg.model.block_size = prompt - 1  # the window ends before the first response token
    with pytest.raises(CorpusError, match=f"shortest needs {prompt}\\): fine-tune a run trained with a block size of {prompt} or more"):
        make_task(cfg, tokenizer, run_dir)
    cfg.model.block_size = prompt  # the first response token is the last target: the records train
    assert all(len(seqs) for seqs in make_task(cfg, tokenizer, run_dir).split.values())

    too_long = [{"instruction": "Say hi to " + "x" * 300 + ".", "input": "", "output": "hi"}] * 12
    (home / "long.json").write_text(json.dumps(too_long))
    with pytest.raises(CorpusError, match="longer than the base's block size \\(256 tokens"):
        finetune("instruct", str(home / "long.json"), "long")
    assert not (home / "checkpoints" / "long").exists()  # refused when created: no run directory is left


# --- classification and frozen layers --------------------------------------------------------------
def test_classifier_trains_only_its_scope_and_reports_on_val_and_test(base, home):
    run_dir = finetune("classify", "python-kinds", "cls")  # default scope: last block + final LayerNorm + head
    before = tensors(ckpt.load_model(home / "checkpoints" / "base", "latest")[0])
    summary = train(run_dir)
    after = tensors(ckpt.load_model(run_dir, "latest")[0])
    trained = {k for k in after if k.startswith(("transformer.h.1.", "transformer.ln_f.", "score."))}
    assert {k for k in after if not torch.equal(after[k], before.get(k, torch.empty(0)))} == trained
    events = read_events(run_dir)
    start = next(e for e in events if e["event"] == "start")
    assert start["task"] == "classify" and start["init_from"] == "base" and start["labels"] == ["code", "docstring", "error"]
    assert start["trainable"]["trainable"] < start["trainable"]["total"]
    assert all("val_accuracy" in e for e in events if e["event"] == "eval")
    report = next(e for e in events if e["event"] == "report")
    split = json.loads((run_dir / "task.json").read_text())["split"]
    for name in ("val", "test"):
        m = report[name]
        assert sum(map(sum, m["confusion"])) == m["records"] == split[name]
        assert m["accuracy"] == pytest.approx(sum(m["confusion"][i][i] for i in range(3)) / m["records"])
    assert summary["reason"] == "max_steps"
    from engine.evaluate import evaluate_run

    ev = evaluate_run(run_dir, "latest")  # `smallgpt eval` (and quantize's report) on the task's val split
    assert ev["tokens"] == split["val"] and 0.0 <= ev["val_accuracy"] <= 1.0


def test_head_only_scope_and_a_bad_scope(base, home):
    run_dir = finetune("classify", "python-kinds", "head", task={"train": "head"})
    model = ckpt.load_model(home / "checkpoints" / "base", "latest")[0]
    train(run_dir)
    tuned = ckpt.load_model(run_dir, "latest")[0]
    assert all(torch.equal(v, tuned.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="last-2"):
        train(finetune("classify", "python-kinds", "deep", task={"train": "last-5"}))


# --- LoRA ------------------------------------------------------------------------------------------
CFG = ModelConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=16)


def test_lora_with_zero_b_gives_the_base_logits_and_freezes_the_base():
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    idx = torch.randint(50, (2, 16))
    base_logits = model(idx)[0]
    wrapped = apply_lora(model, 4, 8.0, 0.0, "c_attn,c_proj,c_fc")
    assert len(wrapped) == 8 and all(isinstance(model.get_submodule(n), LoRALinear) for n in wrapped)
    assert torch.equal(model(idx)[0], base_logits)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"{n}.lora_{x}" for n in wrapped for x in "AB"}
    with pytest.raises(ConfigError, match="token embedding"):
        apply_lora(build_model(CFG), 4, 8.0, 0.0, "lm_head")
    with pytest.raises(ConfigError, match="c_attn"):
        apply_lora(build_model(CFG), 4, 8.0, 0.0, "q_proj")


def test_merged_lora_equals_unmerged():
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    apply_lora(model, 4, 8.0, 0.0, "c_attn,c_proj,c_fc")
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.5)
    idx = torch.randint(50, (2, 16))
    unmerged = model(idx)[0]
    assert not torch.allclose(unmerged, build_model(CFG)(idx)[0])
    merged = merge(model)(idx)[0]
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def to_hf_gpt2(model: torch.nn.Module):
    """Our GPT as a transformers GPT2LMHeadModel, or our classifier as a GPT2ForSequenceClassification
    (pad id 1 marks the end of each text). GPT-2's Conv1D weights are [in, out]: ours transposed."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    c = model.config
    config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, n_inner=c.mlp_ratio * c.n_embd, activation_function="gelu",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        num_labels=max(c.n_classes, 2), pad_token_id=1, attn_implementation="eager")
    hf = (GPT2ForSequenceClassification if c.n_classes else GPT2LMHeadModel)(config)
    state = {k: v.t().contiguous() if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v
             for k, v in model.state_dict().items() if not (c.n_classes and k == "lm_head.weight")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    return hf.eval()


@pytest.mark.parametrize("n_classes", [0, 3])
def test_exported_peft_adapter_loads_in_peft_and_gives_our_logits(tmp_path, n_classes):
    """A causal LM adapter, and a classifier's (its head saved as PEFT's modules_to_save)."""
    pytest.importorskip("peft")
    from peft import PeftModel

    torch.manual_seed(0)
    cfg = ModelConfig(**{**CFG.__dict__, "n_classes": n_classes})
    model = build_model(cfg).eval()
    hf = to_hf_gpt2(model)
    idx = torch.randint(2, 50, (2, 16))
    idx[0, 10:] = 1  # the first text ends at position 9: padding after it
    ours = (lambda: model(idx, last=torch.tensor([9, 15]))[0]) if n_classes else (lambda: model(idx)[0])
    base_logits = hf(input_ids=idx).logits
    torch.testing.assert_close(base_logits, ours(), atol=1e-5, rtol=0)
    apply_lora(model, 4, 8.0, 0.0, "c_attn,c_proj,c_fc")
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.5)
    if n_classes:  # a trained head rides along
        model.score.weight.requires_grad_(True)
        with torch.no_grad():
            model.score.weight.mul_(3.0)
    export_peft(model, tmp_path / "adapter", 4, 8.0, 0.0, base="base", task_type="SEQ_CLS" if n_classes else "CAUSAL_LM")
    theirs = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()(input_ids=idx).logits
    assert not torch.allclose(theirs, base_logits, atol=1e-3)  # the adapters are applied
    torch.testing.assert_close(theirs, ours(), atol=1e-5, rtol=0)


def test_lora_run_checkpoints_hold_only_adapters_and_merge_into_an_ordinary_run(base, home):
    from engine.finetune import merge_run

    run_dir = finetune("instruct", "python-instruct", "lora", lora={"rank": 2})
    train(run_dir)
    start = next(e for e in read_events(run_dir) if e["event"] == "start")
    assert 0 < start["trainable"]["share"] < 0.2
    from safetensors import safe_open

    with safe_open(str(run_dir / "ckpt" / "latest" / "model.safetensors"), "pt") as f:
        assert f.keys() and all(".lora_" in k for k in f.keys())
    merged_dir = merge_run(run_dir, "latest")
    merged = ckpt.load_model(merged_dir, "latest")[0]
    adapted = ckpt.load_model(run_dir, "latest")[0]
    idx = torch.randint(10, 60, (1, 32))
    torch.testing.assert_close(merged(idx)[0], adapted(idx)[0], atol=1e-5, rtol=0)
    assert RunConfig.load(merged_dir / "config.toml").lora.rank == 0
    assert runs.run_info(merged_dir).status == "finished"
    # int8 of the LoRA run is the merged model's: its size is against the merged fp32 model, not the adapters.
    from engine.int8 import save_int8

    report = save_int8(run_dir, "latest", eval_tokens=256, decode_tokens=4, repeats=1)
    full = (merged_dir / "ckpt" / "latest" / "model.safetensors").stat().st_size
    assert 0.95 * full < report["fp32_bytes"] <= full  # the file adds a header of tensor names
    assert report["int8_bytes"] < report["fp32_bytes"]


@pytest.mark.parametrize("kind,data,over", [("instruct", "python-instruct", {"lora": {"rank": 2, "dropout": 0.1}}),
                                            ("classify", "python-kinds", {"model": {"dropout": 0.1}})])
def test_a_resumed_finetuning_run_matches_an_uninterrupted_one(base, home, kind, data, over):
    straight = finetune(kind, data, "straight", train={"max_steps": 6, "eval_interval": 3}, **over)
    train(straight)
    interrupted = finetune(kind, data, "interrupted", train={"max_steps": 6, "eval_interval": 3}, **over)

    def stop_at_2(e: dict) -> None:
        if e["event"] == "step" and e["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    assert train(interrupted, on_event=stop_at_2)["steps"] == 3
    train(interrupted, resume=True)

    def series(run_dir: Path, kind: str, key: str) -> dict[int, float]:
        return {e["step"]: e[key] for e in read_events(run_dir) if e["event"] == kind}

    assert series(straight, "step", "loss") == series(interrupted, "step", "loss")
    assert series(straight, "eval", "val_loss") == series(interrupted, "eval", "val_loss")


# --- data formats ----------------------------------------------------------------------------------
def test_classification_files_with_and_without_header(tmp_path):
    (tmp_path / "sms.txt").write_text("ham\tGo until jurong point\nspam\tWINNER!!\tclaim now\nham\tOk lar\n")
    d = load_task_data(str(tmp_path / "sms.txt"), "classify")
    assert d.records[1] == {"text": "WINNER!!\tclaim now", "label": "spam"} and len(d.records) == 3
    (tmp_path / "r.csv").write_text('id,review,stars\n1,"great, really",pos\n2,bad,neg\n3,fine,pos\n')
    d = load_task_data(str(tmp_path / "r.csv"), "classify", text_col="review", label_col="stars")
    assert d.records[0] == {"text": "great, really", "label": "pos"}
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({"text": t, "label": n}) for t, n in
                                                [("a b", 1), ("c", 0), ("d", 1)]))
    assert load_task_data(str(tmp_path / "r.jsonl"), "classify").records[0] == {"text": "a b", "label": "1"}


BAD_ROWS = [
    ("c.tsv", "ham\tok\nspam\n", "classify", {}, r"c\.tsv row 2 has 1 column"),
    ("c.csv", "text,label\nhello,\nbye,x\n", "classify", {}, r"c\.csv row 2: the label field is empty"),
    ("c.csv", "a,label\nx,y\n", "classify", {"text_col": "body"}, r"c\.csv's header has no 'body' column"),
    ("c.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n', "classify", {}, r'c\.jsonl line 2: field "label"'),
    ("c.jsonl", '{"text": "a", "label": "x"}\nnot json\n', "classify", {}, r"c\.jsonl line 2 is not valid JSON"),
    ("i.json", '[{"instruction": "a", "output": "b"}, {"instruction": "c"}]', "instruct", {},
     r'i\.json record 2: field "output" is missing'),
    ("i.json", '{"instruction": "a"}', "instruct", {}, r"i\.json is not a JSON list"),
    ("i.jsonl", '{"instruction": "a", "output": "b", "input": 3}\n', "instruct", {}, r'i\.jsonl line 1: field "input"'),
    ("m.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}\n', "instruct",
     {}, r"m\.jsonl line 1: messages\[1\]\.role is 'bot'"),
    ("m.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n', "instruct", {},
     r"m\.jsonl line 1 has no assistant message"),
]


@pytest.mark.parametrize("name,text,kind,cols,message", BAD_ROWS)
def test_each_bad_data_row_gets_its_sentence(tmp_path, name, text, kind, cols, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(CorpusError, match=message):
        load_task_data(str(tmp_path / name), kind, cols.get("text_col", ""), cols.get("label_col", ""))


def test_built_in_task_data(builtin_cache):
    kinds = load_task_data("python-kinds", "classify").records
    labels = {r["label"] for r in kinds}
    assert labels == {"code", "docstring", "error"} and len(kinds) >= 3000
    assert len({r["label"] for r in kinds[:30]}) == 3  # shuffled, balanced
    instruct = load_task_data("python-instruct", "instruct").records
    assert 2000 <= len(instruct) <= 5000 and all(r["output"] for r in instruct)
    assert any(r["input"] for r in instruct) and any("keyword" in r["instruction"] for r in instruct)
    with pytest.raises(CorpusError, match="--task classify"):
        load_task_data("python-kinds", "instruct")


def test_split_is_seeded_and_recorded(base, home):
    a = finetune("classify", "python-kinds", "a")
    b = finetune("classify", "python-kinds", "b", train={"seed": 7})
    info_a, info_b = (json.loads((r / "task.json").read_text()) for r in (a, b))
    assert info_a["split"]["seed"] == 1337 and info_b["split"]["seed"] == 7
    assert info_a["fingerprint"] == info_b["fingerprint"] and info_a["labels"] == info_b["labels"]
    cfg = RunConfig.load(a / "config.toml")
    assert cfg.task.init_from == "base" and cfg.model.n_classes == 3


def test_sample_text_is_what_the_runs_model_reads(base, home):
    from engine.tasks import sample_text

    classify = RunConfig.load(finetune("classify", "python-kinds", "c") / "config.toml")
    records = load_task_data("python-kinds", "classify").records
    assert sample_text(classify) in {r["text"] for r in records}
    instruct = RunConfig.load(finetune("instruct", "python-instruct", "i") / "config.toml")
    prompt = sample_text(instruct)
    assert prompt.startswith("Below is an instruction") and prompt.endswith("### Response:\n")
    lm = RunConfig.load(home / "checkpoints" / "base" / "config.toml")
    assert sample_text(lm) and Path(lm.data.corpus).read_text(encoding="utf-8").startswith(sample_text(lm))


def test_the_catalog_instruction_set_is_read_as_alpaca_json(home):
    """instruction-data (seed 004's set) resolves through the catalog; here its download is already cached."""
    from engine.corpora import _catalog, _download_path

    entry = _catalog()["instruction-data"]
    assert entry["sha256"] == "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"
    cached = _download_path(entry["url"])
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps([{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(5)]))
    data = load_task_data("instruction-data", "instruct")
    assert data.fmt == "alpaca" and data.records[2] == {"instruction": "Say 2.", "input": "", "output": "2"}


def test_balance_undersamples_every_class_to_the_rarest(tmp_path):
    from engine.tasks.classify import balanced

    records = [{"text": f"t{i}", "label": "ham" if i % 4 else "spam"} for i in range(40)]
    kept = balanced(records, seed=0)
    assert sum(r["label"] == "spam" for r in kept) == sum(r["label"] == "ham" for r in kept) == 10
    assert balanced(records, seed=0) == kept and balanced(records, seed=1) != kept  # seeded
    assert [records.index(r) for r in kept] == sorted(records.index(r) for r in kept)  # order kept


def test_a_bf16_base_under_lora_runs_with_and_without_autocast():
    """The trainer keeps a LoRA run's frozen base in bf16 under bf16 autocast; samples at evals run without
    autocast and must still work."""
    from engine.lora import frozen_base_to

    torch.manual_seed(0)
    model = build_model(CFG).eval()
    idx = torch.randint(50, (2, 16))
    reference = model(idx)[0]
    apply_lora(model, 4, 8.0, 0.0, "c_attn,c_proj,c_fc")
    frozen_base_to(model, torch.bfloat16)
    assert model.transformer.h[0].attn.c_attn.weight.dtype == torch.bfloat16
    assert model.transformer.h[0].attn.c_attn.lora_A.dtype == torch.float32  # the adapters train in fp32
    torch.testing.assert_close(model(idx)[0], reference, atol=0.05, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(model(idx)[0].float(), reference, atol=0.05, rtol=0)
