"""Memory version routes: the deleted list, restore and undelete (SPEC-005 §10.9, §10.10).

History with values and ``GET /v1/memory/{id}?at=`` stay on the memory table's own routes;
this table is installed BEFORE it (``MemoryFeature.route_tables``) so ``/v1/memory/deleted``
is not taken for an entry id.
"""

from __future__ import annotations

from aiohttp import web

from ..api.middleware import BODY_KEY, QUERY_KEY
from ..api.routes import RouteTable
from .entries import EntryNotFound
from .routes import MEMORY_KEY, entry_problem
from .versions import UnknownVersion, versions_of

memory_version_routes = RouteTable("memory-versions")

VERSION = {"type": "string", "pattern": "^[0-9a-f]{8,64}$"}
RESTORE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version"],
    "properties": {"version": VERSION},
}
DELETED_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
}


@memory_version_routes.get("/v1/memory/deleted", query_schema=DELETED_QUERY)
async def deleted_entries(request: web.Request) -> web.Response:
    """Deleted entries that can be brought back (undelete or restore), newest first."""
    rows = versions_of(request.app[MEMORY_KEY]).deleted(request[QUERY_KEY].get("limit", 50))
    return web.json_response({"entries": rows, "count": len(rows)})


@memory_version_routes.post("/v1/memory/{entry_id}/restore", body_schema=RESTORE_SCHEMA)
async def restore_entry(request: web.Request) -> web.Response:
    """Write one of the entry's versions again as a new signed change (undeleting it)."""
    entry_id = request.match_info["entry_id"]
    try:
        entry = versions_of(request.app[MEMORY_KEY]).restore(
            entry_id, request[BODY_KEY]["version"])
    except (EntryNotFound, UnknownVersion, ValueError) as exc:
        raise entry_problem(entry_id, exc) from None
    return web.json_response(entry)


@memory_version_routes.post("/v1/memory/{entry_id}/undelete")
async def undelete_entry(request: web.Request) -> web.Response:
    """Bring a deleted entry back (a new signed change; its history is whole)."""
    entry_id = request.match_info["entry_id"]
    try:
        entry = versions_of(request.app[MEMORY_KEY]).undelete(entry_id)
    except (EntryNotFound, ValueError) as exc:
        raise entry_problem(entry_id, exc) from None
    return web.json_response(entry)
