"""Tiered context (SPEC-004 §6): who overlaps with a session, how much, and what to tell it.

Each live session (local or remote) is a :class:`Record`. A :class:`TagIndex` maps each tag to
the sessions holding it, so the overlaps of one session against all others cost one dictionary
lookup per tag (SPEC-004 §6.6: < 1 ms against 50 sessions). Tiers: conflict (both modified a
file), detail (two or more shared tags), notice (one), none. Items are rendered within token
budgets estimated as ``ceil(characters / 4)`` (§6.5): no tokenizer on this path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .entities import tag_label

NONE, NOTICE, DETAIL, CONFLICT = 0, 1, 2, 3
TIER_NAMES = ("none", "notice", "detail", "conflict")
HEADER = "[maia-node] other agent sessions on your devices:"


def estimate_tokens(text: str) -> int:
    """SPEC-004 §6.5: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


def clip(text: str, tokens: int) -> str:
    """``text`` cut to fit ``tokens`` by the §6.5 estimate (ending in an ellipsis when cut)."""
    limit = max(0, tokens * 4)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"


def quoted(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut at ``limit`` characters, as a JSON string literal.

    Why: task, branch, recent action, file names, repository names and messages are another
    agent's or a repository's words (a branch name comes from .git/HEAD, a file name may hold a
    line break). Quoted, no quote, backslash or line break inside can end the quotation and
    start a line that reads as maia-node's own (SPEC-004 §6.3).
    """
    return json.dumps(" ".join(text.split())[:limit], ensure_ascii=False)


def label(tag: str) -> str:
    """:func:`tag_label` with the repository-controlled part quoted (§6.3): ``"src/app.py"``,
    ``repo "github.com/o/r"``, ``branch "main" of "github.com/o/r"``."""
    kind, _, rest = tag.partition(":")
    if kind == "file":
        return quoted(tag_label(tag))
    if kind == "branch":
        repo, _, branch = rest.rpartition("@")
        return f"branch {quoted(branch)} of {quoted(repo)}"
    return f"{kind} {quoted(rest)}"


@dataclass(frozen=True)
class Budget:
    """Token budgets (``[sessions.budget]``, SPEC-004 §6.2 and §10.3)."""

    notice: int = 30
    detail: int = 100
    conflict: int = 150
    total: int = 300
    journal_min: int = 300
    journal_max: int = 500
    memory: int = 200  # relevant memory entries at SessionStart and each prompt (§6.7)

    def for_tier(self, tier: int) -> int:
        return (0, self.notice, self.detail, self.conflict)[tier]

    @classmethod
    def from_config(cls, table: Mapping[str, object]) -> Budget:
        values = {}
        for name in cls.__dataclass_fields__:
            if name in table:
                value = table[name]
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"[sessions.budget] {name} must be a positive integer")
                values[name] = value
        budget = cls(**values)
        if budget.journal_min > budget.journal_max:
            raise ValueError("[sessions.budget] journal_min is larger than journal_max")
        return budget


@dataclass(frozen=True)
class Record:
    """What tiering needs to know about one live session."""

    id: str
    agent: str
    device: str
    device_name: str
    task: str = ""
    branch: str = ""
    repository: str = ""
    recent_action: str = ""
    last_active_ns: int = 0
    tags: frozenset[str] = frozenset()
    modified: frozenset[str] = frozenset()
    local: bool = True


class TagIndex:
    """tag -> ids of the sessions carrying it, kept in step with each session's tag set."""

    def __init__(self) -> None:
        self.by_tag: dict[str, set[str]] = {}
        self.tags_of: dict[str, frozenset[str]] = {}

    def put(self, session_id: str, tags: Iterable[str]) -> None:
        new = frozenset(tags)
        old = self.tags_of.get(session_id, frozenset())
        if new == old:
            return
        for tag in old - new:
            holders = self.by_tag.get(tag)
            if holders is not None:
                holders.discard(session_id)
                if not holders:
                    del self.by_tag[tag]
        for tag in new - old:
            self.by_tag.setdefault(tag, set()).add(session_id)
        self.tags_of[session_id] = new

    def drop(self, session_id: str) -> None:
        self.put(session_id, ())
        self.tags_of.pop(session_id, None)

    def shared(self, session_id: str, tags: Iterable[str]) -> dict[str, list[str]]:
        """Other session id -> the tags it shares with ``tags``."""
        out: dict[str, list[str]] = {}
        for tag in tags:
            for other in self.by_tag.get(tag, ()):
                if other != session_id:
                    out.setdefault(other, []).append(tag)
        return out


@dataclass
class Overlap:
    other: Record
    tier: int
    shared: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "session": self.other.id,
            "agent": self.other.agent,
            "device": self.other.device,
            "device_name": self.other.device_name,
            "tier": TIER_NAMES[self.tier],
            "shared": sorted(self.shared),  # both bounded by the 256-tag sets (§5.3)
            "files": sorted(self.files),
        }


def overlaps(me: Record, records: Mapping[str, Record], index: TagIndex) -> list[Overlap]:
    """Every other live session that shares a tag with ``me``, highest tier first (§6.1)."""
    out = []
    for other_id, shared in index.shared(me.id, me.tags).items():
        other = records.get(other_id)
        if other is None:
            continue
        files = sorted(me.modified & other.modified)
        tier = CONFLICT if files else DETAIL if len(shared) >= 2 else NOTICE
        out.append(Overlap(other, tier, shared, files))
    out.sort(key=lambda o: (-o.tier, -o.other.last_active_ns, o.other.id))
    return out


def _who(r: Record) -> str:
    return " ".join(f"{r.agent} on {r.device_name or r.device[:7]}".split())


def render(me: Record, ov: Overlap, budget: Budget) -> str:
    """One context item for ``ov`` at its tier, clipped to the tier's budget (§6.2, §6.3).

    Every string the other agent or the repository chose goes through :func:`quoted`, so it
    stays inside quotes on this one line and never reads as maia-node's sentence.
    """
    o = ov.other
    if ov.tier == CONFLICT:
        files = ", ".join(label(f) for f in ov.files[:5])
        text = (
            f"CONFLICT: you ({_who(me)}) and {_who(o)} (device {o.device}, session {o.id}) "
            f"both modified {files}. Coordinate before editing further: maia send {o.id} "
            f"\"...\", or take a lease: maia claim <path>."
            + (f" Their task: {quoted(o.task)}." if o.task else "")
        )
    elif ov.tier == DETAIL:
        branches = {t.split(":", 1)[1].rpartition("@")[0] for t in ov.shared
                    if t.startswith("branch:")}
        non_files = [label(t) for t in sorted(ov.shared) if not t.startswith("file:")
                     and not (t.startswith("repo:") and t[5:] in branches)]
        shared_files = [label(t) for t in sorted(ov.shared) if t.startswith("file:")][:3]
        parts = [f"{_who(o)} shares {', '.join(non_files[:2]) or 'files'} with you"]
        parts.append(f"task: {quoted(o.task) if o.task else 'none given'}")
        if o.branch:
            parts.append(f"branch {quoted(o.branch)}")
        if o.recent_action:
            parts.append(f"recent: {quoted(o.recent_action)}")
        if shared_files:
            parts.append("files: " + ", ".join(shared_files))
        text = "; ".join(parts) + "."
    else:
        text = (f"{_who(o)} is also in {label(ov.shared[0])} "
                f"(task: {quoted(o.task, 60) if o.task else 'none given'})")
    return clip(text, budget.for_tier(ov.tier))


def assemble(items: list[str], budget: Budget, *, header: str = HEADER) -> tuple[str, list[int]]:
    """Join items under ``header`` within ``budget.total``; returns (text, indexes included).

    Items are taken in order; one that does not fit is dropped (§6.2). When something was left
    out and it fits, a last line points at ``maia sessions``. Each item is put on one line
    (whitespace collapsed): why, a line break that got into an item must not start a line of
    its own that reads as the node's.
    """
    if not items:
        return "", []
    lines = [header]
    used = estimate_tokens(header)
    included: list[int] = []
    for i, item in enumerate(items):
        line = "- " + " ".join(item.split())
        cost = estimate_tokens(line)
        if used + cost > budget.total:
            continue
        lines.append(line)
        used += cost
        included.append(i)
    if not included:
        return "", []
    left = len(items) - len(included)
    if left > 0:
        tail = f"(+{left} more overlapping sessions: maia sessions)"
        if used + estimate_tokens(tail) <= budget.total:
            lines.append(tail)
    return "\n".join(lines), included
