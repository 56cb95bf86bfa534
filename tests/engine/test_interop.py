"""GPT-2 in Hugging Face format, in and out, against transformers as the oracle (everything built here,
nothing downloaded): an imported random GPT2LMHeadModel gives HF's logits, greedy tokens and attention
weights; an exported run loads in transformers with our logits and round-trips bit for bit; --init-from
starts exactly at the source's weights; bad folders are refused in one sentence with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from engine import checkpoint  # noqa: E402
from engine.errors import ConfigError, InteropError  # noqa: E402
from engine.interop import export_model, import_model  # noqa: E402
from engine.runs import list_runs  # noqa: E402
from tests.hf_gpt2 import TEXT, VOCAB, bpe_tokenizer, save_tiny_gpt2  # noqa: E402


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """The HF model saved with safetensors and tokenizer.json, as `huggingface-cli download` leaves one."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.fixture
def hf_model(gpt2_folder):
    return transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder, attn_implementation="eager").eval()


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tokenizer_files", ["tokenizer.json", "vocab.json+merges.txt"])
def test_imported_gpt2_gives_transformers_logits(home, gpt2_folder, hf_model, tmp_path, tokenizer_files):
    folder = gpt2_folder
    if tokenizer_files != "tokenizer.json":  # the older layout: GPT-2's tokenizer rebuilt from its two files
        folder = tmp_path / "legacy"
        folder.mkdir()
        for f in ("config.json", "model.safetensors"):
            shutil.copy(gpt2_folder / f, folder / f)
        bpe_tokenizer().model.save(str(folder))
    summary = import_model(str(folder), "gpt2-tiny")
    [info] = list_runs()
    assert (info.name, info.status, info.params) == ("gpt2-tiny", "imported", summary["params"])
    model, cfg, tok = checkpoint.load_model(home / "checkpoints" / "gpt2-tiny", "best")
    assert (cfg.model.activation, cfg.model.norm_eps, cfg.model.block_size, tok.vocab_size) == ("gelu_tanh", 1e-5,
                                                                                                 128, VOCAB)
    assert tok.eos_id == VOCAB - 1 and tok.pad_id is None and summary["params"] == sum(
        p.numel() for p in hf_model.parameters())
    assert tok.encode(TEXT[:300]) == transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(gpt2_folder / "tokenizer.json"))(TEXT[:300])["input_ids"]
    x = _ids(100)
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf_model(x).logits
    assert (ours - theirs).abs().max().item() < 1e-5


def test_imported_gpt2_greedy_tokens_and_attention_match_transformers(home, gpt2_folder, hf_model):
    from engine.inspection import inspect_prompt
    from engine.sampler import SamplingConfig, generate

    import_model(str(gpt2_folder), "gpt2-tiny")
    model, _, tok = checkpoint.load_model(home / "checkpoints" / "gpt2-tiny", "best")
    prompt = "The cat sat on the"
    ours = [t.id for t in generate(model, tok, prompt, SamplingConfig(max_new_tokens=50, temperature=0))]
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=50,
                                use_cache=True, pad_token_id=VOCAB - 1)
    theirs = out[0, ids.size(1):].tolist()
    assert len(ours) == 50 and VOCAB - 1 not in theirs  # no end-of-text muddles the comparison
    assert ours == theirs[:len(ours)]

    inspection = inspect_prompt(model, tok, TEXT[:200])
    with torch.no_grad():
        attentions = hf_model(torch.tensor([inspection.token_ids.tolist()]), output_attentions=True).attentions
    theirs_attn = torch.stack([a[0] for a in attentions]).numpy()
    assert inspection.attn.shape == theirs_attn.shape == (2, 4, len(inspection.token_ids), len(inspection.token_ids))
    assert abs(inspection.attn - theirs_attn).max() < 1e-5


def _trained_tiny_run(home: Path, corpus: Path) -> Path:
    from engine.config import apply_overrides, preset
    from engine.runs import create_run
    from engine.trainer import train

    gpt2 = {"positions": "learned", "qk_norm": False}  # tiny's options beyond GPT-2 off: a GPT-2 shaped run
    cfg = apply_overrides(preset("tiny"), {"model": gpt2, "data": {"corpus": str(corpus), "tokenizer_kind": "char"},
                                           "train": {"max_steps": 12, "batch_size": 4, "eval_interval": 6,
                                                     "eval_batches": 2, "sample_tokens": 0, "dtype": "fp32",
                                                     "device": "cpu"}})
    run_dir = create_run(cfg, name="tiny")
    train(run_dir)
    return run_dir


def test_exported_run_loads_in_transformers_and_round_trips(home, small_corpus, tmp_path):
    run_dir = _trained_tiny_run(home, small_corpus)
    out = tmp_path / "exported"
    summary = export_model(run_dir, out, "best")
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"])

    model, cfg, tok = checkpoint.load_model(run_dir, "best")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = small_corpus.read_text()[:60]
    assert hf_tok(text)["input_ids"] == tok.encode(text) and hf_tok.eos_token_id == tok.eos_id
    x = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        assert (model(x)[0] - hf(x).logits).abs().max().item() < 1e-5

    import_model(str(out), "back")
    back, back_cfg, back_tok = checkpoint.load_model(home / "checkpoints" / "back", "best")
    assert back_cfg.model == cfg.model and back_tok.to_json() == tok.to_json()
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_init_from_starts_at_the_source_weights(home, gpt2_folder, small_corpus):
    """A new run from an imported GPT-2 (no pad token) on another corpus: its first step's loss is the
    source model's loss on that very batch; tokenizer and shape come from the source, provenance is kept."""
    from engine.config import RunConfig
    from engine.corpora import load_corpus
    from engine.dataset import TokenDataset, prepare_dataset
    from engine.events import read_events
    from engine.finetune import create_finetune_run
    from engine.trainer import train
    from tui.cli import build_parser
    from tui.commands.train import resolve_config

    import_model(str(gpt2_folder), "gpt2-tiny")
    args = build_parser().parse_args(["train", "--init-from", "gpt2-tiny:latest", "--corpus", str(small_corpus),
                                      "--max-steps", "2", "--batch-size", "2", "--eval-interval", "2",
                                      "--eval-batches", "1", "--dtype", "fp32", "--device", "cpu"])
    cfg = resolve_config(args)
    cfg.train.log_interval = 1
    run_dir = create_finetune_run(cfg, name="continued")
    train(run_dir)

    source, src_cfg, tok = checkpoint.load_model(home / "checkpoints" / "gpt2-tiny", "latest")
    cfg = RunConfig.load(run_dir / "config.toml")
    assert cfg.model == src_cfg.model and cfg.task.init_from == "gpt2-tiny:latest"
    assert (run_dir / "tokenizer.json").read_text() == (home / "checkpoints" / "gpt2-tiny" / "tokenizer.json").read_text()
    events = read_events(run_dir)
    start = next(e for e in events if e["event"] == "start")
    assert start["init_from"] == "gpt2-tiny:latest" and start["init_source"]["run"] == str(home / "checkpoints" / "gpt2-tiny")
    assert start["init_source"]["checkpoint"] == "latest" and start["init_source"]["import"]["architecture"] == "gpt2"
    first = next(e for e in events if e["event"] == "step")
    train_ds = TokenDataset(prepare_dataset(load_corpus(str(small_corpus)), tok, cfg.data.val_ratio), "train")
    x, y = train_ds.get_batch(2, cfg.model.block_size, torch.Generator().manual_seed(cfg.train.seed))
    with torch.no_grad():
        _, loss = source(x, y)
    assert first["step"] == 1 and abs(first["loss"] - loss.item()) < 1e-5

    for bad in (["--n-embd", "32"], ["--tokenizer-kind", "char"]):
        with pytest.raises(ConfigError, match="cannot be set with --init-from"):
            resolve_config(build_parser().parse_args(["train", "--init-from", "gpt2-tiny", *bad]))


def test_lora_on_an_imported_gpt2_exports_adapters_peft_applies_to_the_original(home, gpt2_folder, hf_model,
                                                                                  small_corpus, tmp_path):
    """LoRA fine-tuning of an imported GPT-2: the exported PEFT adapter, put on the ORIGINAL transformers
    model by PeftModel, gives our fine-tuned run's logits."""
    peft = pytest.importorskip("peft")
    from engine.config import finetune_config
    from engine.finetune import create_finetune_run, export_adapters
    from engine.trainer import train

    import_model(str(gpt2_folder), "gpt2-tiny")
    train_over = dict(max_steps=8, batch_size=2, lr=1e-2, min_lr=1e-3, warmup_steps=1, eval_interval=8,
                      eval_batches=1, sample_tokens=0, dtype="fp32", device="cpu")
    cfg = finetune_config("lm", "gpt2-tiny:latest", str(small_corpus), {"lora": {"rank": 4}, "train": train_over})
    run_dir = create_finetune_run(cfg, name="gpt2-lora")
    train(run_dir)
    ours = checkpoint.load_model(run_dir, "latest")[0]
    adapter = export_adapters(run_dir, tmp_path / "adapter", "latest")
    idx = _ids(32)
    with torch.no_grad():
        base_logits = hf_model(input_ids=idx).logits  # before PEFT injects the adapters into hf_model
        tuned = peft.PeftModel.from_pretrained(hf_model, adapter).eval()(input_ids=idx).logits
        assert (tuned - base_logits).abs().max() > 1e-3  # the adapters were trained and are applied
        torch.testing.assert_close(tuned, ours(idx)[0], atol=1e-5, rtol=0)


def _broken(folder: Path, tmp_path: Path, case: str) -> Path:
    bad = tmp_path / case
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    if case == "no-config":
        (bad / "config.json").unlink()
        return bad
    if case == "no-weights":
        (bad / "model.safetensors").unlink()
    elif case == "pickle":
        (bad / "model.safetensors").unlink()
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    elif case == "pickle-file":
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
        return bad / "pytorch_model.bin"
    elif case == "llama":
        config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    elif case == "shape":
        config.update(n_embd=128)
    elif case == "vocab":
        from tokenizers import Tokenizer

        tk = Tokenizer.from_file(str(bad / "tokenizer.json"))
        tk.add_tokens(["<|extra|>"])
        tk.save(str(bad / "tokenizer.json"))
    (bad / "config.json").write_text(json.dumps(config))
    return bad


@pytest.mark.parametrize("case, words", [
    ("no-config", "no config.json"), ("no-weights", "no model.safetensors"), ("pickle", "pickle file"),
    ("pickle-file", "pickle file"), ("llama", "llama model, not GPT-2"), ("shape", "do not belong together"),
    ("vocab", "tokens but the weights embed")])
def test_bad_folders_are_refused_in_one_sentence_with_nothing_written(home, gpt2_folder, tmp_path, case, words):
    src = _broken(gpt2_folder, tmp_path, case)
    with pytest.raises(InteropError) as err:
        import_model(str(src), "bad")
    message = str(err.value)
    assert words in message and "\n" not in message and message.endswith(".")
    assert not (home / "checkpoints").exists() or not any((home / "checkpoints").iterdir())


def test_export_refuses_lstm_int8_options_beyond_gpt2_and_a_used_folder(home, tmp_path):
    from benchmarks.tiny_run import make_tiny_run

    lstm = make_tiny_run(home, "lstm", kind="lstm")
    gpt = make_tiny_run(home, "gpt")
    outs = tmp_path / "outs"
    (outs / "used").mkdir(parents=True)
    (outs / "used" / "x").write_text("x")
    rotary = make_tiny_run(home, "rotary", model={"positions": "rotary", "activation": "relu2"})
    for run_dir, out, which, words in [(lstm, outs / "a", "best", "is an LSTM"),
                                       (gpt, outs / "b", "int8", "int8 layers"),
                                       (rotary, outs / "c", "best", "options GPT-2 does not have .positions = "
                                                                    "'rotary', activation = 'relu2'.: export a run"),
                                       (gpt, outs / "used", "best", "not empty")]:
        with pytest.raises(InteropError, match=words):
            export_model(run_dir, out, which)
    assert [p.name for p in outs.iterdir()] == ["used"] and [p.name for p in (outs / "used").iterdir()] == ["x"]


def test_cli_import_export_and_an_offline_hub_name(home, gpt2_folder, tmp_path, capsys, monkeypatch):
    from tui.cli import main

    assert main(["import", str(gpt2_folder), "--run", "g", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "g"
    assert main(["export", "g", "--format", "hf", "--out", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == "best"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["import", "no-such-model-here"]) == 1
    err = capsys.readouterr().err
    assert "huggingface-cli download no-such-model-here" in err and "smallgpt import ./no-such-model-here" in err
