"""Entry ids and the shards they name: the small rules every memory module shares.

An entry id names its shard (``note-202611-7Q2KX9A1BC`` lives in ``memory/note/2026-11/<b>``
with the bucket taken from its first random character). Kept apart from ``entries`` so that
``versions`` (which ``Memory.history`` calls) can use them without importing ``Memory``.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from datetime import UTC, datetime
from typing import Any

from automerge.core import extract

from crdt import MEMORY_KINDS, actor_key, device_id, op_id_parts

KINDS = MEMORY_KINDS  # one list, in crdt.docids (which documents may exist)
BUCKETS = 8
ENTRY_ID_RE = re.compile(r"^([a-z]+)-([0-9]{4})([0-9]{2})-([A-Z2-7]{10})\Z")
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
MAX_TEXT = 256 * 1024


class EntryNotFound(KeyError):
    def __str__(self) -> str:
        return f"no memory entry has the id {self.args[0]!r}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_entry_id(kind: str, when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    rand = base64.b32encode(os.urandom(7)).decode()[:10]
    return f"{kind}-{when:%Y%m}-{rand}"


def _id_match(entry_id: str) -> re.Match[str] | None:
    """The parts of an entry id, or None when it is no id of a memory kind."""
    m = ENTRY_ID_RE.match(entry_id)
    return m if m and m.group(1) in KINDS else None


def _shard(m: re.Match[str]) -> str:
    kind, year, month, rand = m.groups()
    return f"memory/{kind}/{year}-{month}/{_B32.index(rand[0]) % BUCKETS}"


def shard_of(entry_id: str) -> str:
    m = _id_match(entry_id)
    if m is None:
        raise EntryNotFound(entry_id)
    return _shard(m)


def in_shard(entry_id: str, doc_id: str) -> bool:
    """Whether ``entry_id`` is an entry id that belongs in shard ``doc_id``. A member can
    sign, into any shard, a map under a key that is no id, an id of no memory kind, or the
    id of an entry that lives in another shard; none of them is an entry of this shard, and
    listing them showed a second, forged version of an honest entry under its very id."""
    pattern = _ids_of_shard(doc_id)
    return pattern is not None and pattern.fullmatch(entry_id) is not None


@functools.lru_cache(maxsize=4096)
def _ids_of_shard(doc_id: str) -> re.Pattern[str] | None:
    """The entry ids shard ``doc_id`` holds, as one pattern: a catch-up checks every entry
    of every shard it indexes (twice: Memory's index and search), and matching the general
    id pattern then building the shard's name cost 3.7 µs a check, 7.6% of a receiver's CPU
    (issue 17). ``fullmatch`` and ASCII digits only: ``$`` let an id with a trailing newline
    through, and ``\\d`` any script's digits. None for a name that is no memory shard."""
    m = _SHARD_RE.fullmatch(doc_id)
    if m is None or m.group(1) not in KINDS:
        return None
    kind, year, month, bucket = m.groups()
    firsts = "".join(c for i, c in enumerate(_B32) if i % BUCKETS == int(bucket))
    return re.compile(f"{kind}-{year}{month}-[{firsts}][A-Z2-7]{{9}}")


_SHARD_RE = re.compile(r"memory/([a-z]+)/([0-9]{4})-([0-9]{2})/([0-7])")


def creator_of(obj_id: Any) -> str | None:
    """The device whose key signed the creation of an entry's map: its object id names the
    actor of the op that made it (SPEC-005 005.10.6). This, not the ``author`` field the entry
    carries (any member can sign any value there), is what readers show as the author and
    select by: a member's note claiming the owner's device as author was consolidated as the
    owner's (SPEC-006 006.12.2.3). None for an id the binding did not give."""
    if not isinstance(obj_id, bytes):
        return None
    parts = op_id_parts(obj_id)
    return _device_of_actor(parts[0]) if parts else None


@functools.lru_cache(maxsize=1024)
def _device_of_actor(actor: bytes) -> str:
    return device_id(actor_key(actor))


def read_entry(doc: Any, obj: Any) -> dict[str, Any]:
    """An entry map read whole (``extract``), its ``author`` the device that signed the map's
    creation (:func:`creator_of`), not the value the entry claims. A text past MAX_TEXT (a
    member's entry: the write cap binds only this node's writes) is cut, ``text_truncated``."""
    entry = extract(doc, obj)
    text = entry.get("text")
    if isinstance(text, str) and len(text) > MAX_TEXT:
        entry["text"] = text[:MAX_TEXT]
        entry["text_truncated"] = True
    creator = creator_of(obj)
    if creator is not None:
        entry["author"] = creator
    return entry
