"""Built-in task data, made offline from the running Python's standard library like the built-in corpora.

python-kinds     classification, 3 classes of short stdlib texts: `code` (a statement of a function body),
                 `docstring` (the first sentence of a docstring), `error` (the message of a `raise X("...")`),
                 the same number of each.
python-instruct  instructions, a few thousand Alpaca records: what a keyword or statement is for (answered
                 from the pydoc reference topics) and what a public function or method does (answered from
                 its docstring's first sentence), in a few phrasings, some with the name in `input`.

Both come from one pass over the standard library's sources and are cached as JSONL beside the built-in
corpora (prepared once, then read back).
"""

from __future__ import annotations

import ast
import gc
import json
import pydoc
import random
import re
from pathlib import Path
from typing import Iterator

from pydoc_data.topics import topics

from ..corpora import _atomic_write_text, _builtin_version, _stdlib_files, builtin_cache_dir

BUILTIN_TASK_DATA: dict[str, tuple[str, str]] = {
    "python-kinds": ("classify", "stdlib snippets labelled code, docstring or error (3 balanced classes)"),
    "python-instruct": ("instruct", "questions on Python keywords, statements and stdlib functions, answered "
                                    "from the pydoc topics and docstrings"),
}
_FORMAT = 1  # bump when the extraction changes
PER_CLASS = 2000
INSTRUCTIONS = 3000
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def prepare_task_data(name: str) -> Path:
    """The JSONL file of a built-in task set, extracted on first use."""
    root = builtin_cache_dir()
    version = f"{_FORMAT}-{_builtin_version()}"
    paths = {n: root / f"{n}.jsonl" for n in BUILTIN_TASK_DATA}
    stamp = root / "task-data.version"
    if not (stamp.exists() and stamp.read_text() == version and all(p.exists() for p in paths.values())):
        kinds, instructions = _extract()
        for n, records in (("python-kinds", kinds), ("python-instruct", instructions)):
            _atomic_write_text(paths[n], (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        _atomic_write_text(stamp, iter([version]))
    return paths[name]


def _extract() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    by_class: dict[str, dict[str, None]] = {"code": {}, "docstring": {}, "error": {}}  # dicts: ordered sets
    functions: dict[str, tuple[str, str]] = {}  # qualname -> (signature, first sentence)
    root, files = _stdlib_files()
    was_enabled = gc.isenabled()
    gc.disable()  # ast.parse allocates millions of nodes (see corpora._python_docs)
    try:
        for path in files:
            module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError):
                continue
            public = not any(part.startswith("_") for part in module.split("."))
            for qualname, node in _defs(tree, module):
                doc = _first_sentence(ast.get_docstring(node) or "")
                if doc:
                    by_class["docstring"].setdefault(doc)
                    if public and not any(p.startswith("_") for p in qualname.split(".")):
                        args = ", ".join(a.arg for a in node.args.args if a.arg not in ("self", "cls"))
                        functions.setdefault(qualname, (f"{qualname}({args})", doc))
                for stmt in node.body[1 if doc else 0:]:
                    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Return, ast.Expr)):
                        code = ast.unparse(stmt)
                        if 25 <= len(code) <= 160 and "\n" not in code:
                            by_class["code"].setdefault(code)
            for sub in ast.walk(tree):
                if isinstance(sub, ast.Raise) and isinstance(sub.exc, ast.Call) and sub.exc.args:
                    arg = sub.exc.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        msg = " ".join(arg.value.split())
                        if 15 <= len(msg) <= 200:
                            by_class["error"].setdefault(msg)
    finally:
        if was_enabled:
            gc.enable()
    rng = random.Random(0)
    per_class = min(PER_CLASS, *map(len, by_class.values()))  # balanced: the majority baseline is 1/3
    kinds = [{"text": text, "label": label} for label, texts in by_class.items()
             for text in rng.sample(list(texts), per_class)]
    rng.shuffle(kinds)
    return kinds, _instructions(functions, rng)


def _defs(tree: ast.AST, module: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Module-level functions and methods of module-level classes, with their qualified names."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{module}.{node.name}", node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{module}.{node.name}.{sub.name}", sub


def _first_sentence(doc: str) -> str:
    para = " ".join(doc.strip().split("\n\n")[0].split())
    m = _SENTENCE.match(para)
    text = m.group(1) if m else ""
    return text if 20 <= len(text) <= 160 and not text.startswith((">>>", ":", "..")) else ""


_KEYWORD_QUESTIONS = ("What is the Python keyword `{k}` for?", "Explain the `{k}` keyword in Python.",
                      "What does `{k}` do in Python?")
_TOPIC_QUESTIONS = ("What is {t} in Python?", "Explain {t}.", "Describe {t} briefly.")
_FUNCTION_QUESTIONS = ("What does {f} do?", "Explain what {f} does in one sentence.", "What is {f} for?")


def _instructions(functions: dict[str, tuple[str, str]], rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for kw, target in sorted(pydoc.Helper.keywords.items()):
        topic = target[0] if isinstance(target, tuple) else ""
        answer = _topic_answer(topics.get(topic, ""))
        if answer:
            out += [{"instruction": q.format(k=kw), "input": "", "output": answer} for q in _KEYWORD_QUESTIONS]
    for key, text in sorted(topics.items()):
        title, answer = text.split("\n", 1)[0].strip(), _topic_answer(text)
        if answer and title:
            out += [{"instruction": q.format(t=title.replace('"', "`")), "input": "", "output": answer}
                    for q in _TOPIC_QUESTIONS]
    names = sorted(functions)
    for name in rng.sample(names, min(len(names), INSTRUCTIONS - len(out))):
        signature, doc = functions[name]
        if rng.random() < 0.25:
            out.append({"instruction": "Summarize what this function does.", "input": signature, "output": doc})
        else:
            out.append({"instruction": rng.choice(_FUNCTION_QUESTIONS).format(f=f"`{name}`"), "input": "",
                        "output": doc})
    rng.shuffle(out)
    return out


def _topic_answer(text: str) -> str:
    """The first prose paragraph of a reference topic (after its title and underline), up to two sentences."""
    for para in text.split("\n\n")[1:]:
        flat = " ".join(para.split())
        if len(flat) > 40 and not para.startswith(" ") and not set(flat) <= set("*=-"):
            sentences = re.findall(r".+?[.:](?:\s|$)", flat + " ")
            answer = " ".join(s.strip() for s in sentences[:2]).rstrip(":") or flat
            return answer if len(answer) <= 300 else answer[:297].rsplit(" ", 1)[0] + "..."
    return ""
