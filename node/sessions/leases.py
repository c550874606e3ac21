"""Advisory leases on a path or glob (SPEC-004 §8, §9): patterns, overlap, winners, the table.

The overlap test (§8.3) is conservative on purpose: a false overlap only makes a grant fail, a
missed overlap lets two agents edit the same file. The winner rule (§9.3) is a pure function of
the two lease records, so every node that knows both computes the same winner without talking:
earlier ``granted_at``, then the lower device id (ASCII), then the lower lease id.

Expiry never reads a wall clock (§8.6, §8.9): a lease carries a deadline on this node's monotonic
clock, set from its ``ttl_s`` when granted here, and from the time left announced by its origin
(capped at 24 h) when it arrives from a peer. ``granted_at`` stays the origin's wall time: it is
what every node orders by.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from .clock import NS, iso, mono_ns, parse_iso, wall_of

EXCLUSIVE, SHARED = "exclusive", "shared"
MODES = (EXCLUSIVE, SHARED)
MAX_PATTERN_BYTES = 1024
MAX_NOTE = 200
MAX_TTL_S = 86_400
DEFAULT_TTL_S = 900
MAX_PER_SESSION = 64
MAX_PER_NODE = 256  # what a live body may carry (SPEC-004 004.8.7)
_WILDCARDS = re.compile(r"[*?]")


class PatternError(ValueError):
    """A lease pattern that SPEC-004 §8.7 refuses."""


def check_pattern(pattern: str) -> str:
    """The pattern in canonical form (no ``./``, no trailing ``/``), or PatternError."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise PatternError("a lease pattern must not be empty")
    if len(pattern.encode("utf-8")) > MAX_PATTERN_BYTES:
        raise PatternError(f"a lease pattern is at most {MAX_PATTERN_BYTES} bytes")
    if "\x00" in pattern or "\\" in pattern:
        raise PatternError("a lease pattern uses '/' as separator and holds no NUL")
    if pattern.startswith("/") or re.match(r"^[A-Za-z]:", pattern):
        raise PatternError("a lease pattern is relative to the repository, never absolute")
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PatternError("a lease pattern has no '..' segment")
    if not parts:
        raise PatternError("a lease pattern must name something inside the repository")
    return "/".join(parts)


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def has_wildcard(pattern: str) -> bool:
    return bool(_WILDCARDS.search(pattern))


def glob_match(pattern: str, path: str) -> bool:
    return _regex(pattern).match(path) is not None


def covers(pattern: str, path: str) -> bool:
    """Does a lease on ``pattern`` cover ``path`` (§8.5)? The glob matches it, or the pattern is a
    literal naming the path or a directory above it."""
    if has_wildcard(pattern):
        return glob_match(pattern, path)
    return path == pattern or path.startswith(pattern + "/")


def literal_prefix(pattern: str) -> str:
    """The part before the first wildcard, cut at a ``/`` (the whole pattern without one)."""
    m = _WILDCARDS.search(pattern)
    if m is None:
        return pattern
    head = pattern[: m.start()]
    return head[: head.rfind("/")] if "/" in head else ""


def _path_prefix(a: str, b: str) -> bool:
    return a == "" or b == a or b.startswith(a + "/")


def patterns_overlap(a: str, b: str) -> bool:
    """SPEC-004 §8.3: either pattern, taken as a literal path, matches the other; or their
    literal prefixes are equal or one is a path prefix of the other."""
    if glob_match(a, b) or glob_match(b, a):
        return True
    pa, pb = literal_prefix(a), literal_prefix(b)
    return _path_prefix(pa, pb) or _path_prefix(pb, pa)


@dataclass(frozen=True)
class Lease:
    id: str
    repository: str
    pattern: str
    mode: str
    session: str
    device: str
    granted_ns: int  # the origin's wall clock: shown, and ordered by (§9.3)
    deadline_ns: int  # this node's monotonic clock: when it stops being in force (§8.6, §8.9)
    note: str = ""
    agent: str = ""
    task: str = ""
    device_name: str = ""

    def in_force(self, now_mono: int) -> bool:
        return now_mono < self.deadline_ns

    def left_ns(self, now_mono: int | None = None) -> int:
        return max(0, self.deadline_ns - (mono_ns() if now_mono is None else now_mono))

    @property
    def expires_ns(self) -> int:
        """The deadline shown on this node's wall clock (for people, never for decisions)."""
        return wall_of(self.deadline_ns)

    def record(self) -> dict[str, Any]:
        """The announced and answered form (SPEC-004 §8.1)."""
        return {
            "id": self.id,
            "repository": self.repository,
            "pattern": self.pattern,
            "mode": self.mode,
            "session": self.session,
            "device": self.device,
            "device_name": self.device_name,
            "agent": self.agent,
            "task": self.task,
            "granted_at": iso(self.granted_ns),
            "expires_at": iso(self.expires_ns),
            "ttl_ms": self.left_ns() // 1_000_000,
            "note": self.note,
        }

    @classmethod
    def from_record(cls, rec: Any, arrived_mono: int | None = None, held_ms: int = 0) -> Lease:
        """Parse an untrusted record (a peer's live state); ValueError when malformed.

        Its deadline is counted from its arrival (``arrived_mono``) with the time left it
        announces, less ``held_ms`` (how long a relay held it), at most 24 h (§8.9).
        """
        if not isinstance(rec, dict):
            raise ValueError("a lease record is a map")

        def s(name: str, limit: int, pattern: str | None = None) -> str:
            v = rec.get(name, "")
            if not isinstance(v, str) or len(v) > limit:
                raise ValueError(f"lease field {name} is not a string of at most {limit}")
            if pattern and not re.fullmatch(pattern, v):
                raise ValueError(f"lease field {name} is malformed")
            return v

        mode = s("mode", 16)
        if mode not in MODES:
            raise ValueError("lease mode is exclusive or shared")
        try:
            pattern = check_pattern(s("pattern", MAX_PATTERN_BYTES))
        except PatternError as exc:
            raise ValueError(str(exc)) from None
        granted = parse_iso(s("granted_at", 40))
        expires = parse_iso(s("expires_at", 40))
        ttl_ms = rec.get("ttl_ms")
        if ttl_ms is None:  # an origin that does not announce the time left
            left = expires - granted
        elif isinstance(ttl_ms, int) and not isinstance(ttl_ms, bool) and ttl_ms >= 0:
            left = ttl_ms * 1_000_000
        else:
            raise ValueError("lease field ttl_ms is not a non-negative integer")
        left = max(0, min(left - max(0, held_ms) * 1_000_000, MAX_TTL_S * NS))
        return cls(
            id=s("id", 32, r"[0-9a-f]{32}"),
            repository=s("repository", 1024),
            pattern=pattern,
            mode=mode,
            session=s("session", 26, r"[a-z2-7]{26}"),
            device=s("device", 80),
            granted_ns=granted,
            deadline_ns=(mono_ns() if arrived_mono is None else arrived_mono) + left,
            note=s("note", MAX_NOTE),
            agent=s("agent", 16),
            task=s("task", 200),
            device_name=s("device_name", 200),
        )


def new_lease_id() -> str:
    return secrets.token_hex(16)


def conflicting(a: Lease, b: Lease) -> bool:
    """SPEC-004 §9.3: overlap, at least one exclusive, different sessions (same repository)."""
    return (
        a.session != b.session
        and a.repository == b.repository
        and (a.mode == EXCLUSIVE or b.mode == EXCLUSIVE)
        and patterns_overlap(a.pattern, b.pattern)
    )


def winner_key(lease: Lease) -> tuple[int, str, str]:
    return (lease.granted_ns, lease.device, lease.id)


def winner(a: Lease, b: Lease) -> Lease:
    """The lease that stays in force when ``a`` and ``b`` conflict (§9.3)."""
    return min(a, b, key=winner_key)


def resolve(
    leases: Iterable[Lease], now_mono: int
) -> tuple[list[Lease], list[tuple[Lease, Lease]]]:
    """(leases in force, [(loser, winner)]) for a set of known leases at ``now_mono``.

    Expired leases are dropped; the rest are taken in winner order and each is kept unless it
    conflicts with one already kept. The outcome depends only on the set, never on the order
    the records arrived in.
    """
    alive = sorted((lease for lease in leases if lease.in_force(now_mono)), key=winner_key)
    kept: list[Lease] = []
    lost: list[tuple[Lease, Lease]] = []
    for lease in alive:
        beaten_by = next((k for k in kept if conflicting(k, lease)), None)
        if beaten_by is None:
            kept.append(lease)
        else:
            lost.append((lease, beaten_by))
    return kept, lost


def renewed(lease: Lease, now_mono: int, ttl_s: int) -> Lease:
    return replace(lease, deadline_ns=now_mono + ttl_s * NS)
