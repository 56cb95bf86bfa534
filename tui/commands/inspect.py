"""`smallgpt inspect RUN --prompt TEXT`: one head's attention heatmap, every head's metrics and badge, and
the model's next-token guesses (--json: metrics, badges, top-k and logit lens as one object)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.errors import ConfigError
from engine.runs import resolve_run
from tui.render.heatmap import AttentionHeatmap, token_label

LAST_POSITIONS = 8  # next-token rows shown: the end of the prompt is where a continuation starts
GUESSES = 3  # next-token columns that fit 80 columns (--json has all top-k)


def run(args: argparse.Namespace, console: Console) -> int:
    from engine.checkpoint import load_model
    from engine.inspection import inspect_prompt

    model, _, tokenizer = load_model(resolve_run(args.run), args.checkpoint)
    ins = inspect_prompt(model, tokenizer, args.prompt)
    if ins.kind == "gpt":
        n_layers, n_heads = ins.attn.shape[:2]
        _check_range("--layer", args.layer, n_layers, "layers")
        _check_range("--head", args.head, n_heads, "heads")
    if args.json:
        console.print_json(json.dumps(ins.to_dict()))
        return 0
    if ins.kind == "gpt":
        m = ins.metrics[args.layer][args.head]
        title = f"layer {args.layer} head {args.head}" + (f" [{m.badge}]" if m.badge else "")
        console.print(AttentionHeatmap(ins.attn[args.layer, args.head], ins.tokens, title=title))
        console.print(_head_table(ins, args.layer, args.head))
    else:
        console.print("LSTM runs have no attention heads: next-token view only "
                      "(the TUI's Inspect tab shows the hidden activations).", style="dim")
    console.print(_next_token_table(ins))
    return 0


def _check_range(flag: str, value: int, count: int, what: str) -> None:
    if not 0 <= value < count:
        raise ConfigError(f"{flag} {value} is out of range: the model has {count} {what} (0..{count - 1}).")


def _head_table(ins, layer: int, head: int) -> Table:
    table = Table("layer", "head", "entropy", "prev", "sink", "induct", "dist", "badge", title="head metrics",
                  caption="badges: I induction, P previous token, S sink, D diffuse")
    for row in ins.metrics:
        for m in row:
            values = [m.entropy, m.prev_token, m.sink, m.induction]
            cells = ["-" if v != v else f"{v:.2f}" for v in values] + ["-" if m.distance != m.distance else f"{m.distance:.1f}"]
            table.add_row(str(m.layer), str(m.head), *cells, m.badge,
                          style="reverse" if (m.layer, m.head) == (layer, head) else None)
    return table


def _next_token_table(ins) -> Table:
    k = min(GUESSES, ins.topk_probs.shape[1])
    table = Table("pos", "token", "entropy", *[f"#{i + 1}" for i in range(k)], title="next-token guesses")
    start = max(0, len(ins.tokens) - LAST_POSITIONS)
    for p in range(start, len(ins.tokens)):
        guesses = [Text(f"{token_label(t, 6)} {prob:.2f}") for t, prob in zip(ins.topk_tokens[p][:k], ins.topk_probs[p][:k])]
        table.add_row(str(p), Text(token_label(ins.tokens[p], 8)), f"{ins.entropy[p]:.2f}", *guesses)
    return table
