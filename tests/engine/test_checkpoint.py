"""Checkpoints: exact round trip of weights and optimizer through safetensors, atomic replacement,
and every bad file reported by name."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from engine import checkpoint as ckpt
from engine.config import ModelConfig, RunConfig
from engine.errors import CheckpointError, ConfigError
from engine.models import build_model
from engine.trainer import make_optimizer

CFG = ModelConfig(kind="gpt", vocab_size=37, n_layer=2, n_head=2, n_embd=16, block_size=8)


def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(CFG)
    opt = make_optimizer(model, RunConfig(model=CFG), "cpu")
    x = torch.randint(0, CFG.vocab_size, (4, CFG.block_size))
    for _ in range(3):
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _state(step: int = 3) -> dict:
    return {"step": step, "rng": ckpt.encode_bytes(torch.get_rng_state()),
            "model_config": RunConfig(model=CFG).to_dict()["model"]}


def test_weights_and_optimizer_round_trip_exactly(tmp_path):
    model, opt = _trained()
    path = ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state())
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]

    torch.manual_seed(99)  # different init: everything must come from the files
    model2 = build_model(CFG)
    opt2 = make_optimizer(model2, RunConfig(model=CFG), "cpu")
    state = ckpt.load_training_state(tmp_path, model2, opt2)
    assert state["step"] == 3
    for (n, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), n
    # The tied head still shares the embedding after loading.
    assert model2.lm_head.weight.data_ptr() == model2.transformer.wte.weight.data_ptr()
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for key, value in s1["state"][pid].items():
            assert torch.equal(value, s2["state"][pid][key]), (pid, key)
    # And training continues identically from both.
    x = torch.randint(0, CFG.vocab_size, (4, CFG.block_size), generator=torch.Generator().manual_seed(5))
    for m, o in ((model, opt), (model2, opt2)):
        _, loss = m(x, x)
        loss.backward()
        o.step()
    assert torch.equal(model.lm_head.weight, model2.lm_head.weight)


def _safetensors_layout(data: bytes) -> dict:
    """The header of a well-formed safetensors file: an 8-byte length, that much JSON, then plain tensor bytes
    that the header's offsets cover exactly. Anything else (a pickle, torch.save's zip) fails here."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    spans = sorted(tuple(v["data_offsets"]) for v in tensors.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert 8 + n + spans[-1][1] == len(data)
    assert {v["dtype"] for v in tensors.values()} <= {"F32", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL"}
    return header


def test_nothing_is_pickled(tmp_path, monkeypatch):
    model, opt = _trained()
    path = ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state())
    # Every file is plain safetensors or JSON...
    assert _safetensors_layout((path / "model.safetensors").read_bytes())
    assert _safetensors_layout((path / "optim.safetensors").read_bytes())
    assert json.loads((path / "state.json").read_text())["step"] == 3
    # ...and the resume path loads all of it with every unpickler out of reach.
    import pickle

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint load unpickled something")

    for owner, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(owner, name, no_unpickling)
    torch.manual_seed(1)
    model2 = build_model(CFG)
    assert ckpt.load_training_state(tmp_path, model2, make_optimizer(model2, RunConfig(model=CFG), "cpu"))["step"] == 3
    assert torch.equal(model2.lm_head.weight, model.lm_head.weight)


def test_rng_state_survives_base64(tmp_path):
    g = torch.Generator().manual_seed(7)
    g.manual_seed(7)
    saved = ckpt.encode_bytes(g.get_state())
    expected = torch.randint(0, 1000, (5,), generator=g)
    g2 = torch.Generator()
    g2.set_state(ckpt.decode_bytes(saved))
    assert torch.equal(torch.randint(0, 1000, (5,), generator=g2), expected)


def test_replacing_keeps_one_complete_checkpoint(tmp_path):
    model, opt = _trained()
    ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state(3))
    ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state(6))
    root = tmp_path / "ckpt"
    assert sorted(p.name for p in root.iterdir()) == ["latest"]  # no temp or old dirs left
    assert ckpt.read_state(ckpt.checkpoint_dir(tmp_path, "latest"))["step"] == 6


def test_crash_between_renames_leaves_the_previous_checkpoint_readable(tmp_path):
    model, opt = _trained()
    ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state(3))
    root = tmp_path / "ckpt"
    # kill -9 right after "rename old away": only .old-latest-<pid> exists, plus a half-written temp dir.
    os.replace(root / "latest", root / ".old-latest-12345")
    (root / ".tmp-latest-12345").mkdir()
    (root / ".tmp-latest-12345" / "model.safetensors").write_bytes(b"partial")
    found = ckpt.checkpoint_dir(tmp_path, "latest")
    assert found == root / ".old-latest-12345"
    assert ckpt.read_state(found)["step"] == 3
    # The next save cleans up and leaves just the new one.
    ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state(9))
    assert sorted(p.name for p in root.iterdir()) == ["latest"]


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained()
    ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state(3))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(CheckpointError, match="disk space"):
        ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state(6))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["latest"]
    assert ckpt.read_state(ckpt.checkpoint_dir(tmp_path, "latest"))["step"] == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_model_file_is_named(tmp_path, damage):
    model, opt = _trained()
    path = ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state()) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\xff" * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors") as e:
        ckpt.load_weights(build_model(CFG), path)
    assert "corrupt or truncated" in str(e.value)


def test_weights_of_another_shape_are_refused(tmp_path):
    model, opt = _trained()
    path = ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state()) / "model.safetensors"
    other = build_model(ModelConfig(kind="gpt", vocab_size=37, n_layer=2, n_head=2, n_embd=32, block_size=8))
    with pytest.raises(CheckpointError, match="does not match"):
        ckpt.load_weights(other, path)


def test_resume_with_a_changed_model_config_is_a_config_error(tmp_path):
    model, opt = _trained()
    ckpt.save_checkpoint(tmp_path, "latest", model, opt, _state())
    wider = ModelConfig(kind="gpt", vocab_size=37, n_layer=2, n_head=2, n_embd=32, block_size=8)
    m2 = build_model(wider)
    with pytest.raises(ConfigError, match=r"n_embd 16 -> 32"):
        ckpt.load_training_state(tmp_path, m2, make_optimizer(m2, RunConfig(model=wider), "cpu"))


def test_no_checkpoint_to_resume(tmp_path):
    model, opt = _trained()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load_training_state(tmp_path, model, opt)
