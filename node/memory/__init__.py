"""Memory (SPEC-001 Memory layer): notes, conversations, facts, skills and journal entries.

``ids`` holds entry ids and their shards; ``entries`` the rules (the :class:`Memory` domain
object over signed shard documents); ``versions`` every version of an entry from the documents'
signed history (show at, restore, undelete, the deleted list); ``routes`` and
``versions_routes`` the HTTP routes and ``cli`` (with ``versions_cli``) the ``maia memory``
commands, thin callers of the two. The names below are the package's public interface.
"""

from .entries import Memory, ShardScan
from .ids import (
    ENTRY_ID_RE,
    KINDS,
    MAX_TEXT,
    EntryNotFound,
    creator_of,
    in_shard,
    new_entry_id,
    now_iso,
    read_entry,
    shard_of,
)

__all__ = ["ENTRY_ID_RE", "KINDS", "MAX_TEXT", "EntryNotFound", "Memory", "ShardScan",
           "creator_of", "in_shard", "new_entry_id", "now_iso", "read_entry", "shard_of"]
