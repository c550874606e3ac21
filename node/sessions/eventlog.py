"""The per-node, append-only event log of this node's sessions (SPEC-004 §3), in Runtime.

Keys are ``8-byte big-endian ns timestamp ‖ 4-byte big-endian sequence``, values msgpack
``{at, kind, session, device, data}``. Records are buffered and written in one LMDB
transaction at most every 200 ms (§3.5) so a hook call never waits for a disk flush. The log is
rebuild-safe (§3.4): a damaged record is skipped, a damaged database is emptied, nothing outside
Runtime reads it, and it is never synced.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

import lmdb
import msgpack

from .clock import NS, iso, now_ns

log = logging.getLogger(__name__)

KINDS = (
    "session_started", "session_ended", "heartbeat_lost", "file_read", "file_modified",
    "git_activity", "host_reached", "conflict", "lease_granted", "lease_denied",
    "lease_released", "lease_expired", "lease_lost",
)
RETAIN_NS = 14 * 24 * 3600 * NS
MAX_RECORDS = 1_000_000
_KEY = struct.Struct(">QI")


class EventLog:
    def __init__(self, store: Any, device: str, *, retain_ns: int = RETAIN_NS,
                 max_records: int = MAX_RECORDS) -> None:
        self.env, self.db = store.runtime_db("events")
        self.device = device
        self.retain_ns = retain_ns
        self.max_records = max_records
        self._pending: list[tuple[bytes, bytes]] = []
        self._seq = 0
        self._last_ns = 0
        self._check()

    def _check(self) -> None:
        """Start empty if the database cannot be read (SPEC-004 §3.4)."""
        try:
            with self.env.begin(db=self.db) as txn:
                cur = txn.cursor()
                if cur.last():
                    self._last_ns = _KEY.unpack(bytes(cur.key()))[0]
        except (lmdb.Error, struct.error) as exc:
            log.warning("the session event log is unreadable (%s); starting an empty one", exc)
            with self.env.begin(write=True) as txn:
                txn.drop(self.db, delete=False)

    def append(self, kind: str, session: str, data: dict[str, Any] | None = None,
               at_ns: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        at = at_ns or now_ns()
        if at <= self._last_ns:
            at = self._last_ns  # keep keys ordered even if the clock steps back
            self._seq += 1
        else:
            self._seq = 0
        self._last_ns = at
        value = msgpack.packb(
            {"at": iso(at), "kind": kind, "session": session, "device": self.device,
             "data": data or {}},
            use_bin_type=True,
        )
        self._pending.append((_KEY.pack(at, self._seq & 0xFFFFFFFF), value))

    def flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, []
        with self.env.begin(write=True, db=self.db) as txn:
            for key, value in batch:
                txn.put(key, value, overwrite=False)
        return len(batch)

    def prune(self, now: int | None = None) -> int:
        """Delete records older than 14 days, then any beyond the record cap, oldest first."""
        self.flush()
        cutoff = (now or now_ns()) - self.retain_ns
        removed = 0
        with self.env.begin(write=True, db=self.db) as txn:
            excess = txn.stat(self.db)["entries"] - self.max_records
            cur = txn.cursor()
            while cur.first():
                (at, _) = _KEY.unpack(bytes(cur.key()))
                if at >= cutoff and excess <= 0:
                    break
                cur.delete()
                removed += 1
                excess -= 1
        return removed

    def count(self) -> int:
        self.flush()
        with self.env.begin(db=self.db) as txn:
            return txn.stat(self.db)["entries"]

    def read(
        self,
        *,
        after: bytes | None = None,
        limit: int = 50,
        kind: str | None = None,
        session: str | None = None,
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """Records after the key ``after`` (oldest first), and the key to continue from."""
        self.flush()
        out: list[dict[str, Any]] = []
        with self.env.begin(db=self.db) as txn:
            cur = txn.cursor()
            positioned = cur.set_range(after) if after else cur.first()
            if positioned and after and bytes(cur.key()) == after:
                positioned = cur.next()
            while positioned:
                key = bytes(cur.key())
                record = _decode(bytes(cur.value()))
                if record is not None and (kind is None or record.get("kind") == kind) and (
                    session is None or record.get("session") == session
                ):
                    out.append(record)
                    if len(out) >= limit:
                        return out, (key if cur.next() else None)
                positioned = cur.next()
        return out, None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            page, after = self.read(after=after, limit=500)
            yield from page
            if after is None:
                return


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        record = msgpack.unpackb(raw, raw=False)
    except Exception:
        return None  # a damaged record is skipped, never fatal (SPEC-004 §3.4)
    return record if isinstance(record, dict) else None
