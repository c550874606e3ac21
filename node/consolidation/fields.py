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

from ..memory import EntryNotFound, Memory, now_iso, shard_of
from ..memory.entries import _row_key, check_text

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


def _clear_superseded(old_id: str, by_id: str) -> Edit:
    """Undo the mark ``mark_superseded`` put on ``old_id`` for ``by_id``."""

    def edit(tx: Transaction) -> None:
        obj = tx.get(ROOT, old_id)[1]
        for name in ("superseded_by", "valid_until"):
            if tx.get(obj, name) is not None:
                tx.delete(obj, name)
        _log(tx, obj, f"restored (was superseded by {by_id}, rejected)")

    return edit


def _current_fact(memory: Memory, entry_id: Any) -> dict[str, Any] | None:
    """The fact ``entry_id`` if it is one and current (not deleted, not superseded)."""
    if not isinstance(entry_id, str):
        return None
    try:
        entry = memory.get(entry_id)
    except (EntryNotFound, ValueError):  # gone, or an id of no shard (a member's value)
        return None
    return entry if entry["kind"] == "fact" and not entry.get("superseded_by") else None


def _change(memory: Memory, changes: dict[str, list[Edit]], told: dict[str, list[str]]) -> None:
    """Sign ``changes`` (one change per shard, stored together) and let the index and the
    write listeners (search) catch up with the entries ``told`` names."""
    before = {d: memory.repo.heads(d) for d in changes}
    memory.repo.change_many(changes)
    for doc_id in changes:
        memory._tell(doc_id, told.get(doc_id, []), before[doc_id])
        memory._dirty[doc_id] = 0.0  # re-index at the next read


def accept_fact(memory: Memory, entry_id: str, pending: str,
                text: str | None = None) -> dict[str, Any]:
    """Accept a fact pending review (removing the ``pending`` tag, with ``text`` when the
    reviewer edited it) and, if it proposes to supersede a current fact, mark that one
    superseded in the same signed change (SPEC-006 006.12.4.1): a proposed supersession takes
    effect only when a person accepts it, so a hostile answer cannot hide a fact."""
    entry = memory.get(entry_id)  # EntryNotFound
    if text is not None:
        check_text(text)
    at = now_iso()

    def accept(tx: Transaction) -> None:
        obj = tx.get(ROOT, entry_id)[1]
        if text is not None:
            tx.put(obj, "text", ScalarType.Str, text)
        tags = tx.get(obj, "tags")
        if tags is not None and tags[0] == ObjType.Map and tx.get(tags[1], pending) is not None:
            tx.delete(tags[1], pending)
        _log(tx, obj, "update text+tags" if text is not None else "update tags")

    changes: dict[str, list[Edit]] = {shard_of(entry_id): [accept]}
    told = {shard_of(entry_id): [entry_id]}
    target = _current_fact(memory, entry.get("supersedes"))
    if target is not None and target["id"] != entry_id:
        changes.setdefault(shard_of(target["id"]), []).append(
            mark_superseded(target["id"], entry_id, at))
        told.setdefault(shard_of(target["id"]), []).append(target["id"])
    _change(memory, changes, told)
    return memory.get(entry_id)


def undo_supersession(memory: Memory, entry_id: str) -> tuple[dict[str, list[Edit]],
                                                                dict[str, list[str]]]:
    """The edits that bring back the fact ``entry_id`` superseded when it is rejected: only
    a fact marked superseded by this very one (one written before supersessions waited for
    acceptance, or by a device that still writes them at once)."""
    entry = memory.get(entry_id)
    target = entry.get("supersedes")
    if not isinstance(target, str):
        return {}, {}
    try:
        old = memory.get(target)
    except (EntryNotFound, ValueError):
        return {}, {}
    if old.get("superseded_by") != entry_id:
        return {}, {}
    return {shard_of(target): [_clear_superseded(target, entry_id)]}, {shard_of(target): [target]}


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
