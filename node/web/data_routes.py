"""Data routes the web page needs beyond the rest of the API: documents and live events.

Both are ordinary private ``/v1`` routes (a CLI or script with the bearer token may use them
too): ``GET /v1/documents`` (SPEC-003 §11.8) and the ``GET /v1/live`` event stream (§11.7).
"""

from __future__ import annotations

from aiohttp import web

from ..api.middleware import PRINCIPAL_KEY, QUERY_KEY
from ..api.pagination import page as _page
from ..api.routes import RouteTable
from ..devices.routes import REPO_KEY
from ..mesh.routes import PEERS_KEY
from .documents import describe, document_ids
from .routes import WEB_KEY

ui_data_routes = RouteTable("ui-data", requires=[REPO_KEY, WEB_KEY])

PAGE_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
        "cursor": {"type": "string", "maxLength": 40},
    },
}


@ui_data_routes.get("/v1/documents", query_schema=PAGE_QUERY)
async def documents(request: web.Request) -> web.Response:
    """Documents with their heads, change count, stored size and sync state per peer."""
    repo = request.app[REPO_KEY]
    ids, cursor = _page(document_ids(repo), request[QUERY_KEY])
    peers = request.app.get(PEERS_KEY)
    return web.json_response({
        "documents": [describe(repo, peers, doc_id) for doc_id in ids],
        "cursor": cursor,
    })


@ui_data_routes.get("/v1/live", streaming=True)
async def live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a document changed, a peer connected or left (ids only)."""
    page = request.app[WEB_KEY]
    principal = request[PRINCIPAL_KEY]
    owner = principal.id.removeprefix("browser:") if principal.id.startswith("browser:") else None
    if owner is None:
        return await page.hub.serve(request, None, lambda: True)
    return await page.hub.serve(
        request, owner, lambda: page.logins.by_label(owner) is not None
    )
