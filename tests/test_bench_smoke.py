"""benchmarks/bench.py runs: its cheapest row (decode) on a tiny shape and a small corpus, and the table.

Not a timing test: the numbers on a shared machine mean nothing here, only that the row measures both
sides, that greedy decoding produced every token it timed, and that the result renders.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_quality_row_times_both_sides_to_the_reference_final_loss(home, small_corpus):
    bench = _bench()
    settings = bench.Settings.make(quick=True)
    settings.corpus = str(small_corpus)
    settings.quality_corpora = (str(small_corpus),)
    b = bench.Bench(settings, home)
    val = [b.data[2].get_batch(4, 64, bench.torch.Generator().manual_seed(0)) for _ in range(2)]
    ref = bench.quality_reference(b, str(small_corpus), 1, val)
    assert len(ref) == 3  # an eval every 30 // 3 = 10 steps
    assert [t for t, _ in ref] == sorted(t for t, _ in ref)
    assert ref[-1][1] < ref[0][1]  # the recipe learns over its 30 steps
    rows = bench.rows_quality(b)
    assert len(rows) == 1 and rows[0].base > 0
    assert rows[0].ratio == (rows[0].ours / rows[0].base if rows[0].ours != float("inf") else float("inf"))
    assert "val loss at" in rows[0].note
