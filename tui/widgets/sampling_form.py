"""SamplingForm: the Generate tab's sampling controls (temperature, top-k, ...), one row of small inputs.

The fields are the labelled knobs of engine.config.SamplingConfig, in their declared order; `values`
reads them back as SamplingConfig fields.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label

from engine.config import SamplingConfig, knobs
from engine.errors import ConfigError

FIELDS = [k for k in knobs(SamplingConfig) if k.label]  # the sampling controls, in the order they are shown


def parse_sampling(values: dict[str, str]) -> dict[str, Any]:
    """The sampling controls' text as SamplingConfig fields; a bad value raises ConfigError naming it."""
    out: dict[str, Any] = {}
    for k in FIELDS:
        raw = values.get(k.name, "")
        if raw.strip() == "" and not k.optional:
            raise ConfigError(f"{k.label} is empty: enter a value.")
        try:
            out[k.name] = k.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{k.label} {e}.") from None
    return out


class SamplingForm(Horizontal):
    DEFAULT_CSS = """
    SamplingForm { height: 1; margin: 1 0; }
    SamplingForm Label { margin: 0 1 0 0; color: $text-muted; }
    SamplingForm Input { width: 7; margin: 0 2 0 0; }
    """

    def compose(self) -> ComposeResult:
        for k in FIELDS:
            yield Label(k.label)
            yield Input("" if k.default is None else str(k.default), id=f"gen-{k.name}", compact=True,
                        placeholder="off")

    def values(self) -> dict[str, Any]:
        """The settings as SamplingConfig fields (torch stays off the UI thread: the worker builds the config)."""
        return parse_sampling({k.name: self.query_one(f"#gen-{k.name}", Input).value for k in FIELDS})
