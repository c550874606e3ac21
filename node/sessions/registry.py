"""Local agent sessions and the tokens that identify them (SPEC-004 §2, SPEC-003 §5.3).

A session's identity is its token and nothing else: the node issues ``maia_s_`` + 32 random
bytes (unpadded base64url) once, keeps only its SHA-256, and finds the session by that digest.
Names an agent types (task titles, CLI session ids) are attributes, never identity. Sessions are
Runtime state: in memory only, empty at every node start, never synced or backed up (§2.1).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from .clock import NS, iso, wall_of

TOKEN_PREFIX = "maia_s_"
AGENTS = ("claude", "codex", "gemini", "aider", "other")
MAX_LOCAL_SESSIONS = 256
MAX_TAGS = 256
TAG_WINDOW_NS = 30 * 60 * NS
MAX_INBOX = 64
_ENDED_MEMORY = 4096


def new_session_id() -> str:
    """128 random bits in lowercase base32: 26 characters of ``a-z2-7`` (§2.2)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


@dataclass
class Session:
    """One local session. ``tags`` and ``modified`` map tag -> last seen (ns), most recent last.

    Every ``*_ns`` instant here is on the monotonic clock (SPEC-004 §1): expiry and windows
    are durations. Wall time appears only in :meth:`record`, for display and for peers.
    """

    id: str
    agent: str
    pid: int
    cwd: str
    repository: str
    branch: str
    task: str
    cli_session_id: str
    device: str
    device_name: str
    started_ns: int
    last_seen_ns: int
    status: str = "active"
    scopes: tuple[str, ...] = ()  # granted at registration (SPEC-004 §2.11)
    memory_shown: set[str] = field(default_factory=set)  # entries injected already (§6.7)
    mcp: bool = False  # registered by `maia mcp` for the agent process ``pid`` (§15.2)
    recent_action: str = ""
    recent_action_ns: int = 0
    tags: OrderedDict[str, int] = field(default_factory=OrderedDict)
    modified: OrderedDict[str, int] = field(default_factory=OrderedDict)
    # what was injected about each other session: id -> (tier, their recent action, at ns)
    injected: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    # (other session, file tag) -> when a conflict alert or pre-edit warning was last given
    alerted: dict[tuple[str, str], int] = field(default_factory=dict)
    warned: dict[tuple[str, str], int] = field(default_factory=dict)
    conflicts: dict[tuple[str, str], int] = field(default_factory=dict)  # events recorded
    alerts: list[str] = field(default_factory=list)
    inbox: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_INBOX))

    def touch_tags(self, tags: list[str], now: int) -> None:
        """Bounded like ``modified`` (SPEC-004 §5.3 keeps at most 256): an agent posting
        thousands of distinct paths grew the map without end, and every hook sorted it all
        (192,000 tags: 211 ms a hook, 800 MB; found by an attacker's read)."""
        for tag in tags:
            self.tags[tag] = now
            self.tags.move_to_end(tag)
        while len(self.tags) > MAX_TAGS:
            self.tags.popitem(last=False)

    def touch_modified(self, files: list[str], now: int) -> None:
        for f in files:
            self.modified[f] = now
            self.modified.move_to_end(f)
        while len(self.modified) > MAX_TAGS:
            self.modified.popitem(last=False)

    def effective_tags(self, now: int) -> list[str]:
        """SPEC-004 §5.3: tags seen in the last 30 minutes plus every modified file, at most 256,
        least recently seen dropped first. Most recent first."""
        for tag, seen in list(self.tags.items()):
            if now - seen > TAG_WINDOW_NS and tag not in self.modified:
                del self.tags[tag]
        merged = dict(self.tags)
        for f, seen in self.modified.items():
            merged[f] = max(seen, merged.get(f, 0))
        ordered = sorted(merged, key=merged.__getitem__, reverse=True)
        return ordered[:MAX_TAGS]

    def record(self, now: int) -> dict[str, Any]:
        """The live record announced to peers (SPEC-004 §4.4), explicit fields only."""
        return {
            "id": self.id,
            "agent": self.agent,
            "device": self.device,
            "device_name": self.device_name,
            "pid": self.pid,
            "repository": self.repository,
            "branch": self.branch,
            "cwd": self.cwd,
            "task": self.task,
            "started_at": iso(wall_of(self.started_ns)),
            "last_seen": iso(wall_of(self.last_seen_ns)),
            "status": self.status,
            "tags": self.effective_tags(now),
            "modified": list(reversed(self.modified))[:MAX_TAGS],
            "recent_action": self.recent_action[:200],
        }


class Registry:
    """The live local sessions of this node, by id and by token digest."""

    def __init__(self, max_sessions: int = MAX_LOCAL_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}
        self._by_digest: dict[bytes, str] = {}
        self._digest_of: dict[str, bytes] = {}
        self._ended: OrderedDict[bytes, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self.sessions)

    def full(self) -> bool:
        return len(self.sessions) >= self.max_sessions

    def add(self, session: Session) -> str:
        """Register ``session``; returns its token (the only time it exists in clear)."""
        token = new_token()
        digest = token_digest(token)
        self.sessions[session.id] = session
        self._by_digest[digest] = session.id
        self._digest_of[session.id] = digest
        return token

    def by_token(self, token: str) -> tuple[Session | None, bool]:
        """(live session, ended?) for a presented token: (None, True) for an ended session's."""
        digest = token_digest(token)
        sid = self._by_digest.get(digest)
        if sid is not None:
            return self.sessions.get(sid), False
        return None, digest in self._ended

    def remove(self, session_id: str, status: str) -> Session | None:
        """End a session: its token stops working at once (SPEC-003 §5.3)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return None
        session.status = status
        digest = self._digest_of.pop(session_id, None)
        if digest is not None:
            self._by_digest.pop(digest, None)
            self._ended[digest] = session_id
            while len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)
