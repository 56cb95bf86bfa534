"""`smallgpt corpus list|stats|show`: what corpora there are, their statistics, their first lines."""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from dataclasses import asdict
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.corpora import CorpusStats, corpus_stats, list_corpora, load_corpus

BAR_WIDTH = 30


def run(args: argparse.Namespace, console: Console) -> int:
    if args.action == "list":
        return _list(args, console)
    if args.action == "stats":
        return _stats(args, console)
    return _show(args, console)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[float, str], None]]:
    """An engine progress callback drawn as a transient bar on stderr, so stdout stays clean for --json."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=1.0)

        def update(fraction: float, phase: str) -> None:
            progress.update(task, completed=fraction, description=f"{label}: {phase}")

        yield update


def print_warnings(warnings: list[str]) -> None:
    err = Console(stderr=True, highlight=False)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


def _list(args: argparse.Namespace, console: Console) -> int:
    infos = list_corpora()
    if args.json:
        console.out(json.dumps({"corpora": [asdict(i) for i in infos]}), highlight=False)
        return 0
    table = Table(title="Corpora", title_justify="left")
    for col in ("name", "kind", "description", "status"):
        table.add_column(col)
    for i in infos:
        status = ("prepared" if i.kind == "builtin" else "downloaded") if i.cached else \
            ("extracted on first use" if i.kind == "builtin" else "downloaded on first use")
        table.add_row(f"[bold]{escape(i.name)}[/]", i.kind, escape(i.description), status)
    console.print(table)
    console.print("Any file, folder, glob (.txt, .md, .jsonl) or http(s) URL works as a corpus too.")
    return 0


def _stats(args: argparse.Namespace, console: Console) -> int:
    with progress_bar(args.source) as progress:
        stats = corpus_stats(load_corpus(args.source, progress), progress)
    print_warnings(stats.warnings)
    if args.json:
        console.out(json.dumps({"source": args.source, **stats.to_dict()}, ensure_ascii=False), highlight=False)
        return 0
    render_stats(stats, console)
    return 0


def render_stats(s: CorpusStats, console: Console) -> None:
    summary = Table(title=f"Corpus {escape(s.name)}", title_justify="left", show_header=False)
    summary.add_column(justify="right", style="bold")
    summary.add_column(justify="right")
    for label, value in [("characters", f"{s.chars:,}"), ("bytes", f"{s.bytes:,}"), ("words", f"{s.words:,}"),
                         ("unique words", f"{s.unique_words:,}"), ("lines", f"{s.lines:,}"),
                         ("distinct characters", f"{s.distinct_chars:,}"), ("longest line", f"{s.max_line_length:,}"),
                         ("non-ASCII share", f"{s.non_ascii_share:.2%}"), ("replaced bytes", f"{s.replaced_bytes:,}")]:
        summary.add_row(label, value)
    console.print(summary)
    console.print(_bars("top words", [(w, n) for w, n in s.top_words[:15]]))
    console.print(_bars("characters", [(_show_char(c), n) for c, n in s.char_hist[:15]]))
    console.print(_bars("line lengths (up to)", [(str(edge), n) for edge, n in s.line_length_hist]))


def _bars(title: str, rows: list[tuple[str, int]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(justify="right", style="bold")
    table.add_column(justify="right")
    table.add_column()
    top = max((n for _, n in rows), default=1) or 1
    for label, n in rows:
        table.add_row(escape(label), f"{n:,}", "[cyan]" + "█" * max(1 if n else 0, round(BAR_WIDTH * n / top)) + "[/]")
    return table


def _show_char(c: str) -> str:
    """Whitespace and control characters made visible."""
    return {" ": "␠ space", "\n": "↵ newline", "\t": "⇥ tab", "\r": "␍ return"}.get(c) or \
        (c if c.isprintable() else f"U+{ord(c):04X}")


def _show(args: argparse.Namespace, console: Console) -> int:
    with progress_bar(args.source) as progress:
        corpus = load_corpus(args.source, progress)
    for line in corpus.head(args.lines):
        console.out(line, highlight=False)
    return 0
