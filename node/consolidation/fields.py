"""Signed fields beyond text, kind and tags: sources of a fact, a skill's steps, a pin.

They are written as extra edits in the same signed change that creates the entry (through
``Memory.add_many``'s ``extra``), so no device ever sees a fact without its sources or a skill
without its steps (SPEC-006 §12.4.1, §12.6.1). Scalars are strings, booleans or floats; lists
are Automerge lists of strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from automerge.core import ROOT, ObjType, ScalarType, Transaction

from ..memory import Memory, now_iso, shard_of
from ..memory.entries import _row_key

Edit = Callable[[Transaction], None]


def set_fields(entry_id: str, fields: dict[str, Any]) -> Edit:
    """An edit that puts ``fields`` on an entry created earlier in the same transaction."""

    def edit(tx: Transaction) -> None:
        obj = tx.get(ROOT, entry_id)[1]
        for name, value in fields.items():
            if isinstance(value, bool):
                tx.put(obj, name, ScalarType.Boolean, value)
            elif isinstance(value, str):
                tx.put(obj, name, ScalarType.Str, value)
            elif isinstance(value, float):
                tx.put(obj, name, ScalarType.F64, value)
            elif isinstance(value, list):
                lst = tx.put_object(obj, name, ObjType.List)
                for i, item in enumerate(value):
                    tx.insert(lst, i, ScalarType.Str, str(item))
            else:  # a programming error, never input: callers validate first
                raise TypeError(f"unsupported field type for {name}")

    return edit


def _log(tx: Transaction, obj: Any, op: str) -> None:
    log_list = tx.get(obj, "log")[1]
    rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
    tx.put(rec, "at", ScalarType.Str, now_iso())
    tx.put(rec, "op", ScalarType.Str, op)


def mark_superseded(old_id: str, new_id: str, at: str) -> Edit:
    """The older fact's side of a supersession: ``superseded_by`` and ``valid_until``."""

    def edit(tx: Transaction) -> None:
        obj = tx.get(ROOT, old_id)[1]
        tx.put(obj, "superseded_by", ScalarType.Str, new_id)
        tx.put(obj, "valid_until", ScalarType.Str, at)
        _log(tx, obj, "superseded by " + new_id)

    return edit


def set_pin(memory: Memory, entry_id: str, pinned: bool) -> dict[str, Any]:
    """Pin or unpin an entry: a signed change with a log record, so it syncs (§12.5.2)."""
    memory.get(entry_id)  # EntryNotFound
    doc_id = shard_of(entry_id)

    def edit(tx: Transaction) -> None:
        obj = tx.get(ROOT, entry_id)[1]
        if pinned:
            tx.put(obj, "pinned", ScalarType.Boolean, True)
        elif tx.get(obj, "pinned") is not None:
            tx.delete(obj, "pinned")
        _log(tx, obj, "pin" if pinned else "unpin")

    memory.repo.change(doc_id, edit)
    memory._dirty[doc_id] = 0.0  # re-index at the next read (the pin is in the row)
    return memory.get(entry_id)


def index_rows(memory: Memory, rows: list[dict[str, Any]]) -> None:
    """Write the full index rows (with the signed extra fields) of entries just created, in
    one Runtime transaction. ``add_many`` indexed them without those fields, and the index
    upkeep compares log lengths, which the extra fields do not change. Rows add_many holds
    back are written first, so they cannot overwrite these later."""
    write_pending = getattr(memory, "write_pending", None)
    if write_pending is not None:
        write_pending()
    with memory._env.begin(write=True) as txn:
        for row in rows:
            doc_id = shard_of(row["id"])
            txn.put(_row_key(doc_id, row["id"]),
                    msgpack.packb({**row, "doc": doc_id}, use_bin_type=True),
                    db=memory._index_db)
