"""What every tab shares: a root widget whose engine work can fail without closing the app.

A tab subclasses EngineTab, declares its own BINDINGS (they show in the Footer while the tab has focus,
and in the help screen and the command palette always) and runs engine calls with tui.workers.engine_work.
"""

from __future__ import annotations

from textual.containers import Vertical

from tui.workers import ReportsWorkerErrors


class EngineTab(ReportsWorkerErrors, Vertical):
    """A tab's root widget."""
