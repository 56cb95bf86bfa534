"""engine.corpora: built-ins, local sources, URLs (a local http.server), bad input, streamed statistics."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from engine import corpora
from engine.corpora import CorpusStats, corpus_stats, list_corpora, load_corpus, prepare_builtin
from engine.errors import CorpusError


# ------------------------------------------------------------------------------------------- built-ins

def test_python_docs_is_prose_from_topics_and_docstrings(home):
    corpus = load_corpus("python-docs")
    assert corpus.kind == "builtin" and corpus.total_bytes > 2_000_000
    text = corpus.read_text()
    assert 'The "assert" statement' in text  # pydoc_data.topics
    assert "json.decoder.JSONDecoder\n\nSimple JSON <https://json.org> decoder" in text  # a class docstring
    assert "\ntest.support" not in text and "idlelib.idle_test" not in text
    assert corpus.replaced_bytes == 0 and corpus.warnings == []


def test_python_code_is_stdlib_source_without_tests(home):
    text = load_corpus("python-code").read_text()
    headers = re.findall(r"^# file: (\S+\.py)$", text, flags=re.M)
    assert "json/decoder.py" in headers and "collections/__init__.py" in headers
    assert headers == sorted(headers)  # deterministic order
    assert not [h for h in headers if re.search(r"(^|/)(test|tests|idle_test|site-packages)/", h)]


def test_builtin_is_prepared_once_and_reused(home, tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLGPT_BUILTIN_CACHE", str(tmp_path / "fresh"))
    path = prepare_builtin("python-code")
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert load_corpus("python-code").paths == [path]
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    monkeypatch.setenv("SMALLGPT_BUILTIN_CACHE", str(tmp_path / "again"))
    assert prepare_builtin("python-code").read_bytes() == first  # the extraction is deterministic
    assert not list((tmp_path / "again").glob(".*.part"))  # the atomic write left no temporary behind


def test_preparing_python_docs_imports_no_stdlib_module(tmp_path):
    # antigravity opens a browser and `this` prints a poem: docstrings are read with ast, never by import.
    code = ("import sys\nfrom engine.corpora import prepare_builtin\np = prepare_builtin('python-docs')\n"
            "print(p.stat().st_size, sorted({'antigravity', 'this', 'turtle', 'tkinter', 'idlelib'} & set(sys.modules)))")
    env = {"SMALLGPT_BUILTIN_CACHE": str(tmp_path / "cold"), "SMALLGPT_HOME": str(tmp_path), "PATH": ""}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    size, imported = r.stdout.split(" ", 1)
    assert int(size) > 2_000_000 and imported.strip() == "[]"


def test_list_corpora_builtins_then_catalog(home):
    infos = list_corpora()
    assert [i.name for i in infos[:2]] == ["python-docs", "python-code"]
    shakespeare = next(i for i in infos if i.name == "tiny-shakespeare")
    assert shakespeare.kind == "catalog" and shakespeare.url.startswith("https://")
    assert re.fullmatch(r"[0-9a-f]{64}", shakespeare.sha256) and not shakespeare.cached


# --------------------------------------------------------------------------------------- local sources

def test_file_is_streamed_in_chunks_and_multibyte_chars_survive_chunk_edges(home):
    text = "héllo wörld €uro 🎉\n" * 50
    path = home / "a.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(str(path))
    chunks = list(corpus.iter_text(chunk_chars=7))  # 7-byte reads cut most multi-byte characters in two
    assert len(chunks) > 100 and "".join(chunks) == text
    assert corpus.replaced_bytes == 0 and corpus.name == "a.txt"


def test_iter_text_reports_progress_up_to_one(home):
    path = home / "a.txt"
    path.write_text("x" * 10_000)
    seen = []
    list(load_corpus(str(path)).iter_text(chunk_chars=1000, progress=lambda f, _: seen.append(f)))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 10


def test_folder_reads_text_files_in_order_and_skips_others(home):
    d = home / "texts"
    (d / "sub").mkdir(parents=True)
    (d / "b.md").write_text("# bee")
    (d / "a.txt").write_text("ay")
    (d / "sub" / "c.txt").write_text("sea")
    (d / "skip.py").write_text("print('no')")
    (d / "empty.txt").write_text("")
    (d / ".hidden.txt").write_text("secret")
    corpus = load_corpus(str(d))
    assert [p.name for p in corpus.paths] == ["a.txt", "b.md", "c.txt"]
    assert corpus.read_text() == "ay\n\n# bee\n\nsea"


def test_glob_matches_files(home):
    for name in ("x1.txt", "x2.txt", "y.txt"):
        (home / name).write_text(name)
    corpus = load_corpus(str(home / "x*.txt"))
    assert corpus.kind == "glob" and corpus.read_text() == "x1.txt\n\nx2.txt"


def test_jsonl_reads_the_text_field_of_each_record(home):
    path = home / "data.jsonl"
    path.write_text('{"text": "first record"}\n\n{"text": "second\\nrecord", "id": 2}\n')
    assert load_corpus(str(path)).read_text() == "first record\n\nsecond\nrecord"


@pytest.mark.parametrize("line, message", [('{"text": 3}', 'line 2 has no "text" string'),
                                           ("not json", "line 2 is not valid JSON")])
def test_bad_jsonl_line_is_named(home, line, message):
    path = home / "data.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    with pytest.raises(CorpusError, match=message):
        load_corpus(str(path)).read_text()


def test_invalid_utf8_is_replaced_and_counted(home):
    path = home / "latin1.txt"
    path.write_bytes("café au lait, ".encode("latin-1") + b"ok \xff\xfe end\n")
    corpus = load_corpus(str(path))
    text = corpus.read_text()
    assert text == "caf\ufffd au lait, ok \ufffd\ufffd end\n"
    assert corpus.replaced_bytes == 3
    assert corpus.warnings == ["latin1.txt: 3 bytes of invalid UTF-8 replaced with U+FFFD."]
    stats = corpus_stats(load_corpus(str(path)))
    assert stats.replaced_bytes == 3 and stats.warnings == corpus.warnings


@pytest.mark.parametrize("make, message", [
    (lambda h: str(h / "missing.txt"), "No such file or folder"),
    (lambda h: "no-such-corpus", "Unknown corpus 'no-such-corpus': use one of python-docs, python-code, "
                                 "tiny-shakespeare"),
    (lambda h: (h / "e.txt").write_text("") and str(h / "e.txt") or str(h / "e.txt"), "is empty"),
    (lambda h: (h / "w.txt").write_text(" \n\t\n") and str(h / "w.txt"), "is empty"),
    (lambda h: (h / "b.bin").write_bytes(b"\x7fELF\x00\x01" * 100) and str(h / "b.bin"), "binary file"),
    (lambda h: (h / "d").mkdir() or str(h / "d"), "holds no .txt, .md, .jsonl files"),
    (lambda h: str(h / "*.nothing"), "matches no files"),
    (lambda h: "ftp://example.com/x.txt", "only http:// and https:// URLs"),
    (lambda h: "", "No corpus given"),
])
def test_bad_sources_get_one_clear_sentence(home, make, message):
    with pytest.raises(CorpusError, match=re.escape(message)) as e:
        load_corpus(make(home))
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_fingerprint_follows_content(home):
    path = home / "a.txt"
    path.write_text("one")
    before = load_corpus(str(path)).fingerprint()
    assert load_corpus(str(path)).fingerprint() == before
    path.write_text("one two")
    assert load_corpus(str(path)).fingerprint() != before


# ------------------------------------------------------------------------------------------------ URLs

class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: Counter = Counter()

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits[self.path] += 1
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for k, v in headers.items():
            if v:  # an empty value: leave the header out
                self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (there is no internet here); yields its base URL."""
    _Handler.routes = {}
    _Handler.hits = Counter()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


BODY = b"To be, or not to be, that is the question.\n" * 100


def test_url_is_downloaded_once_and_cached(home, server):
    _Handler.routes["/hamlet.txt"] = (200, {}, BODY)
    corpus = load_corpus(f"{server}/hamlet.txt")
    assert corpus.kind == "url" and corpus.name == "hamlet.txt" and corpus.read_text() == BODY.decode()
    assert corpus.paths[0].parent == home / "corpora" / "cache" / "downloads"
    assert load_corpus(f"{server}/hamlet.txt").read_text() == BODY.decode()
    assert _Handler.hits["/hamlet.txt"] == 1


def _catalog_entry(home, name, url, sha256):
    with (home / "corpora" / "catalog.toml").open("a") as f:
        f.write(f'\n[{name}]\nurl = "{url}"\nsha256 = "{sha256}"\ndescription = "test"\n')


def test_catalog_entry_checks_sha256(home, server):
    _Handler.routes["/good.txt"] = (200, {}, BODY)
    _catalog_entry(home, "good", f"{server}/good.txt", hashlib.sha256(BODY).hexdigest())
    assert load_corpus("good").read_text() == BODY.decode()
    assert next(i for i in list_corpora() if i.name == "good").cached


def test_sha256_mismatch_discards_the_file(home, server):
    _Handler.routes["/changed.txt"] = (200, {}, BODY)
    _catalog_entry(home, "changed", f"{server}/changed.txt", "0" * 64)
    with pytest.raises(CorpusError, match="does not match its pinned sha256.*discarded"):
        load_corpus("changed")
    downloads = home / "corpora" / "cache" / "downloads"
    assert list(downloads.iterdir()) == []  # neither the file nor a temporary is kept


def test_download_over_the_cap_is_aborted(home, server):
    _Handler.routes["/big.txt"] = (200, {}, BODY)
    with pytest.raises(CorpusError, match="larger than the cap of 100 bytes and was aborted"):
        load_corpus(f"{server}/big.txt", max_download_bytes=100)
    with pytest.raises(CorpusError, match=r"larger than the cap of 1,500 bytes and was aborted"):
        load_corpus(f"{server}/big.txt", max_download_bytes=1_500)
    from engine.corpora import DEFAULT_MAX_DOWNLOAD_BYTES, _too_big  # the default: too large to download here

    assert "larger than the cap of 200 MB and" in str(_too_big("http://x/y", DEFAULT_MAX_DOWNLOAD_BYTES))
    assert list((home / "corpora" / "cache" / "downloads").iterdir()) == []


def test_download_cap_holds_when_the_server_hides_the_length(home, server):
    # With no Content-Length the body runs until the connection closes: the cap counts the bytes received.
    _Handler.routes["/liar.txt"] = (200, {"Content-Length": ""}, BODY)
    with pytest.raises(CorpusError, match="larger than the cap of 50 bytes and was aborted"):
        load_corpus(f"{server}/liar.txt", max_download_bytes=50)


def test_redirect_to_a_non_http_scheme_is_refused(home, server):
    _Handler.routes["/moved.txt"] = (302, {"Location": "file:///etc/passwd"}, b"")
    with pytest.raises(CorpusError, match="redirects to file:///etc/passwd, which is not http"):
        load_corpus(f"{server}/moved.txt")


def test_http_error_status_is_reported(home, server):
    with pytest.raises(CorpusError, match="answered 404"):
        load_corpus(f"{server}/missing.txt")


def test_unreachable_host_says_so_in_one_sentence(home):
    with socket.socket() as s:  # a port nobody listens on: connection refused, like an offline machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CorpusError) as e:
        load_corpus(f"http://127.0.0.1:{port}/x.txt")
    assert "the host 127.0.0.1 cannot be reached or this machine is offline" in str(e.value)


# ----------------------------------------------------------------------------------------------- stats

def test_stats_of_a_known_text(home):
    path = home / "t.txt"
    path.write_text("The cat sat.\nthe dog's bone é\n\nend")
    s = corpus_stats(str(path))
    assert isinstance(s, CorpusStats)
    assert (s.chars, s.words, s.unique_words, s.lines) == (34, 8, 7, 4)
    assert s.top_words[0] == ("the", 2)
    assert dict(s.char_hist)[" "] == 5 and dict(s.char_hist)["é"] == 1
    assert s.non_ascii_share == pytest.approx(1 / 34)
    assert s.line_length_hist == [(0, 1), (10, 1), (16, 2)] and s.max_line_length == 16
    d = s.to_dict()
    assert json.loads(json.dumps(d))["top_words"][0] == ["the", 2]
    for key in ("chars", "words", "unique_words", "lines", "non_ascii_share", "top_words"):
        assert key in d


def test_streamed_stats_equal_whole_text_stats(home):
    # Over 1 MB, so several chunks: words and lines cut by a chunk edge must be counted once, whole.
    words = [f"w{i % 997}x" for i in range(400_000)]
    text = "".join(w + ("\n" if i % 13 == 0 else " ") for i, w in enumerate(words))
    path = home / "big.txt"
    path.write_text(text)
    s = corpus_stats(str(path))
    expected = Counter(re.findall(r"\w+", text))
    assert s.words == sum(expected.values()) and s.unique_words == len(expected)
    assert s.top_words[:3] == expected.most_common(3)
    assert s.lines == len(text.splitlines()) and s.chars == len(text)


def test_stats_of_builtin_corpus(home):
    s = corpus_stats("python-docs")
    assert s.words > 300_000 and s.unique_words > 10_000 and s.top_words[0][0] == "the"
    assert 0 <= s.non_ascii_share < 0.01


def test_download_dir_name_is_safe(home):
    path = corpora._download_path("https://example.com/a b/../we ird?.txt")
    assert path.parent == home / "corpora" / "cache" / "downloads" and " " not in path.name
