"""Memory routes: add, list, show, edit and the signed history of memory entries.

Ranked search (`GET /v1/memory/search`) is node/search/routes.py.
"""

from __future__ import annotations

from aiohttp import web

from ..memory import KINDS, EntryNotFound, Memory
from .middleware import BODY_KEY, QUERY_KEY
from .problem import Problem
from .routes import RouteTable

memory_routes = RouteTable("memory")
MEMORY_KEY: web.AppKey[Memory] = web.AppKey("maia_memory", Memory)

_TAG = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^\s]+$"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 262144}
ADD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["text"],
    "properties": {
        "text": _TEXT,
        "kind": {"enum": list(KINDS)},
        "tags": {"type": "array", "items": _TAG, "maxItems": 64, "uniqueItems": True},
    },
}
EDIT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "text": _TEXT,
        "add_tags": {"type": "array", "items": _TAG, "maxItems": 64},
        "remove_tags": {"type": "array", "items": _TAG, "maxItems": 64},
    },
}
IMPORT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entries"],
    "properties": {"entries": {"type": "array", "minItems": 1, "maxItems": 2000,
                               "items": ADD_SCHEMA}},
}
_FILTERS = {
    "kind": {"enum": list(KINDS)},
    "tag": _TAG,
    "author": {"type": "string", "maxLength": 80},
    "since": {"type": "string", "maxLength": 40},
    "until": {"type": "string", "maxLength": 40},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
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


@memory_routes.post("/v1/memory", body_schema=ADD_SCHEMA)
async def add_entry(request: web.Request) -> web.Response:
    """Add a memory entry (signed by this device, pushed to connected peers at once)."""
    body = request[BODY_KEY]
    entry = _memory(request).add(body["text"], body.get("kind", "note"), body.get("tags", []))
    return web.json_response(entry, status=201)


@memory_routes.post("/v1/memory/import", body_schema=IMPORT_SCHEMA)
async def import_entries(request: web.Request) -> web.Response:
    """Add many entries at once (one signed batch per shard): bulk import."""
    entries = _memory(request).add_many(request[BODY_KEY]["entries"])
    return web.json_response({"added": len(entries), "ids": [e["id"] for e in entries]},
                             status=201)


def _filters(query: dict) -> dict:
    out = {k: query[k] for k in ("kind", "tag", "author", "since", "until", "limit") if k in query}
    if "q" in query:
        out["query"] = query["q"]
    return out


@memory_routes.get("/v1/memory", query_schema=LIST_QUERY)
async def list_entries(request: web.Request) -> web.Response:
    """List entries, newest first, with optional filters."""
    entries = _memory(request).list(**_filters(request[QUERY_KEY]))
    return web.json_response({"entries": entries, "count": len(entries)})


@memory_routes.get("/v1/memory/{entry_id}")
async def show_entry(request: web.Request) -> web.Response:
    """One entry."""
    entry_id = request.match_info["entry_id"]
    try:
        return web.json_response(_memory(request).get(entry_id))
    except EntryNotFound:
        raise _not_found(entry_id) from None


@memory_routes.patch("/v1/memory/{entry_id}", body_schema=EDIT_SCHEMA)
async def edit_entry(request: web.Request) -> web.Response:
    """Change an entry's text or tags; concurrent edits on other devices merge."""
    entry_id, body = request.match_info["entry_id"], request[BODY_KEY]
    try:
        entry = _memory(request).update(
            entry_id,
            text=body.get("text"),
            add_tags=body.get("add_tags", []),
            remove_tags=body.get("remove_tags", []),
        )
    except EntryNotFound:
        raise _not_found(entry_id) from None
    return web.json_response(entry)


@memory_routes.get("/v1/memory/{entry_id}/history")
async def entry_history(request: web.Request) -> web.Response:
    """Who changed the entry and when, each edit's author taken from its signed operation."""
    entry_id = request.match_info["entry_id"]
    try:
        return web.json_response({"id": entry_id, "history": _memory(request).history(entry_id)})
    except EntryNotFound:
        raise _not_found(entry_id) from None


@memory_routes.delete("/v1/memory/{entry_id}")
async def delete_entry(request: web.Request) -> web.Response:
    """Forget an entry (hidden everywhere; the signed history records who and when)."""
    entry_id = request.match_info["entry_id"]
    try:
        return web.json_response(_memory(request).delete(entry_id))
    except EntryNotFound:
        raise _not_found(entry_id) from None
