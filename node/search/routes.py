"""``GET /v1/memory/search``: ranked text, semantic or hybrid search (SPEC-003 §12)."""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from ..api.middleware import QUERY_KEY
from ..api.problem import TYPE_VALIDATION, Problem
from ..api.routes import RouteTable
from ..api.scopes import MEMORY_READ, require_scope
from ..memory import KINDS
from .index import MODES, SearchError, SearchIndex, SemanticUnavailable

search_routes = RouteTable("search")
SEARCH_KEY: web.AppKey[SearchIndex] = web.AppKey("maia_search", SearchIndex)
TYPE_SEMANTIC_UNAVAILABLE = "urn:maia-node:problem:semantic-unavailable"

_STAMP = {"type": "string", "minLength": 4, "maxLength": 40, "pattern": r"^[0-9][0-9T:.+\-Z]*$"}
SEARCH_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["q"],
    "properties": {
        "q": {"type": "string", "minLength": 1, "maxLength": 500},
        "mode": {"enum": list(MODES)},
        "kind": {"enum": list(KINDS)},
        "tag": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^\s]+$"},
        "device": {"type": "string", "minLength": 1, "maxLength": 80},
        "since": _STAMP,
        "until": _STAMP,
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
    },
}


@search_routes.get("/v1/memory/search", query_schema=SEARCH_QUERY,
                   principal_kinds=("local", "session"))
async def search_entries(request: web.Request) -> web.Response:
    """Memory entries ranked for ``q``: BM25 text, semantic (vectors) or both fused (hybrid).
    Agent sessions need the ``memory:read`` scope (SPEC-003 §6.7)."""
    require_scope(request, MEMORY_READ)
    query = dict(request[QUERY_KEY])
    q = query.pop("q")
    index = request.app[SEARCH_KEY]
    index.flush()  # on the loop: it reads the documents the loop owns
    try:
        # The ranking itself runs off the loop, so a search never stalls sync or other calls.
        result = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            index.search, q, mode=query.pop("mode", "hybrid"), limit=query.pop("limit", 20),
            refresh=False, **query))
    except SearchError as exc:
        raise Problem(400, "Invalid search", str(exc), type=TYPE_VALIDATION,
                      errors=[{"path": "/q", "message": str(exc)}]) from None
    except SemanticUnavailable as exc:
        raise Problem(503, "Semantic search unavailable", str(exc),
                      type=TYPE_SEMANTIC_UNAVAILABLE) from None
    return web.json_response(result)
