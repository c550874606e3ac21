"""Salience: how much an entry matters now (SPEC-006 §12.5).

Recency and pins come from the signed entry; recalls (how often retrieval returned the entry)
are counted in Runtime, so deleting Runtime only forgets the counts. One score in [0, 2] that
``relevant_entries`` adds to the number of matched words.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import lmdb

log = logging.getLogger(__name__)

PREFIX = b"salience:"
RECENCY_DAYS = 30.0
RECALLS_FULL = 20  # this many recalls count fully


def _age_days(created_at: str, now: datetime) -> float:
    try:
        when = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return 365.0
    return max(0.0, (now - when).total_seconds() / 86400)


def score(row: dict[str, Any], recalls: int, now: datetime | None = None) -> float:
    """0.5 * recency + 0.5 * recall + 1 if pinned (SPEC-006 §12.5.1)."""
    now = now or datetime.now(UTC)
    recency = math.exp(-_age_days(row.get("created_at", ""), now) / RECENCY_DAYS)
    recall = min(1.0, math.log1p(recalls) / math.log1p(RECALLS_FULL))
    return 0.5 * recency + 0.5 * recall + (1.0 if row.get("pinned") else 0.0)


class Salience:
    """Recall counts of one node, in the Runtime key-value database."""

    def __init__(self, store: Any) -> None:
        self._env, self._kv = store.runtime_db("kv")

    def recalls(self, entry_id: str) -> int:
        with self._env.begin(db=self._kv) as txn:
            raw = txn.get(PREFIX + entry_id.encode())
        return int(raw) if raw else 0

    def recalled(self, entry_ids: Iterable[str]) -> None:
        """Count one recall of each entry; never fails a read (Runtime only)."""
        ids = list(dict.fromkeys(entry_ids))
        if not ids:
            return
        try:
            with self._env.begin(write=True, db=self._kv) as txn:
                for entry_id in ids:
                    key = PREFIX + entry_id.encode()
                    raw = txn.get(key)
                    txn.put(key, str((int(raw) if raw else 0) + 1).encode())
        except lmdb.Error as exc:
            log.warning("recall counts not written: %s", exc)

    def score(self, row: dict[str, Any], now: datetime | None = None) -> float:
        return score(row, self.recalls(row["id"]), now)
