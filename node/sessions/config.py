"""The ``[sessions]`` table of config.toml (SPEC-004 §2.9), checked before the node starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .tiers import Budget

_TIMINGS = ("heartbeat_s", "expires_after_s", "live_stale_s", "lease_sweep_s")


@dataclass(frozen=True)
class SessionsConfig:
    heartbeat_s: float = 10.0
    expires_after_s: float = 30.0
    live_stale_s: float = 30.0
    lease_sweep_s: float = 10.0
    journal_session_end: bool = True
    budget: Budget = field(default_factory=Budget)

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None) -> SessionsConfig:
        table = dict(table or {})
        values: dict[str, Any] = {}
        for name in _TIMINGS:
            if name in table:
                value = table[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ValueError(f"[sessions] {name} must be a positive number of seconds")
                values[name] = float(value)
        if "journal_session_end" in table:
            if not isinstance(table["journal_session_end"], bool):
                raise ValueError("[sessions] journal_session_end must be true or false")
            values["journal_session_end"] = table["journal_session_end"]
        budget = table.get("budget", {})
        if not isinstance(budget, Mapping):
            raise ValueError("[sessions.budget] must be a table")
        values["budget"] = Budget.from_config(budget)
        unknown = set(table) - set(_TIMINGS) - {"journal_session_end", "budget"}
        if unknown:
            raise ValueError(f"[sessions] has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**values)
