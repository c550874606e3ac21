"""Agent session routes (SPEC-004): sessions, hook events, leases, journal, messages, events.

Function level: registration and the mesh-wide listing are for the local principal only; the
rest admit session tokens too. Object level (SPEC-003 §6.3): a session principal acts only on
its own session, leases, events, messages and project; the handlers compare the object's session
with the principal's id, never with an id from the path or body, and answer 404 for another
session's objects so their existence is not revealed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api.auth import Principal
from ..api.middleware import BODY_KEY, PRINCIPAL_KEY, QUERY_KEY
from ..api.pagination import page as _page
from ..api.problem import Problem
from ..api.routes import RouteTable
from ..api.scopes import SCOPES, require_scope
from ..memory import EntryNotFound
from .clock import mono_ns
from .coordinator import (
    OWNER,
    ClockSkew,
    Coordinator,
    CoordinatorError,
    Invalid,
    LeaseConflict,
    NotFound,
    Overloaded,
)
from .eventlog import KINDS as EVENT_KINDS
from .journal import JOURNAL_KINDS, STATUSES, JournalError
from .leases import DEFAULT_TTL_S, MAX_NOTE, MAX_PATTERN_BYTES, MAX_TTL_S, MODES
from .registry import AGENTS

session_routes = RouteTable("sessions")
SESSIONS_KEY: web.AppKey[Coordinator] = web.AppKey("maia_sessions", Coordinator)

TYPE_LEASE_CONFLICT = "urn:maia-node:problem:lease-conflict"
TYPE_CLOCK_SKEW = "urn:maia-node:problem:clock-skew"
TYPE_OVERLOADED = "urn:maia-node:problem:overloaded"
BOTH = ("local", "session")
SID = "{id:[a-z2-7]{26}}"
LID = "{id:[0-9a-f]{32}}"

_STR = {"type": "string"}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event"],
    "properties": {
        "event": {"enum": ["session_start", "pre_tool", "post_tool", "prompt", "stop",
                           "session_end"]},
        "cli_session_id": {**_STR, "maxLength": 200},
        "cwd": {**_STR, "maxLength": 4096},
        "tool": {**_STR, "maxLength": 200},
        "action": {"enum": ["read", "edit", "shell", "fetch", "search", "other"]},
        "paths": {"type": "array", "maxItems": 64,
                  "items": {**_STR, "minLength": 1, "maxLength": 4096, "pattern": "^/"}},
        "command": {**_STR, "maxLength": 4096},
        "url": {**_STR, "maxLength": 4096},
        "prompt": {**_STR, "maxLength": 2000},
        "message": {**_STR, "maxLength": 2000},
    },
}
REGISTER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["agent", "pid", "cwd"],
    "properties": {
        "agent": {"enum": list(AGENTS)},
        "pid": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "cwd": {**_STR, "minLength": 1, "maxLength": 4096, "pattern": "^/"},
        "repository": {**_STR, "maxLength": 1024},
        "branch": {**_STR, "maxLength": 256},
        "task": {**_STR, "maxLength": 200},
        "cli_session_id": {**_STR, "maxLength": 200},
        "event": EVENT_SCHEMA,
        # SPEC-004 §2.11: what the session may do; the default agent scopes when absent
        "scopes": {"type": "array", "items": {"enum": list(SCOPES)}, "uniqueItems": True,
                   "maxItems": len(SCOPES)},
        "mcp": {"type": "boolean"},  # SPEC-004 §15.2: the agent's MCP server registers
    },
}
_SESSION_FIELD = {**_STR, "pattern": "^[a-z2-7]{26}$", "maxLength": 26}
_TTL = {"type": "integer", "minimum": 1, "maximum": MAX_TTL_S}
ACQUIRE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pattern"],
    "properties": {
        "pattern": {**_STR, "minLength": 1, "maxLength": MAX_PATTERN_BYTES},
        "mode": {"enum": list(MODES)},
        "ttl_s": _TTL,
        "note": {**_STR, "maxLength": MAX_NOTE},
        "repository": {**_STR, "minLength": 1, "maxLength": 1024},
        "session": _SESSION_FIELD,
    },
}
RENEW_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"ttl_s": _TTL},
}
_PAGE = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 500},
    "cursor": {**_STR, "maxLength": 200},
}
PAGE_QUERY = {"type": "object", "additionalProperties": False, "properties": _PAGE}
LEASE_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"session": _SESSION_FIELD, "force": {"type": "boolean"}},
}
EVENTS_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {**_PAGE, "kind": {"enum": list(EVENT_KINDS)}, "session": _SESSION_FIELD},
}
JOURNAL_ADD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "text"],
    "properties": {
        "kind": {"enum": list(JOURNAL_KINDS)},
        "text": {**_STR, "minLength": 1, "maxLength": 4000},
        "project": {**_STR, "minLength": 1, "maxLength": 1024},
        "status": {"enum": list(STATUSES)},
    },
}
JOURNAL_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_PAGE,
        "project": {**_STR, "minLength": 1, "maxLength": 1024},
        "kind": {"enum": list(JOURNAL_KINDS)},
        "status": {"enum": list(STATUSES)},
    },
}
JOURNAL_PATCH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status"],
    "properties": {"status": {"enum": list(STATUSES)}},
}
MESSAGE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["to", "text"],
    "properties": {
        "to": {**_STR, "pattern": "^([a-z2-7]{26}|owner)$", "maxLength": 26},
        "text": {**_STR, "minLength": 1, "maxLength": 2000},
    },
}


# -- helpers --------------------------------------------------------------------------------------
def _coordinator(request: web.Request) -> Coordinator:
    return request.app[SESSIONS_KEY]


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def _as_session(request: web.Request, wanted: str | None) -> str | None:
    """The session a request acts for: a session principal only ever for itself (object level);
    the local principal for the session it names (or none)."""
    principal = _principal(request)
    if principal.kind == "session":
        if wanted is not None and wanted != principal.id:
            raise _not_found("session")
        return principal.id
    return wanted


def _not_found(what: str) -> Problem:
    return Problem(404, f"No such {what}", f"no live {what} with that id is known here")


def _problem(exc: CoordinatorError, what: str) -> Problem:
    if isinstance(exc, NotFound):
        return _not_found(what)
    if isinstance(exc, Overloaded):
        return Problem(503, "Too many sessions", str(exc), type=TYPE_OVERLOADED,
                       headers={"Retry-After": "5"})
    if isinstance(exc, LeaseConflict):
        h = exc.holder
        return Problem(
            409, "Lease conflict",
            f"{h.pattern} is held ({h.mode}) by {h.agent or 'an agent'} on "
            f"{h.device_name or h.device} until {h.record()['expires_at']}",
            type=TYPE_LEASE_CONFLICT,
            holder={"lease": h.id, "pattern": h.pattern, "mode": h.mode, "session": h.session,
                    "agent": h.agent, "task": h.task, "device": h.device,
                    "device_name": h.device_name, "expires_at": h.record()["expires_at"]},
        )
    if isinstance(exc, Invalid):
        return Problem(400, "Invalid request", str(exc))
    if isinstance(exc, ClockSkew):  # SPEC-004 §9.5: this node's clock is the outlier
        return Problem(503, "This device's clock is off", str(exc), type=TYPE_CLOCK_SKEW,
                       headers={"Retry-After": "30"})
    return Problem(500, detail="internal error; see the node log")


# -- sessions -------------------------------------------------------------------------------------
@session_routes.post("/v1/sessions", body_schema=REGISTER_SCHEMA)
async def register_session(request: web.Request) -> web.Response:
    """Register an agent session; the answer carries its token, this once (SPEC-004 §2.2)."""
    try:
        answer = _coordinator(request).register(request[BODY_KEY])
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None
    return web.json_response(answer, status=201)


@session_routes.get("/v1/sessions", query_schema=PAGE_QUERY, principal_kinds=BOTH)
async def list_sessions(request: web.Request) -> web.Response:
    """Every live session of the mesh, with tags and overlaps (SPEC-004 §2.10); a session reads
    it too (MCP sessions_list): it is what the tiers already tell it, in full."""
    coordinator = _coordinator(request)
    items, cursor = _page(coordinator.sessions_view(overlaps=False), request[QUERY_KEY])
    for item in items:  # this page's overlaps only
        if item["id"] in coordinator.records:
            item["overlaps"] = coordinator.overlaps_of(item["id"])
    return web.json_response({"sessions": items, "cursor": cursor})


@session_routes.get(f"/v1/sessions/{SID}", principal_kinds=BOTH)
async def get_session(request: web.Request) -> web.Response:
    """One session and its overlaps."""
    sid = _as_session(request, request.match_info["id"])
    try:
        return web.json_response(_coordinator(request).session_view(sid))
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None


@session_routes.get(f"/v1/sessions/{SID}/overlaps", principal_kinds=BOTH)
async def get_overlaps(request: web.Request) -> web.Response:
    """The current tiers of a session against every other live session (nothing injected)."""
    sid = _as_session(request, request.match_info["id"])
    try:
        return web.json_response({"overlaps": _coordinator(request).overlaps_of(sid)})
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None


@session_routes.delete(f"/v1/sessions/{SID}", principal_kinds=BOTH)
async def end_session(request: web.Request) -> web.Response:
    """End a session: its token stops working and its leases are released (SPEC-004 §2.7)."""
    sid = _as_session(request, request.match_info["id"])
    coordinator = _coordinator(request)
    if sid not in coordinator.registry.sessions:
        raise _not_found("session")
    coordinator.end(sid, "ended", "ended by request")
    return web.json_response({"session_id": sid, "ended": True})


@session_routes.post(f"/v1/sessions/{SID}/heartbeat", principal_kinds=BOTH)
async def heartbeat(request: web.Request) -> web.Response:
    """Keep a session alive (SPEC-004 §2.5)."""
    sid = _as_session(request, request.match_info["id"])
    try:
        return web.json_response(_coordinator(request).heartbeat(sid))
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None


@session_routes.post(f"/v1/sessions/{SID}/hook", body_schema=EVENT_SCHEMA, principal_kinds=BOTH)
async def hook_event(request: web.Request) -> web.Response:
    """A normalised hook event; answers {decision, reason?, context?} (SPEC-004 §11.2)."""
    sid = _as_session(request, request.match_info["id"])
    try:
        return web.json_response(_coordinator(request).hook(sid, request[BODY_KEY]))
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None


# -- leases ---------------------------------------------------------------------------------------
@session_routes.get("/v1/leases", query_schema=PAGE_QUERY, principal_kinds=BOTH)
async def list_leases(request: web.Request) -> web.Response:
    """Leases in force across the mesh (a session sees only its own)."""
    coordinator = _coordinator(request)
    principal = _principal(request)
    now = mono_ns()
    held = [coordinator.lease_view(x, now) for x in coordinator.leases_in_force(now)
            if principal.kind == "local" or x.session == principal.id]
    held.sort(key=lambda x: x["granted_at"])
    items, cursor = _page(held, request[QUERY_KEY])
    return web.json_response({"leases": items, "cursor": cursor})


@session_routes.post("/v1/leases", body_schema=ACQUIRE_SCHEMA, principal_kinds=BOTH)
async def acquire_lease(request: web.Request) -> web.Response:
    """Take an advisory lease on a path or glob (SPEC-004 §8.2); 409 names the holder."""
    body = dict(request[BODY_KEY])
    if _principal(request).kind == "session" and "session" in body:
        raise Problem(400, "Invalid request", "a session token acquires for its own session; "
                      "'session' is set by the node")
    sid = _as_session(request, body.pop("session", None))
    if sid is None:
        raise Problem(400, "Invalid request", "name the session that holds the lease")
    coordinator = _coordinator(request)
    try:
        if _principal(request).kind == "session" and "repository" in body and (
                body["repository"] != coordinator.session(sid).repository):
            # SPEC-004 §8.2: a session token leases in its own repository only; naming
            # another let one agent lock every repository of the owner's other agents
            raise Problem(400, "Invalid request", "a session token leases files of its own "
                          "session's repository only; leave 'repository' out")
        lease = coordinator.acquire(sid, body)
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None
    answer = lease.record() | {"ttl_s": body.get("ttl_s", DEFAULT_TTL_S)}
    skew = coordinator.clock_skew()
    if skew:  # SPEC-004 §9.5: granted, but "first" is only fair when clocks agree
        answer["clock_skew"] = skew
    return web.json_response(answer, status=201)


@session_routes.post(f"/v1/leases/{LID}/renew", body_schema=RENEW_SCHEMA,
                     query_schema=LEASE_QUERY, principal_kinds=BOTH)
async def renew_lease(request: web.Request) -> web.Response:
    """Extend a lease its session holds: expires_at = now + ttl_s."""
    sid = _as_session(request, request[QUERY_KEY].get("session"))
    ttl = request[BODY_KEY].get("ttl_s", DEFAULT_TTL_S)
    try:
        lease = _coordinator(request).renew(request.match_info["id"], sid, ttl)
    except CoordinatorError as exc:
        raise _problem(exc, "lease") from None
    return web.json_response(lease.record())


@session_routes.delete(f"/v1/leases/{LID}", query_schema=LEASE_QUERY, principal_kinds=BOTH)
async def release_lease(request: web.Request) -> web.Response:
    """Release a lease its session holds; the local principal may force any lease (a remote
    one stops counting on this node only, SPEC-004 §8.2)."""
    query = request[QUERY_KEY]
    principal = _principal(request)
    if principal.kind == "session" and query.get("force"):
        raise Problem(403, detail="only the local principal may force a release")
    sid = _as_session(request, query.get("session"))
    try:
        lease = _coordinator(request).release(
            request.match_info["id"], sid, force=bool(query.get("force"))
        )
    except CoordinatorError as exc:
        raise _problem(exc, "lease") from None
    return web.json_response({"id": lease.id, "released": True})


# -- events ---------------------------------------------------------------------------------------
@session_routes.get("/v1/events", query_schema=EVENTS_QUERY, principal_kinds=BOTH)
async def list_events(request: web.Request) -> web.Response:
    """This node's session event log, oldest first (SPEC-004 §3.4)."""
    query = request[QUERY_KEY]
    session = _as_session(request, query.get("session"))
    after = None
    if query.get("cursor"):
        try:
            after = bytes.fromhex(query["cursor"])
        except ValueError:
            raise Problem(400, "Bad cursor", "the cursor is not one this node issued") from None
    records, nxt = _coordinator(request).events.read(
        after=after, limit=query.get("limit", 50), kind=query.get("kind"), session=session
    )
    return web.json_response({"events": records, "cursor": nxt.hex() if nxt else None})


# -- journal --------------------------------------------------------------------------------------
@session_routes.post("/v1/journal", body_schema=JOURNAL_ADD_SCHEMA, principal_kinds=BOTH)
async def add_journal_entry(request: web.Request) -> web.Response:
    """Append a journal entry (SPEC-004 §10.2): a session to its own project."""
    body = request[BODY_KEY]
    coordinator = _coordinator(request)
    principal = _principal(request)
    session = agent = None
    if principal.kind == "session":
        # signed, synced and shown to every later session of the project (SPEC-003 §6.7):
        # a session granted only reads must not plant instructions there
        require_scope(request, "memory:write")
        if "project" in body:
            raise Problem(400, "Invalid request",
                          "a session writes to its own project; 'project' is set by the node")
        s = coordinator.registry.get(principal.id)
        if s is None:
            raise _not_found("session")
        project, session, agent = s.repository or f"local:{s.cwd}", s.id, s.agent
    else:
        project = body.get("project")
        if not project:
            raise Problem(400, "Invalid request", "name the project (a repository id)")
    try:
        entry = coordinator.journal.add(body["kind"], body["text"], project, session=session,
                                        agent=agent, status=body.get("status"))
    except JournalError as exc:
        raise Problem(400, "Invalid request", str(exc)) from None
    return web.json_response(entry, status=201)


@session_routes.get("/v1/journal", query_schema=JOURNAL_QUERY, principal_kinds=BOTH)
async def list_journal(request: web.Request) -> web.Response:
    """Journal entries, newest first; a session reads only its own project."""
    query = request[QUERY_KEY]
    coordinator = _coordinator(request)
    project = query.get("project")
    principal = _principal(request)
    if principal.kind == "session":
        s = coordinator.registry.get(principal.id)
        if s is None:
            raise _not_found("session")
        own = s.repository or f"local:{s.cwd}"
        if project is not None and project != own:
            raise _not_found("project")
        project = own
    entries = coordinator.journal.list(project, journal_kind=query.get("kind"),
                                       status=query.get("status"), limit=100_000)
    items, cursor = _page(entries, query)
    return web.json_response({"entries": items, "cursor": cursor})


@session_routes.patch("/v1/journal/{entry_id:journal-[0-9]{6}-[A-Z2-7]{10}}",
                      body_schema=JOURNAL_PATCH_SCHEMA)
async def patch_journal_entry(request: web.Request) -> web.Response:
    """Mark a todo or blocker open or done (last writer wins)."""
    try:
        entry = _coordinator(request).journal.set_status(
            request.match_info["entry_id"], request[BODY_KEY]["status"]
        )
    except (EntryNotFound, KeyError):
        raise Problem(404, "No such journal entry") from None
    except JournalError as exc:
        raise Problem(400, "Invalid request", str(exc)) from None
    return web.json_response(entry)


# -- messages -------------------------------------------------------------------------------------
@session_routes.post("/v1/messages", body_schema=MESSAGE_SCHEMA, principal_kinds=BOTH)
async def send_message(request: web.Request) -> web.Response:
    """Send a message to a live session anywhere in the mesh, or to the owner (SPEC-004 §14)."""
    body = request[BODY_KEY]
    coordinator = _coordinator(request)
    principal = _principal(request)
    sender = coordinator.registry.get(principal.id) if principal.kind == "session" else None
    if principal.kind == "session" and sender is None:
        raise _not_found("session")
    try:
        sent = await coordinator.send_message(sender, body["to"], body["text"])
    except CoordinatorError as exc:
        raise _problem(exc, "session") from None
    return web.json_response(sent, status=202)


@session_routes.get("/v1/messages", query_schema=PAGE_QUERY, principal_kinds=BOTH)
async def inbox(request: web.Request) -> web.Response:
    """Messages to the owner (local principal) or still queued for this session."""
    coordinator = _coordinator(request)
    principal = _principal(request)
    if principal.kind == "session":
        s = coordinator.registry.get(principal.id)
        if s is None:
            raise _not_found("session")
        messages = list(reversed(s.inbox))
    else:
        messages = list(coordinator.owner_inbox)
    items, cursor = _page(messages, request[QUERY_KEY])
    return web.json_response({"messages": items, "cursor": cursor, "to": principal.id
                              if principal.kind == "session" else OWNER})
