"""``/v1/mcp``: the MCP streamable HTTP transport on the local API (SPEC-003 §6.8).

The route sits in a route table like every other, so the whole SPEC-003 chain applies before
MCP sees a byte: Host and Origin checks, bearer authentication (local or session), rate limit,
body limit and JSON bounds. The SDK's session manager runs stateless with JSON answers: one POST,
one JSON-RPC answer, no server-held MCP session to leak or exhaust. Each request's tools act with
that request's own bearer token against this same listener, so an MCP call reaches exactly what
the caller's routes allow (a session token's scopes, SPEC-003 §6.7), never more.

aiohttp is not ASGI; :func:`asgi_exchange` is the small bridge: the validated body in, the
buffered answer out, and an error answer turned into a problem (SPEC-003 §9.1).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.auth import bearer_token
from ..api.middleware import BODY_KEY, PRINCIPAL_KEY
from ..api.problem import Problem
from ..api.routes import RouteTable
from .client import CURRENT_API, NodeAPI

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from .feature import LazyManager

log = logging.getLogger(__name__)

mcp_routes = RouteTable("mcp")
# The SDK's session manager, started by the first request (node/mcp/feature.py: LazyManager).
MANAGER_KEY: web.AppKey[LazyManager] = web.AppKey("maia_mcp_manager")
# A JSON-RPC message or batch; the SDK validates the rest and answers JSON-RPC errors.
MESSAGE_SCHEMA: dict[str, Any] = {"type": ["object", "array"]}


def self_url(request: web.Request) -> str:
    """The listener this request came in on: the tools call it back with the same token."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        raise Problem(503, detail="the listener's address is unknown")
    host, port = sock[0], sock[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def asgi_exchange(manager: StreamableHTTPSessionManager, request: web.Request,
                        body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run one request through the SDK's ASGI handler; (status, headers, body)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": request.method, "scheme": "http", "path": "/v1/mcp", "raw_path": b"/v1/mcp",
        "query_string": request.query_string.encode("latin-1"), "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in request.headers.items()
                    if k.lower() not in ("content-length", "cookie")]
        + [(b"content-length", str(len(body)).encode())],
        "client": (request.remote or "", 0), "server": ("127.0.0.1", 0),
    }
    delivered = False
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers.extend((k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await manager.handle_request(scope, receive, send)
    return status, headers, b"".join(chunks)


@mcp_routes.post("/v1/mcp", body_schema=MESSAGE_SCHEMA, principal_kinds=("local", "session"))
async def mcp_endpoint(request: web.Request) -> web.Response:
    """The Model Context Protocol over streamable HTTP (stateless, JSON answers)."""
    token = bearer_token(request)
    if token is None:  # a browser login: MCP clients send a bearer token
        raise Problem(403, "Bearer token needed",
                      "MCP over HTTP acts with the caller's bearer token (a session token)")
    principal = request[PRINCIPAL_KEY]
    api = NodeAPI(self_url(request), token)
    reset = CURRENT_API.set(api)
    try:
        body = json.dumps(request[BODY_KEY]).encode()
        manager = await request.app[MANAGER_KEY].get()
        status, headers, raw = await asgi_exchange(manager, request, body)
    finally:
        CURRENT_API.reset(reset)
        await api.close()
    if status >= 400:
        detail = "the MCP request was refused"
        try:
            err = json.loads(raw).get("error", {})
            detail = str(err.get("message") or detail)[:500]
        except (ValueError, AttributeError):
            pass
        log.info("MCP request from %s:%s refused: %s", principal.kind, principal.id, status)
        raise Problem(status, detail=detail)
    keep = {"content-type", "mcp-session-id", "mcp-protocol-version"}
    return web.Response(status=status, body=raw,
                        headers={k: v for k, v in headers if k.lower() in keep})
