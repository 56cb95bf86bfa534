"""The engine's import structure: no circles, imports at the top of each module, and the cheap paths
(listing runs, the TUI's first frame) never loading torch."""

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

MODULES = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
# Function-level imports of engine modules kept on purpose: the training process applies its OpenMP and
# malloc settings before the trainer (and so torch) is imported; the TUI starts its decode process without
# importing torch, which only the child's side (engine.decode_child) does.
DEFERRED = {("engine.__main__", ".trainer"), ("engine.decode_process", ".decode_child")}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_each_engine_module_imports_first_without_a_circle():
    # One interpreter; before each module every engine.* entry is dropped, so each is imported first on its
    # own (third-party modules stay loaded, which keeps this cheap). A circle fails with an ImportError on a
    # partially initialised module.
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for k in [k for k in sys.modules if k == 'engine' or k.startswith('engine.')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(name)\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr


def test_engine_modules_import_each_other_at_the_top():
    found = set()
    for name in MODULES:
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("engine")):
                    found.add((name, "." * node.level + (node.module or "")))
    assert found == DEFERRED


def test_listing_runs_and_the_first_frame_do_not_import_torch():
    code = ("import sys\nimport engine.runs, engine.rundir, engine.events, engine.process, tui.app, tui.cli\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'tokenizers')))")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
