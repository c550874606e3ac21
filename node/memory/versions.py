"""Versions of memory entries: history with values, show at a version, restore, undelete,
the deleted list, and concurrent text kept visible (SPEC-005 §10.7 to §10.10).

Nothing here keeps a copy of an old value: a version is the entry read at one change hash of
its shard, found through the entry's own ``log`` records (crdt's history), so the signed
history the store accepted is the only source. Restore and undelete are new signed changes.
"""

from __future__ import annotations

import functools
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from automerge.core import ROOT, Document, ObjType, ScalarType, Transaction

from crdt import (
    ChangeIndex,
    ChangeIndexCache,
    actor_key,
    device_id,
    op_id_parts,
    value_at,
    visible_ids,
)

from .ids import MAX_TEXT, EntryNotFound, in_shard, now_iso, shard_of

if TYPE_CHECKING:  # Memory calls this module (Memory.history); types only here
    from .entries import Memory

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^[0-9a-f]{8,64}\Z")
MIN_PREFIX = 8
PREVIEW = 200
#: Log records looked at for concurrent text (SPEC-005 §10.8).
LIVE_SCAN = 64
_DELETED = b"deleted:"
_DELETED_HEADS = b"deleted-heads:"


class UnknownVersion(LookupError):
    """The version is not one of this entry's verified versions (args: the version, the entry
    id); its sentence is the one the API's 404 and the offline CLI both show."""

    def __str__(self) -> str:
        ref, entry_id = (*self.args, "")[:2]
        return f"{ref!r} is not a version of {entry_id} (see its history)"


class AmbiguousVersion(ValueError):
    """A version prefix names more than one version of the entry."""


class NotDeleted(ValueError):
    """Undelete of an entry that is not deleted."""


@dataclass(slots=True)
class Version:
    """One version of an entry: one log record, read at the change that wrote it."""

    hash: bytes
    actor: bytes
    record: dict[str, Any]
    values: dict[str, Any]
    wrote_text: bool = False
    past: set[bytes] = field(default_factory=set)  # log record ids visible at this version
    record_id: bytes = b""
    creation: bool = False  # the change that created the entry's map (no log record)
    # device keys, other than the record's writer, that set a field of its log record since
    # (SPEC-005 005.10.6: its ``at`` or ``op`` as shown is then theirs, not the writer's)
    altered_by: tuple[bytes, ...] = ()


def _hex(h: bytes) -> str:
    return h.hex()


class EntryVersions:
    """Version operations over one node's :class:`Memory`."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.repo = memory.repo
        self.indexes = ChangeIndexCache()

    # -- reading the history ---------------------------------------------------------------------
    def _entry_obj(self, entry_id: str) -> tuple[str, Document, bytes]:
        doc_id = shard_of(entry_id)  # a malformed id is EntryNotFound
        if self.repo.store.doc_meta(doc_id) is None and not self.repo.is_loaded(doc_id):
            raise EntryNotFound(entry_id)
        doc = self.repo.open(doc_id).doc
        got = doc.get(ROOT, entry_id)
        if got is None or got[0] != ObjType.Map:
            raise EntryNotFound(entry_id)
        return doc_id, doc, got[1]

    def _versions(self, entry_id: str, *, need_past: bool = True,
                  tail: int | None = None) -> list[Version]:
        """The entry's versions in log order; with ``tail``, only the last ``tail`` log
        records (and the current values), which is all that concurrency can concern."""
        doc_id, doc, e = self._entry_obj(entry_id)
        index = self.indexes.index(doc_id, doc)
        log_got = doc.get(e, "log")
        log_obj = log_got[1] if log_got is not None and log_got[0] == ObjType.List else None
        out: list[Version] = []
        seen: set[bytes] = set()
        records = doc.values(log_obj) if log_obj is not None else []
        skipped = max(0, len(records) - tail) if tail else 0
        for value, rec_id in records[skipped:]:
            if value != ObjType.Map:
                continue
            ref = index.change_of(rec_id)
            if ref is None or ref.hash in seen:
                continue  # (one change writing two records is one version)
            seen.add(ref.hash)
            record, setters = _record(doc, rec_id)
            version = self._version(doc, e, log_obj, index, ref.hash, ref.actor, record,
                                    rec_id, need_past)
            writer = actor_key(ref.actor)
            version.altered_by = tuple(sorted(k for k in setters if k != writer))
            out.append(version)
        # Writes without a log record (an entry made by hand or by an older writer, a member
        # key rewriting a field) are still versions: the change that created the entry object
        # comes first, and nothing the entry shows now may come from nowhere (SPEC-005 §10.7).
        created = index.change_of(e)
        if created is not None and created.hash not in seen and not skipped:
            seen.add(created.hash)
            first = self._version(doc, e, log_obj, index, created.hash, created.actor,
                                  {"op": "unlogged"}, b"", need_past)
            first.creation = True
            out.insert(0, first)
        for prop in ("text", "deleted_at"):
            got = doc.get(e, prop)
            if got is None:
                continue
            ref = index.change_of(got[1])
            if ref is not None and ref.hash not in seen:
                seen.add(ref.hash)
                out.append(self._version(doc, e, log_obj, index, ref.hash, ref.actor,
                                         {"op": "unlogged"}, b"", need_past))
        return out

    def _version(self, doc: Document, e: bytes, log_obj: bytes | None, index: ChangeIndex,
                 head: bytes, actor: bytes, record: dict[str, Any], rec_id: bytes,
                 need_past: bool) -> Version:
        values = _values_at(doc, e, head)
        text_op = values.pop("_text_op", None)
        wrote = text_op is not None and (ref := index.change_of(text_op)) is not None \
            and ref.hash == head
        past = visible_ids(doc, log_obj, head) if (need_past and wrote and log_obj) else set()
        return Version(head, actor, record, values, wrote, past, rec_id)

    def history(self, entry_id: str) -> list[dict[str, Any]]:
        """Every version with its values, device (verified) and claimed time; also for a
        deleted entry."""
        versions = self._versions(entry_id, need_past=False)
        return [self._public(i, v) for i, v in enumerate(versions, 1)]

    def _public(self, n: int, v: Version) -> dict[str, Any]:
        roster = self.repo.roster
        key = actor_key(v.actor)
        status = ("member" if key in roster.members
                  else "revoked" if key in roster.revoked else "unknown")
        rec = v.record
        row = {
            "version": _hex(v.hash),
            "n": n,
            "at": _str(rec.get("at")),
            "op": _str(rec.get("op")) or "?",
            "device_id": _device_id(key),
            "device_name": roster.members.get(key, ""),
            # Held changes were verified when accepted (SPEC-005 §6): the device signed it.
            "verified": status != "unknown",
            "signer_status": status,
            "session": _str(rec.get("session")),
            "agent": _str(rec.get("agent")),
            "wrote_text": v.wrote_text,
            **v.values,
        }
        if isinstance(rec.get("from"), str):
            row["from"] = rec["from"]
        row["altered_by"] = [{"device_id": _device_id(k), "device_name": roster.members.get(k, "")}
                             for k in v.altered_by]
        return row

    def resolve(self, entry_id: str, ref: str) -> Version:
        """The version named by ``ref`` (hash or unique prefix); only this entry's."""
        if not isinstance(ref, str) or not VERSION_RE.match(ref):
            raise ValueError("a version is 8 to 64 lowercase hex characters (a change hash)")
        hits = [v for v in self._versions(entry_id, need_past=False)
                if _hex(v.hash).startswith(ref)]
        if not hits:
            raise UnknownVersion(ref, entry_id)
        if len(hits) > 1:
            raise AmbiguousVersion(f"{ref} names {len(hits)} versions; give more characters")
        return hits[0]

    def show_at(self, entry_id: str, ref: str) -> dict[str, Any]:
        """The entry as it was at one of its versions."""
        v = self.resolve(entry_id, ref)
        versions = self._versions(entry_id, need_past=False)
        n = next(i for i, x in enumerate(versions, 1) if x.hash == v.hash)
        row = self._public(n, v)
        return {"id": entry_id, **row}

    def concurrent(self, entry_id: str) -> list[dict[str, Any]]:
        """Text values written concurrently and not yet superseded (SPEC-005 §10.8); empty
        unless there are at least two."""
        if self._text_settled(entry_id):
            return []
        # Only the last LIVE_SCAN log records: each text writer costs one read of the log at
        # its head, so a log forged to hold 100k records cannot make a read quadratic. Older
        # concurrent values, were there any, stay in the history.
        versions = self._versions(entry_id, tail=LIVE_SCAN)
        writers = [v for v in versions if v.wrote_text]
        live = [v for v in writers if not any(_supersedes(w, v) for w in writers if w is not v)]
        if len({v.values.get("text") for v in live}) < 2:
            return []  # one value, or the same text typed on two devices: nothing to pick
        total = self._log_length(entry_id)
        first = max(0, total - LIVE_SCAN)
        numbered = {v.hash: first + i for i, v in enumerate(versions, 1)}
        out = []
        for v in live:
            row = self._public(numbered[v.hash], v)
            out.append({k: row[k] for k in ("version", "n", "text", "device_id", "device_name",
                                             "at", "session", "agent")})
        return out

    def _text_settled(self, entry_id: str) -> bool:
        """The cheap common case: every log record that the change holding the current text
        had not seen wrote no text, so nothing is concurrent with it. One read of the log at
        that change, plus one value read per record it had not seen (usually none)."""
        doc_id, doc, e = self._entry_obj(entry_id)
        got, log_got = doc.get(e, "text"), doc.get(e, "log")
        if got is None or log_got is None or log_got[0] != ObjType.List:
            return False
        index = self.indexes.index(doc_id, doc)
        winner = index.change_of(got[1])
        if winner is None:
            return False
        seen = visible_ids(doc, log_got[1], winner.hash)
        for _, rec_id in doc.values(log_got[1]):
            if rec_id in seen:
                continue
            ref = index.change_of(rec_id)
            if ref is None:
                return False
            text = doc.get(e, "text", [ref.hash])
            writer = index.change_of(text[1]) if text is not None else None
            if writer is not None and writer.hash == ref.hash:
                return False  # a text write the current value's author had not seen
        return True

    def _log_length(self, entry_id: str) -> int:
        _, doc, e = self._entry_obj(entry_id)
        got = doc.get(e, "log")
        return doc.length(got[1]) if got is not None and got[0] == ObjType.List else 0

    def get(self, entry_id: str) -> dict[str, Any]:
        """The entry as :meth:`Memory.get` shows it, plus ``concurrent`` when its text was
        edited on two devices at the same time."""
        entry = self.memory.get(entry_id)
        if entry.get("edits", 0) >= 2:
            live = self.concurrent(entry_id)
            if live:
                entry["concurrent"] = live
        return entry

    # -- writes ----------------------------------------------------------------------------------
    def restore(self, entry_id: str, ref: str) -> dict[str, Any]:
        """Write a version's text and tags again as a NEW signed change (and bring the entry
        back if it is deleted); only a version the verified history holds (SPEC-005 §10.9)."""
        v = self.resolve(entry_id, ref)
        text, tags = v.values.get("text"), v.values.get("tags")
        if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
            raise ValueError("that version holds no text that can be restored")
        want = set(tags or [])
        doc_id = shard_of(entry_id)
        at = now_iso()

        def edit(tx: Transaction) -> None:
            e = tx.get(ROOT, entry_id)[1]
            tx.put(e, "text", ScalarType.Str, text)
            got = tx.get(e, "tags")
            tags_obj = got[1] if got is not None and got[0] == ObjType.Map else \
                tx.put_object(e, "tags", ObjType.Map)
            for tag in tx.keys(tags_obj):
                if tag not in want:
                    tx.delete(tags_obj, tag)
            for tag in sorted(want):
                cur = tx.get(tags_obj, tag)
                if cur is None or cur[0] != (ScalarType.Boolean, True):
                    tx.put(tags_obj, tag, ScalarType.Boolean, True)
            if tx.get(e, "deleted_at") is not None:
                tx.delete(e, "deleted_at")
            _append_record(tx, e, {"at": at, "op": "restore", "from": _hex(v.hash)})

        self.repo.change(doc_id, edit)
        log.info("restored %s to version %s", entry_id, _hex(v.hash)[:12])
        return self.memory.get(entry_id)

    def undelete(self, entry_id: str) -> dict[str, Any]:
        """Bring a deleted entry back: ``deleted_at`` is removed by a new signed change."""
        doc_id, doc, e = self._entry_obj(entry_id)
        if doc.get(e, "deleted_at") is None:
            raise NotDeleted(f"{entry_id} is not deleted")
        at = now_iso()

        def edit(tx: Transaction) -> None:
            obj = tx.get(ROOT, entry_id)[1]
            tx.delete(obj, "deleted_at")
            _append_record(tx, obj, {"at": at, "op": "undelete"})

        self.repo.change(doc_id, edit)
        return self.memory.get(entry_id)

    # -- deleted entries -------------------------------------------------------------------------
    def deleted(self, limit: int = 50) -> list[dict[str, Any]]:
        """Deleted entries that can be brought back, newest deletion first.

        Rows live in Runtime (kv ``deleted:``), rebuilt per shard whenever the shard's heads
        (read from the store's metadata, no load) differ from those they were built at.
        """
        env, kv = self.repo.store.runtime_db("kv")
        for doc_id in self.repo.store.doc_ids("memory"):
            heads = sorted(self.repo.heads(doc_id))
            with env.begin(db=kv) as txn:
                raw = txn.get(_DELETED_HEADS + doc_id.encode())
            if raw is not None and sorted(msgpack.unpackb(raw)) == heads:
                continue
            self._rescan_deleted(doc_id)
        rows = [msgpack.unpackb(v) for _, v in self.repo.store.runtime_items("kv", _DELETED)]
        rows.sort(key=lambda r: r.get("deleted_at") or "", reverse=True)
        return rows[: max(1, limit)]

    def _rescan_deleted(self, doc_id: str) -> None:
        was_loaded = self.repo.is_loaded(doc_id)
        doc = self.repo.open(doc_id).doc
        roster = self.repo.roster
        rows: dict[bytes, bytes] = {}
        for entry_id in doc.keys(ROOT):
            got = doc.get(ROOT, entry_id)
            if got is None or got[0] != ObjType.Map or not in_shard(entry_id, doc_id):
                continue
            e = got[1]
            when = doc.get(e, "deleted_at")
            if when is None:
                continue
            text = doc.get(e, "text")
            kind = doc.get(e, "kind")
            deleter = _actor_of_op(when[1])
            rows[_row_key(doc_id, entry_id)] = msgpack.packb({
                "id": entry_id,
                "kind": _str(kind[0][1]) if kind and not isinstance(kind[0], ObjType) else "",
                "deleted_at": _str(when[0][1]) if not isinstance(when[0], ObjType) else "",
                "deleted_by": _device_id(deleter) if deleter else None,
                "deleted_by_name": roster.members.get(deleter, "") if deleter else "",
                "text": (_str(text[0][1]) if text and not isinstance(text[0], ObjType)
                         else "")[:PREVIEW],
            })
        env, kv = self.repo.store.runtime_db("kv")
        prefix = _DELETED + doc_id.encode() + b"\x00"
        with env.begin(write=True, db=kv) as txn:
            cur = txn.cursor()
            stale = []
            if cur.set_range(prefix):
                for key in cur.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    stale.append(bytes(key))
            for key in stale:
                txn.delete(key)
            for key, raw in rows.items():
                txn.put(key, raw)
            txn.put(_DELETED_HEADS + doc_id.encode(), msgpack.packb(list(doc.get_heads())))
        if not was_loaded:
            self.repo.evict(doc_id)


_BY_MEMORY: weakref.WeakKeyDictionary[Memory, EntryVersions] = weakref.WeakKeyDictionary()


def versions_of(memory: Memory) -> EntryVersions:
    """The version operations of ``memory`` (one per Memory, so its change indexes are kept)."""
    ev = _BY_MEMORY.get(memory)
    if ev is None:
        ev = _BY_MEMORY[memory] = EntryVersions(memory)
    return ev


# -- helpers ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _device_id(key: bytes) -> str:
    """A device id is a hash with check characters: computed once per key, not per version."""
    return device_id(key)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _record(doc: Document, rec_id: bytes) -> tuple[dict[str, Any], set[bytes]]:
    """A log record's scalar fields, and the device keys whose operations set the values it
    holds now (the actor in each value's op id: a member key can overwrite another device's
    record, SPEC-005 005.10.6)."""
    out: dict[str, Any] = {}
    setters: set[bytes] = set()
    for k in doc.keys(rec_id):
        got = doc.get(rec_id, k)
        if got is not None and not isinstance(got[0], ObjType):
            out[k] = got[0][1]
            setter = _actor_of_op(got[1]) if isinstance(got[1], bytes) else None
            if setter is not None:
                setters.add(setter)
    return out, setters


def _supersedes(w: Version, v: Version) -> bool:
    """Whether text writer ``w`` had seen ``v``: its log record is in ``w``'s past, or ``v``
    created the entry (every write to the entry's map has its creation in its past)."""
    return v.creation or bool(v.record_id and v.record_id in w.past)


def _values_at(doc: Document, e: bytes, head: bytes) -> dict[str, Any]:
    """The entry's fields as of one change (and the op id holding its text)."""
    out: dict[str, Any] = {"text": None, "tags": [], "kind": None, "deleted": False}
    text = value_at(doc, e, "text", head)
    if text is not None and isinstance(text[0], str):
        out["text"], out["_text_op"] = text
    kind = value_at(doc, e, "kind", head)
    out["kind"] = _str(kind[0]) if kind else None
    deleted = value_at(doc, e, "deleted_at", head)
    out["deleted"] = deleted is not None
    out["deleted_at"] = _str(deleted[0]) if deleted else None
    tags = value_at(doc, e, "tags", head)
    if tags is not None and tags[0] == ObjType.Map:
        tags_obj = tags[1]
        keys = doc.keys(tags_obj, [head])
        vals = doc.values(tags_obj, [head])
        out["tags"] = sorted(k for k, (v, _) in zip(keys, vals, strict=False)
                             if not isinstance(v, ObjType) and v[1] is True)
    return out


def _append_record(tx: Transaction, e: bytes, fields: dict[str, str]) -> None:
    got = tx.get(e, "log")
    log_list = got[1] if got is not None and got[0] == ObjType.List else \
        tx.put_object(e, "log", ObjType.List)
    rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
    for k, v in fields.items():
        tx.put(rec, k, ScalarType.Str, v)


def _actor_of_op(op_id: bytes) -> bytes | None:
    parts = op_id_parts(op_id)
    return actor_key(parts[0]) if parts else None


def _row_key(doc_id: str, entry_id: str) -> bytes:
    return _DELETED + doc_id.encode() + b"\x00" + entry_id.encode()


__all__ = [
    "AmbiguousVersion",
    "EntryVersions",
    "NotDeleted",
    "UnknownVersion",
    "versions_of",
]
