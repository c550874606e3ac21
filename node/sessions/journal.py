"""The work journal (SPEC-004 §10): durable, per project, in the Memory layer.

Entries are Memory entries of kind ``journal`` (signed, synced and backed up like all Memory);
their fields ride in tags (``journal:<kind>``, ``project:<id>``, ``status:<open|done>``,
``session:<id>``, ``agent:<agent>``, §10.5), so the Memory layer needs no new schema. At session
start a digest of the project's entries is injected within ``journal_min..journal_max`` tokens.
"""

from __future__ import annotations

from typing import Any

from ..memory import Memory
from .tiers import Budget, clip, estimate_tokens

JOURNAL_KINDS = ("achievement", "decision", "todo", "aspiration", "learning", "blocker")
WITH_STATUS = ("todo", "blocker")
STATUSES = ("open", "done")
DIGEST_ORDER = ("blocker", "todo", "decision", "learning", "achievement", "aspiration")
MAX_ENTRY_CHARS = 200
MAX_TEXT = 4000


class JournalError(ValueError):
    pass


def _field(tags: list[str], prefix: str) -> str:
    return next((t[len(prefix):] for t in tags if t.startswith(prefix)), "")


def to_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A journal view of a Memory row (explicit fields only, SPEC-003 §6.4)."""
    tags = row.get("tags", [])
    return {
        "id": row["id"],
        "journal_kind": _field(tags, "journal:"),
        "project": _field(tags, "project:"),
        "status": _field(tags, "status:") or None,
        "session": _field(tags, "session:") or None,
        "agent": _field(tags, "agent:") or None,
        "source": _field(tags, "source:") or None,
        "text": row.get("text", ""),
        "created_at": row.get("created_at", ""),
        "author": row.get("author", ""),
    }


class Journal:
    """Journal entries over Memory, with a cache of all journal entries.

    Listing Memory scans its whole Runtime index, which grows with every note; the journal is
    read at every SessionStart, so its entries are cached and the cache is dropped whenever a
    journal shard changes, locally or by sync (``memory/journal/...`` documents).
    """

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self._cache: list[dict[str, Any]] | None = None
        memory.repo.subscribe(self._on_change)

    def _on_change(self, doc_id: str, local: bool) -> None:
        if doc_id.startswith("memory/journal/"):
            self._cache = None

    def _all(self) -> list[dict[str, Any]]:
        if self._cache is None:
            self._cache = [to_entry(row) for row in
                           self.memory.list(kind="journal", limit=1_000_000)]
        return self._cache

    def add(
        self,
        journal_kind: str,
        text: str,
        project: str,
        *,
        session: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        if journal_kind not in JOURNAL_KINDS:
            raise JournalError(f"kind must be one of {', '.join(JOURNAL_KINDS)}")
        text = text.strip()
        if not text or len(text) > MAX_TEXT:
            raise JournalError(f"text must be 1 to {MAX_TEXT} characters")
        if not project:
            raise JournalError("a journal entry needs a project (a repository id)")
        if status is not None and (status not in STATUSES or journal_kind not in WITH_STATUS):
            raise JournalError("only todo and blocker entries have a status: open or done")
        tags = [f"journal:{journal_kind}", f"project:{project}"]
        if journal_kind in WITH_STATUS:
            tags.append(f"status:{status or 'open'}")
        if session:
            tags.append(f"session:{session}")
        if agent:
            tags.append(f"agent:{agent}")
        if source:
            tags.append(f"source:{source}")
        by = {"session": session, "agent": agent or ""} if session else None
        return to_entry(self.memory.add(text, kind="journal", tags=tags, by=by,
                                        field_tags=True))

    def list(
        self,
        project: str | None = None,
        *,
        journal_kind: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        out = []
        for entry in self._all():  # newest first
            if project and entry["project"] != project:
                continue
            if journal_kind and entry["journal_kind"] != journal_kind:
                continue
            if status and entry["status"] != status:
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    def get(self, entry_id: str) -> dict[str, Any]:
        row = self.memory.get(entry_id)  # EntryNotFound
        if row.get("kind") != "journal":
            raise KeyError(entry_id)
        return to_entry(row)

    def set_status(self, entry_id: str, status: str) -> dict[str, Any]:
        entry = self.get(entry_id)
        if entry["journal_kind"] not in WITH_STATUS or status not in STATUSES:
            raise JournalError("only todo and blocker entries have a status: open or done")
        old = [f"status:{s}" for s in STATUSES if s != status]
        self.memory.update(entry_id, add_tags=[f"status:{status}"], remove_tags=old,
                           field_tags=True)
        return self.get(entry_id)

    def digest(self, project: str, budget: Budget) -> str:
        """SPEC-004 §10.3: open blockers, open todos, decisions, learnings, achievements,
        aspirations; newest first within each; up to ``journal_max`` tokens, reaching at least
        ``journal_min`` when there is enough to say. Empty journal -> ""."""
        entries = self.list(project, limit=10_000)
        if not entries:
            return ""
        groups: dict[str, list[dict[str, Any]]] = {k: [] for k in DIGEST_ORDER}
        for e in entries:  # already newest first
            kind = e["journal_kind"]
            if kind in WITH_STATUS and e["status"] == "done":
                continue
            if kind in groups:
                groups[kind].append(e)
        header = f"[maia-node] work journal of {project} (newest first):"
        lines = [header]
        used = estimate_tokens(header)
        for kind in DIGEST_ORDER:
            for e in groups[kind]:
                body = " ".join(e["text"].split())
                if len(body) > MAX_ENTRY_CHARS:
                    body = body[: MAX_ENTRY_CHARS - 1] + "…"
                line = f"- [{kind}] {body}"
                cost = estimate_tokens(line)
                room = budget.journal_max - used
                if cost > room:
                    if used < budget.journal_min and room > 8:
                        lines.append(clip(line, room))
                        used = budget.journal_max
                        break
                    continue
                lines.append(line)
                used += cost
            if used >= budget.journal_max:
                break
        return "\n".join(lines) if len(lines) > 1 else ""
