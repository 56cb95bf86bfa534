"""Corpus sources -> text: the built-ins, local files/folders/globs, and http(s) URLs.

Every source resolves to a `Corpus`: a list of files read back as a stream of text chunks, so a huge file
is never held whole in memory. The two built-ins are prepared once from the running Python's standard
library (nothing downloaded) into corpora/cache/builtin/ (or $SMALLGPT_BUILTIN_CACHE, which the tests
share across a session); URLs are downloaded once into corpora/cache/downloads/ with a size cap and, for
catalog entries, a sha256 check.
"""

from __future__ import annotations

import ast
import codecs
import gc
import glob
import hashlib
import http.client
import json
import os
import re
import sys
import sysconfig
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CorpusError
from .paths import cache_dir, catalog_path

Progress = Callable[[float, str], None]

BUILTINS: dict[str, str] = {
    "python-docs": "CPython reference topics and standard-library docstrings (English prose, a few MB)",
    "python-code": "the Python standard library's own source code, tests excluded",
}
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
DEFAULT_MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0
# Bump when the built-in extraction changes, so prepared copies and fingerprints are rebuilt.
_BUILTIN_FORMAT = 2
_SNIFF_BYTES = 8192
_DOC_SEPARATOR = "\n\n"
# Folders of the standard library that hold tests, build helpers or third-party packages, not the library;
# pydoc_data is the topics table, which python-docs takes whole (it is prose, not code).
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "pydoc_data"}
# surrogateescape turns each undecodable byte into one lone surrogate in this range: counting them counts
# the replaced bytes exactly, and valid UTF-8 never produces them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


@dataclass
class CorpusInfo:
    name: str
    kind: str  # "builtin" | "catalog"
    description: str
    url: str = ""
    sha256: str = ""
    cached: bool = False  # already prepared (built-in) or downloaded (catalog): no work, no network


@dataclass
class Corpus:
    source: str  # what the user typed
    name: str  # a short display name
    paths: list[Path]  # the files the text comes from, in reading order
    kind: str = "file"  # builtin | catalog | url | file | folder | glob
    warnings: list[str] = field(default_factory=list)  # replaced-bytes warnings, known after a full read
    _replaced: dict[Path, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    @property
    def replaced_bytes(self) -> int:
        """Invalid UTF-8 bytes replaced with U+FFFD; known once the text has been read to the end."""
        return sum(self._replaced.values())

    def iter_text(self, chunk_chars: int = 1 << 20, progress: Progress | None = None) -> Iterator[str]:
        """The corpus text in chunks of about chunk_chars characters, streamed from disk.

        Files (and the records of a .jsonl file) are separated by a blank line. progress, if given, gets
        the fraction of the corpus bytes read so far.
        """
        total = max(1, self.total_bytes)
        done = 0
        first = True
        for path in self.paths:
            reader = _iter_jsonl(path, chunk_chars) if path.suffix == ".jsonl" else _iter_file(path, chunk_chars)
            replaced = 0
            for text, nbytes, nreplaced in reader:
                replaced += nreplaced
                done += nbytes
                if text is None:  # a document starts
                    if not first:
                        yield _DOC_SEPARATOR
                    first = False
                elif text:
                    yield text
                if progress and nbytes:
                    progress(min(1.0, done / total), "reading")
            self._note_replaced(path, replaced)

    def read_text(self) -> str:
        return "".join(self.iter_text())

    def head(self, n_lines: int) -> list[str]:
        """The first n_lines lines, reading no more than needed."""
        lines: list[str] = []
        tail = ""
        for chunk in self.iter_text(chunk_chars=1 << 16):
            parts = (tail + chunk).split("\n")
            tail = parts.pop()
            lines.extend(parts)
            if len(lines) >= n_lines:
                return lines[:n_lines]
        return (lines + [tail])[:n_lines] if tail else lines

    def fingerprint(self) -> str:
        """Changes when the content changes: path, size and mtime of each file (a built-in: its version)."""
        h = hashlib.sha256()
        for p in self.paths:
            st = p.stat()
            if self.kind == "builtin":
                # A built-in is a pure function of the Python version and our extractor: preparing it again
                # (another project home, a cleared cache) must not invalidate the encoded datasets.
                h.update(f"{p.name}:{st.st_size}:{_builtin_version()}\n".encode())
            else:
                h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def _note_replaced(self, path: Path, count: int) -> None:
        self._replaced[path] = count
        self.warnings[:] = [f"{p.name}: {n} byte{'s' if n != 1 else ''} of invalid UTF-8 replaced with U+FFFD."
                            for p, n in self._replaced.items() if n]


# ---------------------------------------------------------------------------------------------- reading

def _decode_stream(chunks: Iterator[bytes]) -> Iterator[tuple[str, int, int]]:
    """(text, bytes consumed, bytes replaced) per raw chunk; multi-byte characters may span chunks."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    for raw in chunks:
        text, n = _ESCAPED_BYTE.subn("\ufffd", decoder.decode(raw))
        yield text, len(raw), n
    text, n = _ESCAPED_BYTE.subn("\ufffd", decoder.decode(b"", final=True))
    yield text, 0, n


def _iter_file(path: Path, chunk_chars: int) -> Iterator[tuple[str | None, int, int]]:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(chunk_chars):
                yield chunk

    yield None, 0, 0
    yield from _decode_stream(chunks())


def _iter_jsonl(path: Path, chunk_chars: int) -> Iterator[tuple[str | None, int, int]]:
    """The `text` field of each record, each record a document of its own."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            line, replaced = _ESCAPED_BYTE.subn("\ufffd", raw.decode("utf-8", errors="surrogateescape"))
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise CorpusError(f"{path.name} line {lineno} is not valid JSON: each line of a .jsonl corpus "
                                  'must be an object with a "text" field.') from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise CorpusError(f'{path.name} line {lineno} has no "text" string: each line of a .jsonl '
                                  'corpus must be an object like {"text": "..."}.')
            yield None, len(raw), replaced
            body = record["text"]
            for i in range(0, len(body), chunk_chars):  # a long record is handed on in chunk-sized slices
                yield body[i:i + chunk_chars], 0, 0


# ------------------------------------------------------------------------------------------- resolving

def list_corpora() -> list[CorpusInfo]:
    """The built-ins, then the catalog's named public corpora."""
    infos = [CorpusInfo(name, "builtin", desc, cached=_builtin_path(name).with_suffix(".version").exists())
             for name, desc in BUILTINS.items()]
    for name, entry in _catalog().items():
        if "task" in entry:  # task data (engine.tasks.records), not a corpus to pretrain on
            continue
        url = entry["url"]
        infos.append(CorpusInfo(name, "catalog", entry.get("description", ""), url=url,
                                sha256=entry.get("sha256", ""), cached=_download_path(url).exists()))
    return infos


def load_corpus(source: str, progress: Progress | None = None, *,
                max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> Corpus:
    """A built-in name, a catalog name, a file, a folder, a glob or an http(s) URL, resolved to a Corpus.

    Built-ins are prepared and URLs downloaded on first use (progress reports those); local files are only
    checked here (present, text, not empty), never read whole.
    """
    source = source.strip()
    if not source:
        raise CorpusError("No corpus given: name a built-in corpus (python-docs, python-code), a file, a folder, "
                          "a glob or an http(s) URL.")
    if source in BUILTINS:
        return Corpus(source, source, [prepare_builtin(source, progress)], kind="builtin")
    catalog = _catalog()
    if source in catalog:
        entry = catalog[source]
        path = download(entry["url"], sha256=entry.get("sha256") or None, max_bytes=max_download_bytes,
                        progress=progress)
        return Corpus(source, source, [_check_text_file(path)], kind="catalog")
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        path = download(source, max_bytes=max_download_bytes, progress=progress)
        return Corpus(source, _url_name(source), [_check_text_file(path)], kind="url")
    if "://" in source:
        raise CorpusError(f"Cannot read '{source}': only http:// and https:// URLs are supported.")
    return _load_local(source, catalog)


def _load_local(source: str, catalog: dict[str, Any]) -> Corpus:
    path = Path(source).expanduser()
    if path.is_file():
        return Corpus(source, path.name, [_check_text_file(path)], kind="file")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise CorpusError(f"The folder '{source}' holds no {', '.join(TEXT_SUFFIXES)} files: add some text "
                              "files or point at a file directly.")
        return Corpus(source, path.name or source, _non_empty(files, source), kind="folder")
    if glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True) if Path(p).is_file())
        if not files:
            raise CorpusError(f"The pattern '{source}' matches no files: check the pattern, or quote it so the "
                              "shell does not expand it.")
        return Corpus(source, source, _non_empty(files, source), kind="glob")
    if os.sep in source or "/" in source or Path(source).suffix or source.startswith(("~", ".")):
        raise CorpusError(f"No such file or folder: '{source}'; check the path.")
    known = ", ".join([*BUILTINS, *catalog])
    raise CorpusError(f"Unknown corpus '{source}': use one of {known}, or a file, folder, glob or http(s) URL.")


def _check_text_file(path: Path) -> Path:
    """The path if it holds text; a CorpusError if it is empty or binary."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise CorpusError(f"Cannot read '{path}': {e.strerror or e}.") from None
    if not head.strip():
        # The first block is blank: only a file that ends there is truly empty (a large file that starts with
        # blank lines is fine).
        if path.stat().st_size <= _SNIFF_BYTES:
            raise CorpusError(f"The corpus file '{path}' is empty: give it some text.")
    if b"\x00" in head:
        raise CorpusError(f"'{path}' looks like a binary file (it contains NUL bytes), not text: give a UTF-8 "
                          "text, Markdown or JSONL file.")
    return path


def _non_empty(files: list[Path], source: str) -> list[Path]:
    """The files that hold text; empty ones are skipped, binary ones refused."""
    kept = []
    for p in files:
        try:
            kept.append(_check_text_file(p))
        except CorpusError as e:
            if "is empty" not in str(e):
                raise
    if not kept:
        raise CorpusError(f"Every file of '{source}' is empty: give it some text.")
    return kept


def _catalog() -> dict[str, dict[str, Any]]:
    path = catalog_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise CorpusError(f"The corpus catalog {path} is not valid TOML ({e}): fix or delete it.") from None
    return {name: entry for name, entry in data.items() if isinstance(entry, dict) and "url" in entry}


# ------------------------------------------------------------------------------------------- built-ins

def builtin_cache_dir() -> Path:
    return Path(os.environ.get("SMALLGPT_BUILTIN_CACHE") or cache_dir() / "builtin")


def _builtin_path(name: str) -> Path:
    return builtin_cache_dir() / f"{name}.txt"


def _builtin_version() -> str:
    return f"{_BUILTIN_FORMAT}-py{sys.version_info.major}.{sys.version_info.minor}"


def prepare_builtin(name: str, progress: Progress | None = None) -> Path:
    """The prepared text file of a built-in corpus, extracted from the standard library on first use."""
    path = _builtin_path(name)
    stamp = path.with_suffix(".version")  # what made the file: a new extractor or Python prepares it again
    if path.exists() and stamp.exists() and stamp.read_text() == _builtin_version():
        return path
    pieces = _python_docs(progress) if name == "python-docs" else _python_code(progress)
    _atomic_write_text(path, pieces)
    _atomic_write_text(stamp, iter([_builtin_version()]))
    if progress:
        progress(1.0, f"prepared {name}")
    return path


def _stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's .py files (no tests, no site-packages), in a deterministic order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS and not d.startswith(("config-", "."))]
        files += [Path(dirpath, f) for f in filenames if f.endswith(".py") and not f.startswith("test_")]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _python_docs(progress: Progress | None) -> Iterator[str]:
    """The reference topics, then every module's, class's and function's docstring, source order."""
    from pydoc_data.topics import topics  # a plain dict literal: importing it runs nothing else

    for key in sorted(topics):
        yield topics[key].strip() + _DOC_SEPARATOR
    root, files = _stdlib_files()
    # ast.parse allocates millions of nodes; with the cyclic GC off it runs about twice as fast.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, path in enumerate(files):
            module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError):  # a file for another Python version: nothing to learn from it
                continue
            for qualname, doc in _docstrings(tree, module):
                yield f"{qualname}\n\n{doc}{_DOC_SEPARATOR}"
            if progress and i % 20 == 0:
                progress(i / len(files), "extracting docstrings")
    finally:
        if was_enabled:
            gc.enable()


_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
    doc = ast.get_docstring(node, clean=True) if isinstance(node, (ast.Module, *_DEFS)) else None
    if doc and doc.strip():
        yield qualname, doc.strip()
    # Definitions nest inside class and function bodies and inside if/try/with blocks (platform variants).
    for block in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, block, ()):
            if isinstance(child, _DEFS):
                yield from _docstrings(child, f"{qualname}.{child.name}")
            elif isinstance(child, (ast.If, ast.Try, ast.With, ast.ExceptHandler)):
                yield from _docstrings(child, qualname)


def _python_code(progress: Progress | None) -> Iterator[str]:
    root, files = _stdlib_files()
    for i, path in enumerate(files):
        text = path.read_bytes().decode("utf-8", errors="replace").strip()
        if text:
            yield f"# file: {path.relative_to(root).as_posix()}\n{text}\n{_DOC_SEPARATOR}"
        if progress and i % 20 == 0:
            progress(i / len(files), "collecting sources")


def _atomic_write_text(path: Path, pieces: Iterator[str]) -> None:
    """Written to a temporary file beside path, then renamed: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for piece in pieces:
                f.write(piece)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------- download

def _url_name(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return Path(parts.path).name or parts.hostname or url


def _download_path(url: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", _url_name(url))[:80]
    return cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{safe}"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// (and words a file:// refusal as a server error); a corpus download
    stays on http(s) and says why it stopped."""

    def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
        target = urllib.parse.urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
            raise CorpusError(f"{req.full_url} redirects to {target}, which is not http(s); refusing to follow it.")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def download(url: str, sha256: str | None = None, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
             progress: Progress | None = None) -> Path:
    """The cached copy of url, downloaded once (streamed, capped at max_bytes, checked against sha256)."""
    dest = _download_path(url)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    host = urllib.parse.urlsplit(url).hostname or url
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "smallgpt-tui"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener.open(request, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            length = int(resp.headers.get("Content-Length") or 0)
            if length > max_bytes:
                raise _too_big(url, max_bytes)
            received = 0
            while chunk := resp.read(1 << 16):
                received += len(chunk)
                if received > max_bytes:  # the server may not say (or lie about) the length
                    raise _too_big(url, max_bytes)
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    progress(received / length if length else 0.0, f"downloading {_url_name(url)}")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise CorpusError(f"The download of {url} does not match its pinned sha256 (got {digest.hexdigest()[:12]}..., "
                              f"expected {sha256[:12]}...); the file was discarded: the source changed or the "
                              "transfer was corrupted.")
        os.replace(tmp, dest)
        return dest
    except urllib.error.HTTPError as e:
        if "infinite loop" in str(e.reason):  # urllib's own reason for a loop (or > 10 hops) spans 3 lines
            raise CorpusError(f"{url} redirects in a loop (or more than 10 times): check the URL.") from None
        raise CorpusError(f"The server answered {e.code} {e.reason} for {url}: check the URL.") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException):
        raise _unreachable(host, url) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _too_big(url: str, max_bytes: int) -> CorpusError:
    cap = f"{max_bytes / 2**20:.4g} MB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"  # MB as in the default
    return CorpusError(f"The download of {url} is larger than the cap of {cap} and was aborted: "
                       "download it yourself and point at the file.")


def _unreachable(host: str, url: str) -> CorpusError:
    return CorpusError(f"Cannot download {url}: the host {host} cannot be reached or this machine is offline; "
                       "try again when online, or use a local file or a built-in corpus.")


# ----------------------------------------------------------------------------------------------- stats

_WORD = re.compile(r"\w+(?:['’]\w+)*")
LINE_LENGTH_EDGES = (0, 10, 20, 40, 60, 80, 100, 120, 160, 200, 300, 500, 1000)
TOP_WORDS = 30
CHAR_HIST_MAX = 512


@dataclass
class CorpusStats:
    """Words are runs of letters/digits (apostrophes inside allowed), counted case-insensitively for
    unique_words and top_words. line_length_hist: (bucket upper edge in characters, lines)."""

    name: str
    chars: int
    words: int
    unique_words: int
    lines: int
    non_ascii_share: float
    top_words: list[tuple[str, int]]
    char_hist: list[tuple[str, int]]  # most frequent first, at most CHAR_HIST_MAX entries
    line_length_hist: list[tuple[int, int]]
    distinct_chars: int = 0
    max_line_length: int = 0
    bytes: int = 0
    replaced_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "chars": self.chars, "words": self.words, "unique_words": self.unique_words,
            "lines": self.lines, "non_ascii_share": self.non_ascii_share,
            "top_words": [list(t) for t in self.top_words], "char_hist": [list(t) for t in self.char_hist],
            "line_length_hist": [list(t) for t in self.line_length_hist], "distinct_chars": self.distinct_chars,
            "max_line_length": self.max_line_length, "bytes": self.bytes, "replaced_bytes": self.replaced_bytes,
            "warnings": list(self.warnings),
        }


def corpus_stats(source: str | Corpus, progress: Progress | None = None) -> CorpusStats:
    """Statistics of a corpus in one streamed pass."""
    corpus = source if isinstance(source, Corpus) else load_corpus(source, progress)
    chars: Counter[str] = Counter()
    words: Counter[str] = Counter()
    line_lengths: Counter[int] = Counter()
    n_words = 0

    def count(block: str) -> None:
        nonlocal n_words
        chars.update(block)
        found = _WORD.findall(block.lower())
        n_words += len(found)
        words.update(found)
        # block is whole lines: a final newline ends the last line rather than starting an empty one
        line_lengths.update(map(len, block.removesuffix("\n").split("\n")))

    tail = ""  # the unfinished last line of the previous chunk: words and lines never straddle a count
    for chunk in corpus.iter_text(progress=progress):
        block = tail + chunk
        cut = block.rfind("\n")
        if cut < 0:
            tail = block
            continue
        count(block[:cut + 1])
        tail = block[cut + 1:]
    if tail:
        count(tail)
    total = sum(chars.values())
    if total == 0 or not any(not c.isspace() for c in chars):
        raise CorpusError(f"The corpus '{corpus.source}' is empty: give it some text.")
    non_ascii = sum(n for c, n in chars.items() if ord(c) > 127)
    return CorpusStats(
        name=corpus.name, chars=total, words=n_words, unique_words=len(words), lines=sum(line_lengths.values()),
        non_ascii_share=non_ascii / total, top_words=words.most_common(TOP_WORDS),
        char_hist=chars.most_common(CHAR_HIST_MAX), line_length_hist=_bucket(line_lengths),
        distinct_chars=len(chars), max_line_length=max(line_lengths), bytes=corpus.total_bytes,
        replaced_bytes=corpus.replaced_bytes, warnings=list(corpus.warnings),
    )


def _bucket(line_lengths: Counter[int]) -> list[tuple[int, int]]:
    """Counts of lines per length bucket (upper edge inclusive); the last bucket's edge is the longest line."""
    longest = max(line_lengths)
    edges = [e for e in LINE_LENGTH_EDGES if e < longest] + [longest]
    counts = [0] * len(edges)
    for length, n in line_lengths.items():
        counts[next(i for i, e in enumerate(edges) if length <= e)] += n
    return list(zip(edges, counts))
