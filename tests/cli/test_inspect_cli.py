"""`smallgpt quantize | inspect` (and generate/eval on the int8 checkpoint) as real commands in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from rich.cells import cell_len

from conftest import BIN, smallgpt as run_smallgpt

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROMPT = "The import statement finds a module, loads and initializes it, then binds names in the local scope."


@pytest.fixture(scope="module")
def run_home(tmp_path_factory) -> Path:
    """A home with one briefly trained GPT run named "r" (2 layers x 2 heads, block 96)."""
    from engine import runs
    from engine.config import apply_overrides, preset
    from engine.corpora import prepare_builtin
    from engine.trainer import train

    home = tmp_path_factory.mktemp("inspect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLGPT_HOME", str(home))
        (home / "docs.txt").write_text(prepare_builtin("python-docs").read_text(encoding="utf-8")[:30_000],
                                       encoding="utf-8")
        cfg = apply_overrides(preset("tiny"), {
            "model": dict(n_layer=2, n_head=2, n_embd=32, block_size=96),
            "data": dict(corpus=str(home / "docs.txt"), tokenizer_kind="char"),
            "train": dict(batch_size=4, max_steps=6, warmup_steps=1, eval_interval=6, eval_batches=1,
                          sample_tokens=0)})
        train(runs.create_run(cfg, name="r"))
    return home


def smallgpt(home: Path, *args: str, color: bool = False, columns: int = 80) -> subprocess.CompletedProcess:
    # color: a truecolor terminal, as Rich sees one through these variables
    colors = dict(NO_COLOR=None, FORCE_COLOR="1", COLORTERM="truecolor", TERM="xterm-256color") if color else {}
    return run_smallgpt(home, *args, COLUMNS=str(columns), **colors)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


@pytest.mark.slow
def test_quantize_then_generate_and_eval_from_the_int8_checkpoint(run_home):
    report = json.loads(ok(smallgpt(run_home, "quantize", "r", "--json")))
    assert {"fp32_bytes", "int8_bytes", "fp32_val_loss", "int8_val_loss"} <= set(report)
    assert report["int8_bytes"] < report["fp32_bytes"]
    assert (run_home / "checkpoints" / "r" / "ckpt" / "int8" / "model.safetensors").is_file()
    gen = json.loads(ok(smallgpt(run_home, "generate", "r", "--checkpoint", "int8", "--prompt", "The ",
                                 "--max-new-tokens", "12", "--seed", "1", "--json")))
    assert gen["tokens"] == 12 and gen["text"]
    ev = json.loads(ok(smallgpt(run_home, "eval", "r", "--checkpoint", "int8", "--json")))
    # The validation split is far smaller than either token budget: both saw the same windows.
    assert ev["val_loss"] == pytest.approx(report["int8_val_loss"], rel=1e-5)
    table = ok(smallgpt(run_home, "quantize", "r"))
    assert "int8 checkpoint written" in table and "decode tokens/s" in table


@pytest.mark.slow
def test_inspect_draws_a_plain_text_heatmap_at_80_columns_with_no_color(run_home):
    out = ok(smallgpt(run_home, "inspect", "r", "--prompt", PROMPT, "--layer", "1", "--head", "1"))
    assert "\x1b" not in out and "▀" not in out  # NO_COLOR: the character ramp, no escape codes
    lines = out.splitlines()
    assert all(cell_len(line) <= 80 for line in lines)
    assert lines[0].startswith("layer 1 head 1")
    assert "(tokens 18..95 of 96" in lines[0]  # 96 tokens do not fit beside the labels: the last 78 are shown
    rows = [line for line in lines[1:] if re.match(r"^\s*\S \S*[ .:\-=+*#%@]*$", line)]
    assert len(rows) >= 40  # one line per query token
    assert "head metrics" in out and "badges: I induction" in out
    assert re.search(r"│ 1\s+│ 1\s+│ \d\.\d\d", out)  # the table has the selected head's row
    assert "next-token guesses" in out


@pytest.mark.slow
def test_inspect_in_a_color_terminal_uses_half_blocks_and_fits_80_columns(run_home):
    out = ok(smallgpt(run_home, "inspect", "r", "--prompt", "def f(x):\n    return x", color=True))
    assert "▀" in out and "\x1b[38;2;" in out  # truecolor foreground on each half block
    plain = ANSI.sub("", out)
    assert all(cell_len(line) <= 80 for line in plain.splitlines())
    assert "⏎" in plain  # the newline token is labelled, not printed raw


@pytest.mark.slow
def test_inspect_json_and_bad_head(run_home):
    data = json.loads(ok(smallgpt(run_home, "inspect", "r", "--prompt", "import os", "--json")))
    assert data["tokens"] == list("import·os".replace("·", " "))
    assert len(data["heads"]) == 2 and len(data["heads"][0]) == 2
    assert {"entropy", "prev_token", "sink", "induction", "distance", "badge"} <= set(data["heads"][0][0])
    assert len(data["top_k"]) == 9 and len(data["logit_lens"]) == 3
    r = smallgpt(run_home, "inspect", "r", "--prompt", "x", "--head", "2")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: --head 2 is out of range: the model has 2 heads (0..1)."


def test_the_shared_heatmap_renderer_needs_rich_only():
    """tui/render is imported by the CLI: it must not pull Textual in (nor pay for its import)."""
    code = "import sys, tui.render.heatmap; sys.exit('textual' in sys.modules)"
    r = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr
