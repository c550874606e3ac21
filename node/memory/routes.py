"""Memory routes: add, list, show, edit, supersede and the signed history of entries.

Function level: every route but bulk import admits session tokens too, by scope (SPEC-003
§6.3a, §6.7): reads need ``memory:read``; add and supersede need ``memory:write``; edit and delete
need ``memory:write`` and an entry this session created, or ``memory:admin``. A session's writes
carry its id and agent into the signed entry (SPEC-004 §2.11).

Ranked search (`GET /v1/memory/search`) is node/search/routes.py.
"""

from __future__ import annotations

from aiohttp import web

from ..api.middleware import BODY_KEY, PRINCIPAL_KEY, QUERY_KEY
from ..api.problem import Problem
from ..api.routes import RouteTable
from ..api.scopes import MEMORY_ADMIN, MEMORY_READ, MEMORY_WRITE, has_scope, require_scope
from ..sessions.routes import SESSIONS_KEY
from .entries import KINDS, EntryNotFound, EntrySuperseded, InvalidEntry, Memory, WriteBy
from .versions import AmbiguousVersion, NotDeleted, UnknownVersion, versions_of

memory_routes = RouteTable("memory", errors={
    EntryNotFound: (404, "No such memory entry"),
    InvalidEntry: (400, "Invalid memory entry"),
})
MEMORY_KEY: web.AppKey[Memory] = web.AppKey("maia_memory", Memory)

# Shapes only: what a valid text or tag is, Memory decides (one rule for the API and the CLI).
_TAG = {"type": "string"}
_TEXT = {"type": "string"}
ADD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["text"],
    "properties": {
        "text": _TEXT,
        "kind": {"enum": list(KINDS)},
        "tags": {"type": "array", "items": _TAG},
    },
}
EDIT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "text": _TEXT,
        "add_tags": {"type": "array", "items": _TAG},
        "remove_tags": {"type": "array", "items": _TAG},
    },
}
IMPORT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entries"],
    "properties": {"entries": {"type": "array", "minItems": 1, "maxItems": 2000,
                               "items": ADD_SCHEMA}},
}
SUPERSEDE_SCHEMA = ADD_SCHEMA  # a correction carries what a new entry does
BOTH = ("local", "session")
_FILTERS = {
    "kind": {"enum": list(KINDS)},
    "tag": {"type": "string", "maxLength": 64},
    "author": {"type": "string", "maxLength": 80},
    "since": {"type": "string", "maxLength": 40},
    "until": {"type": "string", "maxLength": 40},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "include_superseded": {"type": "boolean"},
}
LIST_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {**_FILTERS, "q": {"type": "string", "maxLength": 500}},
}


def _memory(request: web.Request) -> Memory:
    return request.app[MEMORY_KEY]


def _not_found(entry_id: str) -> Problem:
    return Problem(404, "No such memory entry", f"no memory entry has the id {entry_id!r}")


def entry_problem(entry_id: str, exc: Exception) -> Problem:
    """The problem for a failed version operation on ``entry_id`` (the show route and the
    memory-versions table in versions_routes.py)."""
    if isinstance(exc, EntryNotFound):
        return _not_found(entry_id)
    if isinstance(exc, UnknownVersion):
        return Problem(404, "No such version", str(exc))
    if isinstance(exc, NotDeleted):
        return Problem(409, "Not deleted", str(exc))
    if isinstance(exc, AmbiguousVersion | ValueError):
        return Problem(400, "Bad version", str(exc))
    raise exc


def _writer(request: web.Request, scope: str = MEMORY_WRITE) -> WriteBy | None:
    """Who writes: None for the owner; for a session its id and agent, recorded in the signed
    entry (SPEC-004 §2.11). Refuses a session without ``scope``."""
    principal = require_scope(request, scope)
    if principal.kind != "session":
        return None
    session = request.app[SESSIONS_KEY].registry.get(principal.id)
    if session is None:  # ended between authentication and here
        raise Problem(401, "Session ended", "this session ended; register a new one")
    return {"session": session.id, "agent": session.agent}


def _may_change(request: web.Request, entry_id: str) -> WriteBy | None:
    """SPEC-003 §6.3a: a session edits or deletes only entries it created, unless granted
    memory:admin. Ownership comes from the signed entry, never from the request."""
    by = _writer(request)
    principal = request[PRINCIPAL_KEY]
    if by is None or has_scope(principal, MEMORY_ADMIN):
        return by
    try:
        entry = _memory(request).get(entry_id)
    except EntryNotFound:
        raise _not_found(entry_id) from None
    if entry.get("session") != principal.id:
        raise Problem(
            403, "Not this session's entry",
            "a session may edit or delete only the entries it created; correct another "
            "entry with supersede (POST /v1/memory/{id}/supersede), which keeps the old one",
        )
    return by


def _not_the_journal(request: web.Request, kind: str | None = None, *,
                     entry_id: str | None = None) -> None:
    """SPEC-004 004.10.2: a session appends to the journal only through ``POST /v1/journal``,
    where the node sets the entry's project and session; journal edits are the owner's. A
    session writing kind ``journal`` here chose its own ``project:``, ``session:`` and
    ``agent:`` tags: a "blocker" with a command to run, in another project's digest, under
    another session's name (found by an attacker's read). ``entry_id``: judge by that
    existing entry's kind, read only for a session (a missing one: the route answers 404)."""
    if request[PRINCIPAL_KEY].kind != "session":
        return
    if entry_id is not None:
        try:
            kind = _memory(request).get(entry_id).get("kind")
        except EntryNotFound:
            return
    if kind == "journal":
        raise Problem(403, "Journal entries come through the journal",
                      "a session adds to its project's journal with POST /v1/journal; "
                      "journal entries are edited by the owner (maia journal)")


@memory_routes.post("/v1/memory", body_schema=ADD_SCHEMA, principal_kinds=BOTH)
async def add_entry(request: web.Request) -> web.Response:
    """Add a memory entry (signed by this device, pushed to connected peers at once)."""
    body = request[BODY_KEY]
    _not_the_journal(request, body.get("kind", "note"))
    entry = _memory(request).add(body["text"], body.get("kind", "note"), body.get("tags", []),
                                 by=_writer(request))
    return web.json_response(entry, status=201)


@memory_routes.post("/v1/memory/import", body_schema=IMPORT_SCHEMA)
async def import_entries(request: web.Request) -> web.Response:
    """Add many entries at once (one signed batch per shard): bulk import."""
    entries = _memory(request).add_many(request[BODY_KEY]["entries"])
    return web.json_response({"added": len(entries), "ids": [e["id"] for e in entries]},
                             status=201)


def _filters(query: dict) -> dict:
    out = {k: query[k] for k in ("kind", "tag", "author", "since", "until", "limit",
                                 "include_superseded") if k in query}
    if "q" in query:
        out["query"] = query["q"]
    return out


@memory_routes.get("/v1/memory", query_schema=LIST_QUERY, principal_kinds=BOTH)
async def list_entries(request: web.Request) -> web.Response:
    """List entries, newest first, with optional filters."""
    require_scope(request, MEMORY_READ)
    entries = _memory(request).list(**_filters(request[QUERY_KEY]))
    if "q" in request[QUERY_KEY]:
        _recalled(request, entries)
    return web.json_response({"entries": entries, "count": len(entries)})


def _recalled(request: web.Request, entries: list[dict]) -> None:
    """Count a recall of each entry returned (salience, SPEC-006 §12.5.1), if wired."""
    salience = getattr(_memory(request), "salience", None)
    if salience is not None:
        salience.recalled(e["id"] for e in entries)


SHOW_QUERY = {"type": "object", "additionalProperties": False,
              "properties": {"at": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"}}}


@memory_routes.get("/v1/memory/{entry_id}", query_schema=SHOW_QUERY, principal_kinds=BOTH)
async def show_entry(request: web.Request) -> web.Response:
    """One entry (with ``concurrent`` texts if edited on two devices at once), or ``at`` a
    version of its history (SPEC-005 §10.7, §10.8)."""
    require_scope(request, MEMORY_READ)
    entry_id, at = request.match_info["entry_id"], request[QUERY_KEY].get("at")
    versions = versions_of(_memory(request))
    try:
        entry = versions.show_at(entry_id, at) if at else versions.get(entry_id)
    except (EntryNotFound, LookupError, ValueError) as exc:
        raise entry_problem(entry_id, exc) from None
    if not at:
        _recalled(request, [entry])
    return web.json_response(entry)


@memory_routes.patch("/v1/memory/{entry_id}", body_schema=EDIT_SCHEMA, principal_kinds=BOTH)
async def edit_entry(request: web.Request) -> web.Response:
    """Change an entry's text or tags; concurrent edits on other devices merge."""
    entry_id, body = request.match_info["entry_id"], request[BODY_KEY]
    by = _may_change(request, entry_id)
    _not_the_journal(request, entry_id=entry_id)
    try:
        entry = _memory(request).update(
            entry_id,
            text=body.get("text"),
            add_tags=body.get("add_tags", []),
            remove_tags=body.get("remove_tags", []),
            by=by,
        )
    except EntryNotFound:
        raise _not_found(entry_id) from None
    return web.json_response(entry)


@memory_routes.post("/v1/memory/{entry_id}/supersede", body_schema=SUPERSEDE_SCHEMA,
                     principal_kinds=BOTH)
async def supersede_entry(request: web.Request) -> web.Response:
    """Correct an entry: a new entry that links the old one, which stops surfacing
    (SPEC-004 §2.12); the old text stays readable by id."""
    entry_id, body = request.match_info["entry_id"], request[BODY_KEY]
    by = _writer(request)
    _not_the_journal(request, body.get("kind"))
    _not_the_journal(request, entry_id=entry_id)
    try:
        entry = _memory(request).supersede(entry_id, body["text"], body.get("kind"),
                                           body.get("tags"), by=by)
    except EntryNotFound:
        raise _not_found(entry_id) from None
    except EntrySuperseded as exc:
        raise Problem(409, "Already superseded", str(exc)) from None
    return web.json_response(entry, status=201)


@memory_routes.post("/v1/memory/{entry_id}/unsupersede")
async def unsupersede_entry(request: web.Request) -> web.Response:
    """Undo a supersede: the entry surfaces again (the owner's remedy; local principal only)."""
    entry_id = request.match_info["entry_id"]
    try:
        return web.json_response(_memory(request).unsupersede(entry_id))
    except EntryNotFound:
        raise _not_found(entry_id) from None
    except ValueError as exc:
        raise Problem(409, "Not superseded", str(exc)) from None


@memory_routes.get("/v1/memory/{entry_id}/history", principal_kinds=BOTH)
async def entry_history(request: web.Request) -> web.Response:
    """Every version with its values; each device taken from its signed change (also for a
    deleted entry)."""
    require_scope(request, MEMORY_READ)
    entry_id = request.match_info["entry_id"]
    try:
        history = versions_of(_memory(request)).history(entry_id)
        return web.json_response({"id": entry_id, "history": history})
    except EntryNotFound:
        raise _not_found(entry_id) from None


@memory_routes.delete("/v1/memory/{entry_id}", principal_kinds=BOTH)
async def delete_entry(request: web.Request) -> web.Response:
    """Forget an entry (hidden everywhere; the signed history records who and when)."""
    entry_id = request.match_info["entry_id"]
    by = _may_change(request, entry_id)
    try:
        return web.json_response(_memory(request).delete(entry_id, by=by))
    except EntryNotFound:
        raise _not_found(entry_id) from None
