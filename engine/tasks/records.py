"""Task data: labelled texts and instruction/chat records from files, built-ins or the catalog, and the
seeded train/val/test split.

Classification: CSV/TSV with or without a header (--text-col / --label-col by name or 0-based index;
without a header the label is the first column and the text the last), `label<TAB>text` lines (the SMS
Spam Collection), JSONL {"text", "label"}. Instructions: Alpaca JSON (a list, or JSONL) of
{"instruction", "input", "output"}; chat JSONL {"messages": [{"role", "content"}, ...]}.
A bad row is a CorpusError naming the file, the row and the field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..corpora import _catalog, download
from ..errors import CorpusError
from .builtin import BUILTIN_TASK_DATA, prepare_task_data

ROLES = ("system", "user", "assistant")


@dataclass
class TaskData:
    source: str
    records: list[dict[str, Any]]  # classify: {"text", "label"}; instruct: {"instruction", "input", "output"}
    #                                or {"messages": [...]}
    fmt: str  # labels | alpaca | chat
    parts: dict[str, list[int]] = field(default_factory=dict)  # the split: record indices per split

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.records, sort_keys=True).encode()).hexdigest()[:16]


def load_task_data(source: str, kind: str, text_col: str = "", label_col: str = "") -> TaskData:
    """The records of a built-in name, a catalog name or a file, for task `kind` (classify | instruct)."""
    if source in BUILTIN_TASK_DATA:
        want = BUILTIN_TASK_DATA[source][0]
        if want != kind:
            raise CorpusError(f"'{source}' is {want} data: use it with --task {want}.")
        path = prepare_task_data(source)
    elif source in _catalog():
        entry = _catalog()[source]
        path = download(entry["url"], sha256=entry.get("sha256") or None)  # keeps the URL's file name
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            names = ", ".join(n for n, (k, _) in BUILTIN_TASK_DATA.items() if k == kind)
            raise CorpusError(f"No task data '{source}': give a file, or a built-in set ({names}).")
    if kind == "classify":
        records = _labelled(path, text_col, label_col)
        fmt = "labels"
    else:
        records = _instructions(path)
        fmt = "chat" if "messages" in records[0] else "alpaca"
        if any(("messages" in r) != (fmt == "chat") for r in records):
            raise CorpusError(f"{path.name} mixes chat and instruction records: keep one kind per file.")
    if len(records) < 3:
        raise CorpusError(f"{path.name} holds {len(records)} record(s): a train/val/test split needs at least 3.")
    return TaskData(source, records, fmt)


def split(n: int, val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[int]]:
    """Record indices shuffled with the seed, then cut: test and val from the end, train the rest."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(n * test_ratio)) if test_ratio > 0 else 0
    n_val = max(1, round(n * val_ratio))
    if n - n_test - n_val < 1:
        raise CorpusError(f"{n} records leave none to train on after {n_val} for validation and {n_test} for "
                          f"the test: add records or lower the ratios.")
    return {"train": order[:n - n_test - n_val], "val": order[n - n_test - n_val:n - n_test],
            "test": order[n - n_test:]}


# ----------------------------------------------------------------------------------------- classification

def _labelled(path: Path, text_col: str, label_col: str) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".jsonl":
        out = []
        for i, rec in _jsonl(path, "text/label"):
            text, label = rec.get("text"), rec.get("label")
            for field, value in (("text", text), ("label", label)):
                if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
                    raise CorpusError(f'{path.name} line {i}: field "{field}" is missing or empty: each line must '
                                      'be like {"text": "...", "label": "..."}.')
            out.append({"text": str(text), "label": str(label)})
        return out
    text = _read(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    rows = list(csv.reader(text.splitlines(), delimiter=sep, quotechar='"' if sep == "," else None))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    keys = {(c if c and not c.isdigit() else d).lower() for c, d in ((text_col, "text"), (label_col, "label"))}
    has_header = bool(keys & set(header))
    if sep == "\t" and not has_header:  # label<TAB>text lines: a tab inside the text stays text
        rows = [row[:1] + ["\t".join(row[1:])] if len(row) > 2 else row for row in rows]
    start = 1 if has_header else 0
    t = _column(text_col, "text", header if has_header else None, path, default=-1)
    lab = _column(label_col, "label", header if has_header else None, path, default=0)
    out = []
    for i, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip():
            continue
        need = max(t, lab) + 1 if min(t, lab) >= 0 else 2
        if len(row) < need:
            raise CorpusError(f"{path.name} row {i} has {len(row)} column(s), fewer than the {need} needed for "
                              f"the label and the text: fix the row or pick columns with --text-col/--label-col.")
        text_v, label_v = row[t].strip(), row[lab].strip()
        for field, value in (("text", text_v), ("label", label_v)):
            if not value:
                raise CorpusError(f"{path.name} row {i}: the {field} field is empty: fill it in or remove the row.")
        out.append({"text": text_v, "label": label_v})
    if not out:
        raise CorpusError(f"{path.name} has no rows: give one labelled text per row.")
    return out


def _column(spec: str, name: str, header: list[str] | None, path: Path, default: int) -> int:
    if spec.isdigit():
        return int(spec)
    if header is None:
        if spec:
            raise CorpusError(f"{path.name} has no header row, so --{name}-col '{spec}' cannot be found: give a "
                              f"0-based column number.")
        return default
    key = (spec or name).lower()
    if key not in header:
        raise CorpusError(f"{path.name}'s header has no '{key}' column (it has {', '.join(header)}): pick one "
                          f"with --{name}-col.")
    return header.index(key)


# ------------------------------------------------------------------------------------------- instructions

def _instructions(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".jsonl":
        items = list(_jsonl(path, "instruction or messages"))
    else:
        try:
            data = json.loads(_read(path))
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path.name} is not valid JSON (line {e.lineno}): give a JSON list of "
                              '{"instruction", "input", "output"} records, or JSONL.') from None
        if not isinstance(data, list):
            raise CorpusError(f'{path.name} is not a JSON list: give a list of {{"instruction", "input", '
                              '"output"} records.')
        items = list(enumerate(data, 1))
    what = "line" if path.suffix.lower() == ".jsonl" else "record"
    out = [_instruction(rec, f"{path.name} {what} {i}") for i, rec in items]
    if not out:
        raise CorpusError(f"{path.name} holds no records.")
    return out


def _instruction(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise CorpusError(f"{where} is not an object: give {{\"instruction\", \"input\", \"output\"}} or "
                          '{"messages": [...]}.')
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise CorpusError(f'{where}: field "messages" must be a non-empty list of {{"role", "content"}}.')
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                role = m.get("role") if isinstance(m, dict) else m
                raise CorpusError(f"{where}: messages[{j}].role is {role!r}: use system, user or assistant.")
            if not isinstance(m.get("content"), str):
                raise CorpusError(f"{where}: messages[{j}].content must be a string.")
        if not any(m["role"] == "assistant" for m in msgs):
            raise CorpusError(f"{where} has no assistant message: nothing to learn from it.")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
    for field in ("instruction", "output"):
        if not isinstance(rec.get(field), str) or not rec[field].strip():
            raise CorpusError(f'{where}: field "{field}" is missing or empty: each record needs instruction and '
                              'output strings (and optionally input).')
    if not isinstance(rec.get("input", ""), str):
        raise CorpusError(f'{where}: field "input" must be a string (empty when there is none).')
    return {"instruction": rec["instruction"], "input": rec.get("input", ""), "output": rec["output"]}


# ------------------------------------------------------------------------------------------------ reading

def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path.name} is not UTF-8 text (byte {e.start}): save it as UTF-8.") from None
    except OSError as e:
        raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


def _jsonl(path: Path, what: str):
    for i, line in enumerate(_read(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise CorpusError(f"{path.name} line {i} is not valid JSON: each line must be one object "
                              f"({what}).") from None
        if not isinstance(rec, dict):
            raise CorpusError(f"{path.name} line {i} is not an object: each line must be one object ({what}).")
        yield i, rec
