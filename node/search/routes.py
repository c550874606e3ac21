"""``GET /v1/memory/search``: ranked text, semantic or hybrid search (SPEC-003 §12)."""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from ..api.middleware import QUERY_KEY
from ..api.problem import TYPE_OVERLOADED, TYPE_TIMEOUT, TYPE_VALIDATION, Problem
from ..api.routes import RouteTable
from ..api.scopes import MEMORY_READ, require_scope
from ..memory import KINDS
from .index import MODES, QueryTimeout, SearchError, SearchIndex, SemanticUnavailable

search_routes = RouteTable("search")
SEARCH_KEY: web.AppKey[SearchIndex] = web.AppKey("maia_search", SearchIndex)
TYPE_SEMANTIC_UNAVAILABLE = "urn:maia-node:problem:semantic-unavailable"
# Searches queued or running at once (SPEC-003 §12.4); more get a 503 at once rather than a
# place in a queue they would wait in until the handler's time limit.
MAX_SEARCHES = 16

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
    if index.requests_in_flight >= MAX_SEARCHES:
        raise Problem(503, "Too many searches", f"{MAX_SEARCHES} searches are already "
                      "running or waiting; try again", type=TYPE_OVERLOADED,
                      headers={"Retry-After": "1"})
    index.flush()  # on the loop: it reads the documents the loop owns
    index.requests_in_flight += 1
    try:
        # The ranking runs off the loop, so a search never stalls sync or other calls, and on
        # the index's own threads, so searches never take the default pool's.
        result = await asyncio.get_running_loop().run_in_executor(
            index.request_pool(), functools.partial(
                index.search, q, mode=query.pop("mode", "hybrid"),
                limit=query.pop("limit", 20), refresh=False, **query))
    except QueryTimeout as exc:
        raise Problem(503, "Search took too long", str(exc), type=TYPE_TIMEOUT,
                      headers={"Retry-After": "1"}) from None
    except SearchError as exc:
        raise Problem(400, "Invalid search", str(exc), type=TYPE_VALIDATION,
                      errors=[{"path": "/q", "message": str(exc)}]) from None
    except SemanticUnavailable as exc:
        raise Problem(503, "Semantic search unavailable", str(exc),
                      type=TYPE_SEMANTIC_UNAVAILABLE) from None
    finally:
        index.requests_in_flight -= 1
    return web.json_response(result)
