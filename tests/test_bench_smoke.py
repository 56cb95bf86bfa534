"""benchmarks/bench.py runs: its cheapest row (decode) on a tiny shape and a small corpus, and the table.

Not a timing test: the numbers on a shared machine mean nothing here, only that the row measures both
sides, that greedy decoding produced every token it timed, and that the result renders.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


def test_decode_row_measures_both_sides_and_renders(home, small_corpus):
    bench = _bench()
    settings = bench.Settings.make(quick=True)
    settings.corpus = str(small_corpus)
    settings.decode_tokens = 8
    rows = bench.rows_decode(bench.Bench(settings, home))

    assert [r.name for r in rows] == ["decode tokens/s tiny, cache vs recompute"]
    row = rows[0]
    assert row.ours > 0 and row.base > 0
    assert row.ratio == row.ours / row.base
    table = bench.table(rows)
    assert table.splitlines()[0].startswith("| row | ours | baseline |")
    assert "decode tokens/s tiny" in table.splitlines()[2]
