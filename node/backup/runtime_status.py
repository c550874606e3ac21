"""What the node remembers about its backups, kept in Runtime (rebuildable, never backed up):
when the last scheduled run happened, how it ended, and when a backup was last verified
(SPEC-002 §7.2, §10.2, §10.3)."""

from __future__ import annotations

import json
from typing import Any

from crdt import Store

from ..config import Paths
from ..datadir import DataDirBusy, DataDirLock

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


def newer_verification(status: dict[str, Any], manifest_id: str, verified_at: str) -> dict:
    """The fields to store when a verification finished, unless a newer one is known."""
    if (status.get("last_verified") or "") >= verified_at:
        return {}
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
