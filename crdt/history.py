"""Versions of an object in a document, read from the document's own change history.

Automerge keeps every change, so a past value needs no copy: it is the document read at one
change hash as the only head. What this module adds is the cheap way to find WHICH changes
matter for one object without walking the whole document: every operation has an id
(counter, actor), and a change holds the operations ``start_op..max_op`` of its actor, so an
operation id names its change through a per-document index. The index is Runtime (rebuilt from
``get_changes``, extended with ``get_changes(heads)`` as the document grows), kept for a few
documents at a time (SPEC-005 §10.7).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from automerge.core import Document, ObjType

from .chunks import read_uleb

__all__ = [
    "ChangeIndex",
    "ChangeIndexCache",
    "ChangeRef",
    "op_id_parts",
    "value_at",
    "visible_ids",
]

#: Documents whose change index is kept; a history is usually asked for in one shard at a time.
INDEX_CACHE_DOCS = 8


def op_id_parts(op_id: bytes) -> tuple[bytes, int] | None:
    """(actor, counter) of an operation or object id from the binding, or None for ROOT.

    The binding encodes an id as ``0x10, len(actor), actor, uleb(actor index), uleb(counter)``.
    """
    if len(op_id) < 2 or op_id[0] != 0x10:
        return None
    n = op_id[1]
    if len(op_id) < 2 + n + 2:
        return None
    actor = bytes(op_id[2 : 2 + n])
    try:
        _, pos = read_uleb(op_id, 2 + n)
        counter, _ = read_uleb(op_id, pos)
    except ValueError:
        return None
    return actor, counter


@dataclass(frozen=True, slots=True)
class ChangeRef:
    """One change of a document: enough to name it and to own its operation ids."""

    hash: bytes
    actor: bytes
    seq: int
    start_op: int
    max_op: int


@dataclass(slots=True)
class ChangeIndex:
    """Operation id → change, for one document at ``heads``."""

    heads: tuple[bytes, ...] = ()
    _starts: dict[bytes, list[int]] = field(default_factory=dict)
    _refs: dict[bytes, list[ChangeRef]] = field(default_factory=dict)
    _hashes: set[bytes] = field(default_factory=set)

    def add(self, changes: Iterable[Any]) -> None:
        for c in changes:
            if c.hash in self._hashes:
                continue
            self._hashes.add(c.hash)
            ref = ChangeRef(c.hash, bytes(c.actor_id), c.seq, c.start_op, c.max_op)
            starts = self._starts.setdefault(ref.actor, [])
            refs = self._refs.setdefault(ref.actor, [])
            i = bisect.bisect_left(starts, ref.start_op)
            starts.insert(i, ref.start_op)
            refs.insert(i, ref)

    def change_of(self, op_id: bytes) -> ChangeRef | None:
        """The change that holds operation ``op_id``, if this document holds it."""
        parts = op_id_parts(op_id)
        if parts is None:
            return None
        actor, counter = parts
        starts = self._starts.get(actor)
        if not starts:
            return None
        i = bisect.bisect_right(starts, counter) - 1
        if i < 0:
            return None
        ref = self._refs[actor][i]
        return ref if ref.start_op <= counter <= ref.max_op else None

    def __len__(self) -> int:
        return len(self._hashes)


class ChangeIndexCache:
    """Change indexes of the last few documents asked about, brought up to date on use.

    A document that grew is extended with only its new changes (``get_changes(old heads)``
    walks back from the heads to the old ones); one rebuilt by a quarantine, whose old heads
    it no longer holds, yields every change again, which the index deduplicates.
    """

    def __init__(self, max_docs: int = INDEX_CACHE_DOCS) -> None:
        self.max_docs = max_docs
        self._indexes: OrderedDict[str, ChangeIndex] = OrderedDict()

    def index(self, doc_id: str, doc: Document) -> ChangeIndex:
        heads = tuple(sorted(doc.get_heads()))
        idx = self._indexes.get(doc_id)
        if idx is None:
            idx = ChangeIndex()
            idx.add(doc.get_changes([]))
        elif idx.heads != heads:
            idx.add(doc.get_changes(list(idx.heads)))
        idx.heads = heads
        self._indexes[doc_id] = idx
        self._indexes.move_to_end(doc_id)
        while len(self._indexes) > self.max_docs:
            self._indexes.popitem(last=False)
        return idx

    def forget(self, doc_id: str) -> None:
        self._indexes.pop(doc_id, None)


def value_at(doc: Document, obj: bytes, prop: str, head: bytes) -> tuple[Any, bytes] | None:
    """``(value, op id)`` of ``obj[prop]`` as of one change; a scalar value is unwrapped,
    an object comes back as its ``ObjType``."""
    got = doc.get(obj, prop, [head])
    if got is None:
        return None
    value, op = got
    return (value if isinstance(value, ObjType) else value[1]), op


def visible_ids(doc: Document, list_obj: bytes, head: bytes) -> set[bytes]:
    """Ids of the elements of a list as of one change: the elements in its causal past."""
    return {op for _, op in doc.values(list_obj, [head])}
