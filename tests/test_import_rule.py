"""Import rules: the engine never imports textual or rich (DESIGN 2); the TUI's first frame, painted with a corpus
and a run to show, starts no torch import (test_engine_layering.py checks the imports of listing runs)."""

import pkgutil
import subprocess
import sys

import engine


def test_engine_never_imports_ui_libraries():
    modules = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.") if not m.name.endswith("__main__")]
    assert len(modules) >= 4
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('textual', 'rich'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# Records which threads start importing torch (watching from before anything else is imported).
TORCH_WATCH = """
import sys, threading
attempts = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            attempts.append(threading.current_thread().name)
        return None

sys.meta_path.insert(0, Watch())
"""


def test_the_tuis_first_frame_imports_no_torch(home, monkeypatch):
    """The first frame must not wait for torch (seconds on a loaded machine): no thread has started importing
    it when the app is first painted, with a corpus and a run there to show."""
    from tests.tui.pilot_helpers import write_corpus
    from benchmarks.tiny_run import make_tiny_run

    corpus = write_corpus(home)
    make_tiny_run(home)
    code = TORCH_WATCH + (
        "from tui.app import SmallGPTApp\n"
        "async def first_frame(pilot):  # runs once the first frame is composed and painted\n"
        "    print('FIRST_FRAME', attempts, 'torch' in sys.modules, flush=True)\n"
        "    pilot.app.exit()\n"
        f"SmallGPTApp(corpus={corpus!r}).run(headless=True, size=(120, 40), auto_pilot=first_frame)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home, timeout=120)
    frame = [line for line in r.stdout.splitlines() if line.startswith("FIRST_FRAME")]
    assert frame == ["FIRST_FRAME [] False"], r.stdout + r.stderr
