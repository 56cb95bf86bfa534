"""GPT-2 in Hugging Face format, in and out.

- `import_model`: a folder as `huggingface-cli download gpt2` leaves it (config.json, model.safetensors,
  tokenizer.json or vocab.json + merges.txt) -> an ordinary run directory: config.toml with the shape,
  tokenizer.json, ckpt/latest, and the provenance in state.json and an `import` event.
- `export_model`: a GPT run's checkpoint -> such a folder, which transformers' AutoModelForCausalLM and
  AutoTokenizer load as it is.
An imported run is an ordinary base for `smallgpt train --init-from` and `smallgpt finetune --from`
(task.init_from, engine.finetune).

GPT-2 keeps its attention and MLP matrices in Conv1D layers, [in, out]: the transpose of nn.Linear's
[out, in]. Everything is checked before anything is written, and a pickle file is never opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from torch import nn

from .checkpoint import MODEL_FILE, find, load_model, read_state, save_checkpoint
from .config import ModelConfig, RunConfig
from .errors import ConfigError, InteropError, TokenizerError
from .events import EventWriter
from .models import GPT, count_params
from .paths import checkpoints_dir
from .rundir import FP32_CHECKPOINTS, RunDir
from .runs import run_path
from .tokenizer import SPECIAL_TOKENS, Tokenizer

Progress = Callable[[float, str], None]

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_FILES = (HF_CONFIG, HF_WEIGHTS, "tokenizer.json", "tokenizer_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Our parameter names whose GPT-2 tensor is the transpose (Conv1D [in, out] against nn.Linear [out, in]).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT-2's activation names -> ours: gelu_new is the tanh approximation, as is PyTorch's tanh GELU.
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
# Our GPT's options that change what it computes beyond GPT-2 (engine.config.ModelConfig): an export needs
# each at its default, GPT-2's.
_NOT_GPT2 = ("positions", "qk_norm", "tie_head", "logit_softcap")
# The causal-mask buffers older GPT-2 files carry: no weights.
_HF_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# --- import -----------------------------------------------------------------------------------------

def import_model(src: str, name: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Import a GPT-2 model folder (or, with huggingface_hub and a network, a hub name) as run `name`
    under checkpoints/ (default: the folder's name). Returns a summary; writes nothing on any error."""
    t0 = time.perf_counter()
    folder, source = _locate(src)
    target = run_path(name or _run_name(source))
    if target.exists():
        raise InteropError(f"Run directory {target} already exists: choose another name with --run NAME.")
    if progress:
        progress(0.05, "checking")
    hf = _read_hf_config(folder)
    mc = model_config_from_hf(hf, folder)
    tokenizer = _load_tokenizer(folder)
    files = _weight_files(folder)
    model = _load_gpt2_weights(folder, files, mc, tokenizer, progress)
    cfg = RunConfig(model=mc)
    cfg.data.tokenizer_kind = tokenizer.kind
    cfg.validate()

    if progress:
        progress(0.7, "writing")
    weights = sorted({p.name for p in files.values()})
    record = {"source": source, "folder": str(folder), "weights": weights,
              "sha256": {n: _sha256(folder / n) for n in weights}, "architecture": "gpt2"}
    params = count_params(model)
    root = checkpoints_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".import-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        cfg.save(RunDir(tmp).config)
        tokenizer.save(RunDir(tmp).tokenizer)
        state = {"step": 0, "tokens_seen": 0, "best_val_loss": None, "time": 0.0,
                 "model_config": asdict(mc), "import": record}
        with torch.no_grad():
            save_checkpoint(tmp, "latest", model, None, state)
        writer = EventWriter(tmp)
        writer.emit("import", 0, params=params, **record)
        writer.close()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress(1.0, "done")
    return {"run": target.name, "path": str(target), "source": source, "params": params["total"],
            "model": {k: v for k, v in asdict(mc).items() if k != "kind"},
            "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id},
            "seconds": round(time.perf_counter() - t0, 3)}


def model_config_from_hf(hf: dict[str, Any], folder: Path) -> ModelConfig:
    """Our ModelConfig for a GPT-2 config.json; InteropError for anything our GPT does not compute."""
    kind = hf.get("model_type")
    if kind != "gpt2":
        what = kind or next(iter(hf.get("architectures") or []), "an unknown")
        raise InteropError(f"{folder} holds a {what} model, not GPT-2: smallgpt imports GPT-2-architecture "
                           f"models only (config.json model_type \"gpt2\").")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise InteropError(f"{folder} uses the activation {activation!r}, which smallgpt's GPT does not have: "
                           f"import a GPT-2 model with gelu_new or gelu.")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("add_cross_attention", False), ("tie_word_embeddings", True)):
        if hf.get(key, want) != want:
            raise InteropError(f"{folder}/config.json sets {key} = {hf.get(key)}, a GPT-2 variant smallgpt's GPT "
                               f"does not compute: import a model with {key} = {str(want).lower()}.")
    try:
        n_embd = int(hf.get("n_embd", 768))
        n_inner = int(hf.get("n_inner") or 4 * n_embd)
        mc = ModelConfig(kind="gpt", vocab_size=int(hf.get("vocab_size", 50257)), n_layer=int(hf.get("n_layer", 12)),
                         n_head=int(hf.get("n_head", 12)), n_embd=n_embd, block_size=int(hf.get("n_positions", 1024)),
                         dropout=0.0, mlp_ratio=n_inner // max(n_embd, 1), bias=True,
                         activation=_ACTIVATIONS[activation], norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))
        if n_inner != mc.mlp_ratio * n_embd:
            raise ConfigError(f"its MLP width n_inner {n_inner} is not a multiple of n_embd {n_embd}")
        RunConfig(model=mc).validate()
    except (TypeError, ValueError, ConfigError) as e:
        raise InteropError(f"{folder}/config.json describes a shape smallgpt's GPT cannot build "
                           f"({str(e).rstrip('.')}): check that the file is a GPT-2 config.") from None
    return mc


def _locate(src: str) -> tuple[Path, str]:
    """(the model folder, how to name its source): a local folder, else a hub name fetched if possible."""
    path = Path(src).expanduser()
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise _pickle_error(path)
        raise InteropError(f"{path} is a file: pass the folder that holds config.json and model.safetensors.")
    if path.is_dir():
        return path.resolve(), str(path.resolve())
    if not _HUB_NAME.match(src):
        raise InteropError(f"No folder {src}: pass the folder that holds config.json and model.safetensors.")
    local = src.rsplit("/", 1)[-1]
    way_out = (f"on a machine that is online run `huggingface-cli download {src} --local-dir {local}`, copy that "
               f"folder here and pass its path (`smallgpt import ./{local}`).")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InteropError(f"There is no folder {src} here and huggingface_hub is not installed to fetch it: "
                           + way_out) from None
    try:
        folder = snapshot_download(src, allow_patterns=[HF_CONFIG, "*.safetensors", HF_INDEX, "tokenizer.json",
                                                        "vocab.json", "merges.txt"])
    except Exception as e:  # offline, unknown repo, gated: all mean "bring the folder yourself"
        raise InteropError(f"There is no folder {src} here and the Hugging Face hub could not provide it "
                           f"({type(e).__name__}): " + way_out) from None
    return Path(folder), f"hub:{src}"


def _run_name(source: str) -> str:
    base = source.removeprefix("hub:").rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "imported"


def _pickle_error(path: Path) -> InteropError:
    return InteropError(f"{path.name} is a pickle file, which smallgpt never loads (unpickling can run any code): "
                        f"convert it to model.safetensors on a machine you trust (transformers' "
                        f"`from_pretrained(folder).save_pretrained(folder)` writes one) and import that.")


def _read_hf_config(folder: Path) -> dict[str, Any]:
    path = folder / HF_CONFIG
    if not path.is_file():
        raise InteropError(f"{folder} has no {HF_CONFIG}: copy the whole model folder (config.json, "
                           f"model.safetensors and the tokenizer files).")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InteropError(f"{path} is not readable JSON ({e}): copy the model folder again.") from None
    if not isinstance(hf, dict):
        raise InteropError(f"{path} is not a model config (a JSON object): copy the model folder again.")
    return hf


def _load_tokenizer(folder: Path) -> Tokenizer:
    """tokenizer.json as it is, else GPT-2's byte-level BPE built from vocab.json + merges.txt."""
    try:
        if (folder / "tokenizer.json").is_file():
            return Tokenizer.load(folder / "tokenizer.json")
        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise InteropError(f"{folder} has no tokenizer (tokenizer.json, or vocab.json and merges.txt): copy the "
                               f"tokenizer files that came with the model.")
        try:
            hf = HFTokenizer(BPE.from_file(str(vocab), str(merges)))
        except Exception as e:  # the Rust side raises a bare Exception for malformed files
            raise InteropError(f"{vocab.name} and {merges.name} in {folder} are not a BPE vocabulary ({e}): "
                               f"copy the tokenizer files that came with the model again.") from None
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([SPECIAL_TOKENS[0]])  # in GPT-2's vocab already (50256): marked special
        return Tokenizer(hf)
    except TokenizerError as e:
        raise InteropError(f"The tokenizer in {folder} cannot be used ({str(e).rstrip('.')}).") from None


def _weight_files(folder: Path) -> dict[str, Path]:
    """GPT-2 tensor name -> the safetensors file that holds it (one file, or shards with an index)."""
    single, index = folder / HF_WEIGHTS, folder / HF_INDEX
    try:
        if single.is_file():
            with safe_open(str(single), framework="pt") as f:
                return {k: single for k in f.keys()}
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return {k: folder / v for k, v in weight_map.items()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise InteropError(f"The weights in {folder} are unreadable ({type(e).__name__}: {e}): "
                           f"copy the model's safetensors files again.") from None
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise _pickle_error(pickles[0])
    raise InteropError(f"{folder} has no {HF_WEIGHTS}: copy the model's weights (safetensors) into it.")


def _expected_shapes(mc: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our GPT's parameter shapes for mc (both names of the tied embedding/head), without allocating it."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT(mc).state_dict().items()}


def _load_gpt2_weights(folder: Path, files: dict[str, Path], mc: ModelConfig, tokenizer: Tokenizer,
                       progress: Progress | None) -> nn.Module:
    """Our GPT holding the folder's weights (fp32). Names, shapes and the vocabulary are all checked
    against config.json and the tokenizer before a tensor is read."""
    expected = _expected_shapes(mc)
    names: dict[str, str] = {}  # ours -> GPT-2's
    for hf_name in files:
        short = hf_name.removeprefix("transformer.")
        if _HF_BUFFER.match(short):
            continue
        ours = short if short == "lm_head.weight" else f"transformer.{short}"
        if ours not in expected:
            raise InteropError(f"The weights in {folder} hold a tensor {hf_name} that a GPT-2 of this config.json "
                               f"does not have: config.json and the weights do not belong together.")
        names[ours] = hf_name
    missing = [k for k in expected if k not in names and k != "lm_head.weight"]
    if missing:
        raise InteropError(f"The weights in {folder} lack {len(missing)} tensor(s) of this config.json's GPT-2, "
                           f"{missing[0].removeprefix('transformer.')} first: the weights file is incomplete or "
                           f"belongs to another model.")
    try:
        handles = {p: safe_open(str(p), framework="pt") for p in set(files[n] for n in names.values())}
        for ours, hf_name in names.items():
            shape = tuple(handles[files[hf_name]].get_slice(hf_name).get_shape())
            want = expected[ours][::-1] if ours.endswith(_CONV1D) else expected[ours]
            if shape != want:
                raise InteropError(f"The tensor {hf_name} in {folder} is {list(shape)} but its config.json needs "
                                   f"{list(want)}: config.json and the weights do not belong together; copy the "
                                   f"model folder again.")
        rows = expected["transformer.wte.weight"][0]
        if tokenizer.vocab_size != rows:
            raise InteropError(f"The tokenizer in {folder} has {tokenizer.vocab_size} tokens but the weights embed "
                               f"{rows}: copy the tokenizer files that came with these weights.")
        sd: dict[str, torch.Tensor] = {}
        for i, (ours, hf_name) in enumerate(names.items()):
            t = handles[files[hf_name]].get_tensor(hf_name)
            if not t.is_floating_point():
                raise InteropError(f"The tensor {hf_name} in {folder} holds {t.dtype} values, not floating-point "
                                   f"weights: import a model saved in fp32, fp16 or bf16.")
            sd[ours] = (t.t() if ours.endswith(_CONV1D) else t).to(torch.float32).contiguous()
            if progress and i % 16 == 0:
                progress(0.1 + 0.5 * i / len(names), "reading weights")
    except (SafetensorError, OSError) as e:
        raise InteropError(f"The weights in {folder} are unreadable ({e}): copy the model's safetensors "
                           f"files again.") from None
    head = sd.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, sd["transformer.wte.weight"]):
        raise InteropError(f"The output head in {folder} differs from the token embedding, and smallgpt's GPT ties "
                           f"them: import a GPT-2 whose lm_head is its wte (every OpenAI GPT-2 is).")
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    with torch.device("meta"):
        model = GPT(mc)
    model.load_state_dict(sd, strict=True, assign=True)
    model.transformer.wte.weight = model.lm_head.weight  # assign made two parameters of the tied pair
    model.register_buffer("positions", torch.arange(mc.block_size), persistent=False)
    return model.eval()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# --- export -----------------------------------------------------------------------------------------

def export_model(run_dir: Path, out: Path, which: str = "best") -> dict[str, Any]:
    """Write a GPT run's checkpoint as a Hugging Face GPT-2 folder (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json) at out, which must not exist or be empty."""
    run_dir, out = Path(run_dir), Path(out).expanduser()
    if which not in FP32_CHECKPOINTS:
        raise InteropError(f"The {which} checkpoint cannot be exported: GPT-2 in transformers has no int8 layers "
                           f"like ours, so export the fp32 weights with --checkpoint latest or best.")
    cfg = RunConfig.load(RunDir(run_dir).config)
    if cfg.model.kind != "gpt":
        raise InteropError(f"Run {run_dir} is an {cfg.model.kind.upper()}, and only a GPT has a GPT-2 form: "
                           f"export a GPT run.")
    if not cfg.model.bias:
        raise InteropError(f"Run {run_dir} has no biases (bias = false) and GPT-2's layers always have them: "
                           f"export a run trained with bias = true.")
    custom = [f"{k} = {getattr(cfg.model, k)!r}" for k in _NOT_GPT2 if getattr(cfg.model, k) != getattr(ModelConfig(), k)]
    if cfg.model.activation not in _HF_ACTIVATION:
        custom.append(f"activation = {cfg.model.activation!r}")
    if custom:
        raise InteropError(f"Run {run_dir} uses model options GPT-2 does not have ({', '.join(custom)}): "
                           f"export a run trained with GPT-2's choices.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InteropError(f"{out} already exists and is not empty: choose another --out or remove it.")
    model, cfg, tokenizer = load_model(run_dir, which)
    ckpt = find(run_dir, which)
    step = read_state(ckpt)["step"] if ckpt else None
    m = cfg.model
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": m.vocab_size,
        "n_positions": m.block_size, "n_embd": m.n_embd, "n_layer": m.n_layer, "n_head": m.n_head,
        "n_inner": m.mlp_ratio * m.n_embd, "activation_function": _HF_ACTIVATION[m.activation],
        "layer_norm_epsilon": m.norm_eps, "resid_pdrop": m.dropout, "embd_pdrop": m.dropout,
        "attn_pdrop": m.dropout, "initializer_range": 0.02, "scale_attn_weights": True,
        "tie_word_embeddings": True, "use_cache": True, "bos_token_id": tokenizer.eos_id,
        "eos_token_id": tokenizer.eos_id, "torch_dtype": "float32",
    }
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    for key, i in (("pad_token", tokenizer.pad_id), ("unk_token", tokenizer.unk_id)):
        if i is not None:
            specials[key] = tokenizer.id_to_token(i)
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": m.block_size,
                        "clean_up_tokenization_spaces": False, **specials}
    tensors = {k: (v.t() if k.endswith(_CONV1D) else v).contiguous()
               for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: transformers re-ties
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with torch.no_grad():
            save_file(tensors, str(tmp / HF_WEIGHTS), metadata={"format": "pt"})
        (tmp / HF_CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n")
        tokenizer.save(tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        os.replace(tmp, out)  # onto a missing or empty directory
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InteropError(f"Could not write {out} ({e}): free some disk space or choose another --out.") from None
    return {"out": str(out), "run": str(run_dir), "checkpoint": which, "step": step, "files": list(HF_FILES),
            "params": sum(p.numel() for p in model.parameters())}
