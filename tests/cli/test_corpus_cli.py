"""`smallgpt corpus ...` and `smallgpt tokenizer ...` run as real commands in a subprocess."""

from __future__ import annotations


import pytest

from conftest import one_json, smallgpt


def test_corpus_list(home):
    names = [c["name"] for c in one_json(smallgpt(home, "corpus", "list", "--json"))["corpora"]]
    assert names[:3] == ["python-docs", "python-code", "tiny-shakespeare"]
    r = smallgpt(home, "corpus", "list")
    assert r.returncode == 0 and "tiny-shakespeare" in r.stdout and "downloaded on first use" in r.stdout


def test_corpus_stats_of_the_builtin_corpus_as_json(home):
    s = one_json(smallgpt(home, "corpus", "stats", "python-docs", "--json"))
    for key in ("chars", "words", "unique_words", "lines", "non_ascii_share", "top_words"):
        assert key in s
    assert s["chars"] > 2_000_000 and s["top_words"][0][0] == "the"


def test_corpus_stats_table(home, small_corpus):
    r = smallgpt(home, "corpus", "stats", str(small_corpus))
    assert r.returncode == 0, r.stderr
    for label in ("characters", "unique words", "non-ASCII share", "top words", "line lengths"):
        assert label in r.stdout


def test_corpus_show_prints_the_first_lines_verbatim(home):
    path = home / "markup.txt"
    path.write_text("[bold]not markup[/] :smile:\nsecond\nthird\nfourth\n")
    r = smallgpt(home, "corpus", "show", str(path), "--lines", "3")
    assert r.returncode == 0 and r.stdout == "[bold]not markup[/] :smile:\nsecond\nthird\n"


def test_invalid_utf8_warns_and_still_reports(home):
    path = home / "bad.txt"
    path.write_bytes(b"good text \xff\xfe\xfd here\n")
    r = smallgpt(home, "corpus", "stats", str(path), "--json")
    assert one_json(r)["replaced_bytes"] == 3
    assert "warning: bad.txt: 3 bytes of invalid UTF-8 replaced" in r.stderr


@pytest.mark.parametrize("make, message", [
    (lambda h: str(h / "nope.txt"), "error: No such file or folder"),
    (lambda h: "shakespear", "error: Unknown corpus 'shakespear': use one of python-docs, python-code"),
    (lambda h: (h / "x.bin").write_bytes(b"\x00\x01\x02") and str(h / "x.bin"), "looks like a binary file"),
    (lambda h: (h / "e.txt").write_text("") or str(h / "e.txt"), "is empty"),
])
def test_bad_source_is_one_error_line(home, make, message):
    r = smallgpt(home, "corpus", "stats", make(home))
    assert r.returncode == 1 and r.stdout == ""
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_tokenizer_train_then_encode(home, small_corpus):
    out = home / "tok.json"
    t = one_json(smallgpt(home, "tokenizer", "train", "--corpus", str(small_corpus), "--kind", "bpe",
                          "--vocab-size", "500", "--out", str(out), "--json"))
    assert out.is_file() and t["kind"] == "bpe" and t["vocab_size"] == 500
    assert t["chars_per_token"] > 1.5 and t["unk_rate"] == 0.0
    e = one_json(smallgpt(home, "tokenizer", "encode", "--tokenizer", str(out), "héllo 🎉\tworld", "--json"))
    assert e["count"] == len(e["ids"]) == len(e["tokens"]) > 0
    from engine.tokenizer import Tokenizer

    assert Tokenizer.load(out).decode(e["ids"]) == "héllo 🎉\tworld"
    r = smallgpt(home, "tokenizer", "encode", "--tokenizer", str(out), "hello world")
    assert r.returncode == 0 and "chars per token" in r.stdout


def test_tokenizer_train_refuses_a_too_small_vocab(home, small_corpus):
    r = smallgpt(home, "tokenizer", "train", "--corpus", str(small_corpus), "--kind", "bpe", "--vocab-size", "100",
                 "--out", str(home / "t.json"))
    assert r.returncode == 1 and "choose 258 or more" in r.stderr and not (home / "t.json").exists()
