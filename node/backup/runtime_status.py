"""What the node remembers about its backups, kept in Runtime (rebuildable, never backed up):
when the last scheduled run happened, how it ended, and when a backup was last verified
(SPEC-002 §7.2, §10.2, §10.3)."""

from __future__ import annotations

import json
import time
from typing import Any

from crdt import Store

from ..config import Paths
from ..datadir import DataDirBusy, DataDirLock
from .format import parse_iso

STATUS_KEY = b"backup:status"


def read_status(store: Store) -> dict[str, Any]:
    env, db = store.runtime_db("kv")
    with env.begin(db=db) as txn:
        raw = txn.get(STATUS_KEY)
    try:
        data = json.loads(bytes(raw)) if raw else {}
    except ValueError:
        return {}  # Runtime is rebuildable: a damaged record is simply forgotten
    return data if isinstance(data, dict) else {}


def update_status(store: Store, **fields: Any) -> dict[str, Any]:
    env, db = store.runtime_db("kv")
    with env.begin(write=True, db=db) as txn:
        raw = txn.get(STATUS_KEY)
        try:
            current = json.loads(bytes(raw)) if raw else {}
        except ValueError:
            current = {}
        current.update(fields)
        txn.put(STATUS_KEY, json.dumps(current).encode())
    return current


#: How far ahead of this clock a verification time may be (clock skew between devices).
MAX_AHEAD_SECONDS = 300.0


def newer_verification(status: dict[str, Any], manifest_id: str, verified_at: str,
                       now: float | None = None) -> dict:
    """The fields to store when a verification finished, unless a newer one is known.

    Raises ValueError for a time more than a few minutes ahead of this clock: one dated 2999
    would silence the warning about old backups for good (SPEC-002 §7.4). Times are compared
    as times, not as text (``Z`` and ``+00:00`` both occur)."""
    when = parse_iso(verified_at)
    if when.timestamp() > (time.time() if now is None else now) + MAX_AHEAD_SECONDS:
        raise ValueError(f"the verification time {verified_at} is in the future")
    held = status.get("last_verified")
    try:
        if held and parse_iso(held) >= when:
            return {}
    except ValueError:
        pass  # an unreadable stored time is replaced
    return {"last_verified": verified_at, "last_verified_manifest": manifest_id}


def record_verified_offline(paths: Paths, manifest_id: str, verified_at: str) -> bool:
    """Store ``last_verified`` when no node runs (holding the node's lock while writing)."""
    if not (paths.root / "runtime" / "data.mdb").is_file():
        return False
    lock = DataDirLock(paths.root)
    try:
        lock.acquire()
    except DataDirBusy:
        return False
    try:
        store = Store(paths.root, layers=("runtime",))
        try:
            update_status(store, **newer_verification(read_status(store), manifest_id,
                                                      verified_at))
        finally:
            store.close()
    finally:
        lock.release()
    return True
