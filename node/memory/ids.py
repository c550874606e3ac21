"""Entry ids and the shards they name: the small rules every memory module shares.

An entry id names its shard (``note-202611-7Q2KX9A1BC`` lives in ``memory/note/2026-11/<b>``
with the bucket taken from its first random character). Kept apart from ``entries`` so that
``versions`` (which ``Memory.history`` calls) can use them without importing ``Memory``.
"""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, datetime

from crdt import MEMORY_KINDS

KINDS = MEMORY_KINDS  # one list, in crdt.docids (which documents may exist)
BUCKETS = 8
ENTRY_ID_RE = re.compile(r"^([a-z]+)-(\d{4})(\d{2})-([A-Z2-7]{10})$")
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


def shard_of(entry_id: str) -> str:
    m = ENTRY_ID_RE.match(entry_id)
    if not m or m.group(1) not in KINDS:
        raise EntryNotFound(entry_id)
    kind, year, month, rand = m.groups()
    return f"memory/{kind}/{year}-{month}/{_B32.index(rand[0]) % BUCKETS}"
