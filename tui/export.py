"""The Inspect tab's export: the screen as SVG and the inspection's arrays (with the comparison's, in
compare mode) as .npz, into $SMALLGPT_HOME/exports/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.paths import home
from tui.widgets.inspector import InspectResult

INSPECTION_ARRAYS = ("token_ids", "attn", "hidden", "entropy", "topk_ids", "topk_probs", "lens_probs")


def export_inspection(app: Any, result: InspectResult, layer: int, head: int) -> tuple[Path, Path]:
    """Write the current screen and the result's arrays; returns (svg, npz)."""
    out = home() / "exports"
    out.mkdir(parents=True, exist_ok=True)
    cmp = result.comparison
    vs = f"-vs-{cmp.label_b.replace('/', '-')}" if cmp is not None else ""
    stem = f"inspect-{result.run_dir.name}-{result.checkpoint}{vs}-L{layer}H{head}-{time.strftime('%Y%m%d-%H%M%S')}"
    svg = Path(app.save_screenshot(filename=f"{stem}.svg", path=str(out)))
    ins = result.inspection
    arrays: dict[str, Any] = {"tokens": np.array(list(ins.tokens)), "prompt": np.array(result.prompt)}
    for name in INSPECTION_ARRAYS:
        value = getattr(ins, name, None)
        if value is not None:
            arrays[name] = np.asarray(value)
    if cmp is not None:
        arrays.update(cmp.to_arrays())
    npz = out / f"{stem}.npz"
    np.savez(npz, **arrays)
    return svg, npz
