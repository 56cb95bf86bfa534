"""The TUI's remembered choices (last corpus, tokenizer, form values, theme) in one TOML file.

The file lives at $SMALLGPT_HOME/settings.toml when a project home is set (so tests and projects stay
isolated), else at $XDG_CONFIG_HOME/smallgpt/settings.toml (~/.config/smallgpt/settings.toml).
A missing or unreadable file gives empty settings: remembered choices are a convenience, never a reason
for the app to refuse to start.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import dumps_toml

log = logging.getLogger("smallgpt.tui")


def settings_path() -> Path:
    if os.environ.get("SMALLGPT_HOME"):
        return Path(os.environ["SMALLGPT_HOME"]) / "settings.toml"
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "smallgpt" / "settings.toml"


@dataclass
class Settings:
    """Tables of scalars: {"ui": {"theme": ...}, "data": {...}, "tokenizer": {...}, "train": {...}}."""

    path: Path
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        path = Path(path) if path is not None else settings_path()
        try:
            with path.open("rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raw = {}
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            log.warning("ignoring unreadable settings file %s", path, exc_info=True)
            raw = {}
        tables = {k: dict(v) for k, v in raw.items() if isinstance(v, dict)}
        return cls(path, tables)

    def get(self, table: str, key: str, default: Any = None) -> Any:
        return self.tables.get(table, {}).get(key, default)

    def table(self, table: str) -> dict[str, Any]:
        return dict(self.tables.get(table, {}))

    def update(self, table: str, **values: Any) -> None:
        """Set values (None removes the key: TOML has no null) and write the file."""
        t = self.tables.setdefault(table, {})
        for key, value in values.items():
            if value is None:
                t.pop(key, None)
            else:
                t[key] = value
        self.save()

    def save(self) -> None:
        # Written to a temp file then renamed, so a crash mid-write never leaves half a file.
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(dumps_toml(self.tables), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            log.warning("could not write settings to %s", self.path, exc_info=True)
