"""``[consolidation]`` in config.toml (SPEC-006 §12.1): off until a cortex is named."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError

_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{4,128}\Z")


@dataclass(frozen=True)
class ConsolidationConfig:
    cortex: str | None = None  # None: consolidation is off
    interval_s: float = 3600.0
    batch: int = 50
    authors: tuple[str, ...] = field(default_factory=tuple)
    salience_cortex: str | None = None  # None: no model scores new facts (SPEC-006 §12.5.4)

    @property
    def enabled(self) -> bool:
        return self.cortex is not None


def load_consolidation_config(extra: dict[str, Any]) -> ConsolidationConfig:
    table = extra.get("consolidation")
    if table is None:
        return ConsolidationConfig()
    where = "config.toml [consolidation]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - {"cortex", "interval_s", "batch", "authors",
                           "salience_cortex"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    cortex = table.get("cortex")
    if cortex is not None and (not isinstance(cortex, str) or not 1 <= len(cortex) <= 200):
        raise ConfigError(f"{where}.cortex must be a cortex name or cortex/<kind>")
    interval = table.get("interval_s", 3600)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 10:
        raise ConfigError(f"{where}.interval_s must be a number of seconds, at least 10")
    batch = table.get("batch", 50)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 500:
        raise ConfigError(f"{where}.batch must be an integer from 1 to 500")
    authors = table.get("authors", [])
    if not isinstance(authors, list) or not all(
            isinstance(a, str) and _DEVICE_ID.match(a) for a in authors):
        raise ConfigError(f"{where}.authors must be a list of device ids")
    salience = table.get("salience_cortex")
    if salience is not None and (not isinstance(salience, str)
                                 or not 1 <= len(salience) <= 200):
        raise ConfigError(f"{where}.salience_cortex must be a cortex name or cortex/salience")
    return ConsolidationConfig(cortex, float(interval), batch, tuple(authors), salience)
