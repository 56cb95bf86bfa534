"""`smallgpt tokenizer train|encode`: train a tokenizer on a corpus; see how a text splits into tokens."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from engine.corpora import load_corpus
from engine.tokenizer import Tokenizer, train_tokenizer

from .corpus import print_warnings, progress_bar

TOKEN_STYLES = ("black on cyan", "black on yellow", "black on green", "black on magenta")


def run(args: argparse.Namespace, console: Console) -> int:
    return _train(args, console) if args.action == "train" else _encode(args, console)


def _train(args: argparse.Namespace, console: Console) -> int:
    t0 = time.perf_counter()
    with progress_bar(f"{args.kind} tokenizer") as progress:
        corpus = load_corpus(args.corpus, progress)
        tok = train_tokenizer(corpus, args.kind, args.vocab_size, progress)
    out = Path(args.out)
    tok.save(out)
    seconds = time.perf_counter() - t0
    print_warnings(corpus.warnings)
    report = tok.training_report or {}
    result = {"path": str(out), "corpus": args.corpus, "kind": tok.kind, "vocab_size": tok.vocab_size,
              "chars_per_token": report.get("chars_per_token"), "unk_rate": report.get("unk_rate"),
              "heldout_chars": report.get("chars", 0), "sha256": tok.sha256(), "seconds": round(seconds, 3)}
    if args.json:
        console.out(json.dumps(result), highlight=False)
        return 0
    table = Table(title=f"{tok.kind} tokenizer -> {escape(str(out))}", title_justify="left", show_header=False)
    table.add_column(justify="right", style="bold")
    table.add_column(justify="right")
    table.add_row("vocab size", f"{tok.vocab_size:,}")
    if report:
        table.add_row("chars per token (held out)", f"{report['chars_per_token']:.3f}")
        table.add_row("unknown-token rate (held out)", f"{report['unk_rate']:.2%}")
        table.add_row("held-out characters", f"{report['chars']:,}")
    table.add_row("time", f"{seconds:.1f} s")
    console.print(table)
    return 0


def _encode(args: argparse.Namespace, console: Console) -> int:
    tok = Tokenizer.load(Path(args.tokenizer))
    ids = tok.encode(args.text)
    tokens = [tok.id_to_token(i) for i in ids]
    if args.json:
        console.out(json.dumps({"ids": ids, "tokens": tokens, "count": len(ids), "chars": len(args.text),
                                "kind": tok.kind, "vocab_size": tok.vocab_size}, ensure_ascii=False), highlight=False)
        return 0
    pieces = Text()
    for n, token in enumerate(tokens):
        pieces.append(token.replace("\n", "↵").replace("\t", "⇥"), style=TOKEN_STYLES[n % len(TOKEN_STYLES)])
    console.print(pieces)
    console.print(Text(" ".join(map(str, ids)), style="dim"))
    ratio = len(args.text) / len(ids) if ids else 0.0
    console.print(f"{len(ids)} tokens, {len(args.text)} characters ({ratio:.2f} chars per token)")
    return 0
