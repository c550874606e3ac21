"""Rejected facts as signed Memory data, with a Runtime cache (SPEC-006 §12.4.2, §12.4.4).

A rejection is the signed field ``rejected`` (the text digest) that ``reject_fact`` writes on a
fact in the same signed change that deletes it, so it syncs with the tombstone and survives a
lost Runtime. What consolidation checks is a cache in the Runtime kv database, one key per
digest: ``note_tombstones`` fills it from the deleted entries the Memory index upkeep visits
anyway, so it follows sync and is rebuilt with the index. Whatever a member signed, the cost is
bounded: only a string of exactly 64 lower-case hex digits on a deleted ``fact`` counts, and
nothing else in a tombstone is read.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import lmdb
from automerge.core import ROOT, ObjType, ScalarType, Transaction

from ..memory import Memory, now_iso, shard_of
from .fields import undo_supersession

log = logging.getLogger(__name__)

PREFIX = b"consolidation:rejected:"
FIELD = "rejected"
DIGEST_LEN = 64
_DIGEST = re.compile(r"^[0-9a-f]{64}\Z")


def is_digest(value: Any) -> bool:
    """A well-formed text digest: 64 lower-case hex digits (the length is checked first, so a
    member's megabyte string costs nothing)."""
    return isinstance(value, str) and len(value) == DIGEST_LEN and bool(_DIGEST.match(value))


class Rejections:
    """The Runtime cache of rejected text digests of one node."""

    def __init__(self, store: Any) -> None:
        self._env, self._kv = store.runtime_db("kv")

    def __contains__(self, digest: str) -> bool:
        with self._env.begin(db=self._kv) as txn:
            return txn.get(PREFIX + digest.encode()) is not None

    def known(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` are rejected, in one read transaction (a batch's proposals)."""
        with self._env.begin(db=self._kv) as txn:
            return {d for d in digests if txn.get(PREFIX + d.encode()) is not None}

    def remember(self, digests: list[str]) -> None:
        with self._env.begin(write=True, db=self._kv) as txn:
            for digest in digests:
                txn.put(PREFIX + digest.encode(), b"1")

    def note_tombstones(self, doc_id: str, tombstones: list[tuple[str, dict[str, Any]]]) -> None:
        """``Memory.tombstone_readers`` hook: cache the digest of every rejected fact among the
        deleted entries of a shard just (re)indexed; anything malformed is skipped."""
        digests = [fields[FIELD] for _, fields in tombstones
                   if fields.get("kind") == "fact" and is_digest(fields.get(FIELD))]
        if not digests:
            return
        try:
            self.remember(digests)
        except lmdb.Error as exc:  # Runtime only: cached again when the shard is next indexed
            log.warning("rejections of %s not cached: %s", doc_id, exc)


def reject_fact(memory: Memory, entry_id: str, digest: str) -> dict[str, Any]:
    """Delete a fact and sign its rejection in one change: ``deleted_at``, ``rejected`` and a
    log record, so every device learns both together (SPEC-006 §12.4.2). A fact it had
    superseded at once (written by a device that marked supersessions before acceptance) is
    brought back in the same change: a rejected proposal must not keep hiding a fact."""
    if not is_digest(digest):
        raise ValueError("not a text digest")
    memory.get(entry_id)  # EntryNotFound, also when deleted already
    doc_id = shard_of(entry_id)
    at = now_iso()
    undo, told = undo_supersession(memory, entry_id)

    def edit(tx: Transaction) -> None:
        obj = tx.get(ROOT, entry_id)[1]
        tx.put(obj, "deleted_at", ScalarType.Str, at)
        tx.put(obj, FIELD, ScalarType.Str, digest)
        log_list = tx.get(obj, "log")[1]
        rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
        tx.put(rec, "at", ScalarType.Str, at)
        tx.put(rec, "op", ScalarType.Str, "reject")

    if not undo:
        memory.repo.change(doc_id, edit)
    else:
        before = {d: memory.repo.heads(d) for d in {doc_id, *undo}}
        changes: dict[str, list[Any]] = {doc_id: [edit]}
        for shard, edits in undo.items():
            changes.setdefault(shard, []).extend(edits)
        memory.repo.change_many(changes)
        for shard, ids in told.items():
            memory._tell(shard, ids, before[shard])
            memory._dirty[shard] = time.monotonic()
    memory._dirty[doc_id] = time.monotonic()  # the index drops the row at the next read
    return {"id": entry_id, "deleted_at": at, "rejected": True}
