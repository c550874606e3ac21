"""Memory (SPEC-001 Memory layer): notes, conversations, facts, skills and journal entries.

``entries`` holds the rules (the :class:`Memory` domain object over signed shard documents),
``routes`` its HTTP routes and ``cli`` its ``maia memory`` commands; both are thin callers of
``Memory``. The names below are the package's public interface.
"""

from .entries import KINDS, MAX_TEXT, EntryNotFound, Memory, new_entry_id, shard_of

__all__ = ["KINDS", "MAX_TEXT", "EntryNotFound", "Memory", "new_entry_id", "shard_of"]
