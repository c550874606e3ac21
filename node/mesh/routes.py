"""Peer routes: the node-to-node WebSocket entry, and the peer list for the local owner."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..api.middleware import BODY_KEY
from ..api.problem import Problem
from ..api.routes import RouteTable
from ..config import ConfigError, parse_host_port
from .peers import PeerManager

peer_routes = RouteTable("peers")

PEERS_KEY: web.AppKey[PeerManager] = web.AppKey("maia_peers", PeerManager)
PEER_CONFIG_KEY: web.AppKey[Callable[[str, bool], None]] = web.AppKey(
    "maia_peer_config", object
)

ADD_PEER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["address"],
    "properties": {"address": {"type": "string", "minLength": 3, "maxLength": 300}},
}


PEER_REASON = (
    "node-to-node channel: authenticates itself by the device-key handshake and the roster "
    "(SPEC-005); the local API token is never given to peers"
)


@peer_routes.get("/v1/peer", public=PEER_REASON, streaming=True)
async def peer_socket(request: web.Request) -> web.StreamResponse:
    """WebSocket entry for peer nodes."""
    return await request.app[PEERS_KEY].handle_incoming(request)


@peer_routes.get("/v1/peers")
async def list_peers(request: web.Request) -> web.Response:
    """Known peers: connection state, last seen, accepted and rejected traffic."""
    return web.json_response({"peers": request.app[PEERS_KEY].status()})


@peer_routes.post("/v1/peers", body_schema=ADD_PEER_SCHEMA)
async def add_peer(request: web.Request) -> web.Response:
    """Add a static peer (HOST:PORT) and start dialling it."""
    address = request[BODY_KEY]["address"]
    try:
        parse_host_port(address)
    except ConfigError as exc:
        raise Problem(400, "Bad peer address", str(exc)) from None
    request.app[PEER_CONFIG_KEY](address, True)
    request.app[PEERS_KEY].add_static(address)
    return web.json_response({"address": address, "added": True}, status=201)


@peer_routes.delete("/v1/peers/{address}")
async def remove_peer(request: web.Request) -> web.Response:
    """Forget a static peer."""
    address = request.match_info["address"]
    if address not in request.app[PEERS_KEY].static:
        raise Problem(404, "No such static peer", f"{address!r} is not a static peer")
    request.app[PEER_CONFIG_KEY](address, False)
    request.app[PEERS_KEY].remove_static(address)
    return web.json_response({"address": address, "removed": True})
