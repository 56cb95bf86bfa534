"""The table of every run in checkpoints/: status, steps, best val loss, parameters.

Row keys are run directory paths. A mark column shows the followed run (▶) and the runs overlaid on the
chart (●); the cursor survives refreshes.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

STATUS_STYLE = {"running": "bold green", "finished": "cyan", "failed": "bold red", "stopped": "yellow", "new": "dim",
                "imported": "magenta"}


def human_count(n: int | None) -> str:
    if not n:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def params_total(params: Any) -> int | None:
    """RunInfo.params may be a count or count_params()'s {"total": ..} dict."""
    if isinstance(params, dict):
        return params.get("total")
    return params


class RunsTable(DataTable):
    DEFAULT_CSS = """
    RunsTable { height: auto; max-height: 10; }
    """

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        # The long run name last: a narrow terminal cuts it, not the numbers (the status line names the run).
        for label, key in ((" ", "mark"), ("status", "status"), ("step", "step"), ("best val", "val"),
                           ("params", "params"), ("run", "name")):
            self.add_column(label, key=key)

    def run_key(self) -> str | None:
        """The run directory under the cursor."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def update_runs(self, runs: Sequence[Any], overlay: set[str], attached: str) -> None:
        """Show these runs. The same runs in the same order are updated cell by cell (a rebuild re-lays out
        the whole screen: ~55 ms at 120x40, every 10 s while a run is followed); others rebuild the table."""
        rows = {str(r.path): self._cells(r, overlay, attached) for r in runs}
        if list(rows) == [key.value for key in self.rows]:
            for key, cells in rows.items():
                for column, (old, new) in zip(self.columns, zip(self.get_row(key), cells)):
                    if str(old) != str(new):
                        self.update_cell(key, column, new, update_width=True)
            return
        current = self.run_key()
        self.clear()
        for key, cells in rows.items():
            self.add_row(*cells, key=key)
        if current is not None:
            try:
                self.move_cursor(row=self.get_row_index(current), animate=False)
            except RowDoesNotExist:  # the run was deleted since: the cursor stays where clear() left it
                pass

    @staticmethod
    def _cells(r: Any, overlay: set[str], attached: str) -> tuple[Any, ...]:
        path = str(r.path)
        mark = "▶" if path == attached else ("●" if path in overlay else "")
        step = f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step)
        val = f"{r.best_val_loss:.4f}" if r.best_val_loss is not None else "-"
        status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
        if r.serving:  # `smallgpt serve` has it: where (host:port)
            status.append(f" ⇄ {r.serving.removeprefix('http://').removesuffix('/v1')}", style="bold magenta")
        return (mark, status, step, val,
                human_count(params_total(r.params)), Text(r.name))
