"""Peer routes: the node-to-node WebSocket entry, and the peer list for the local owner."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..api.middleware import BODY_KEY
from ..api.routes import RouteTable
from .peerlist import BadPeerAddress, NotAStaticPeer, add_static_peer, remove_static_peer
from .peers import PeerManager
from .reach import Reach

peer_routes = RouteTable("peers", errors={
    BadPeerAddress: (400, "Bad peer address"),
    NotAStaticPeer: (404, "No such static peer"),
})
# The peer listener's table (SPEC-003 §2.1): the same socket, alone with pairing and liveness.
peer_listener_routes = RouteTable("peer-listener")

PEERS_KEY: web.AppKey[PeerManager] = web.AppKey("maia_peers", PeerManager)
REACH_KEY: web.AppKey[Reach] = web.AppKey("maia_reach", Reach)
CONFIG_PATH_KEY: web.AppKey[Path] = web.AppKey("maia_config_path", Path)

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
@peer_listener_routes.get("/v1/peer", public=PEER_REASON, streaming=True)
async def peer_socket(request: web.Request) -> web.StreamResponse:
    """WebSocket entry for peer nodes."""
    return await request.app[PEERS_KEY].handle_incoming(request)


@peer_routes.get("/v1/peers")
async def list_peers(request: web.Request) -> web.Response:
    """Known peers (state, path, last traffic, next retry) and the address records held.

    The records are this node's own and each member's newest (SPEC-005 §12.9)."""
    reach = request.app.get(REACH_KEY)
    return web.json_response({"peers": request.app[PEERS_KEY].status(),
                              "addresses": reach.status() if reach is not None else None})


@peer_routes.post("/v1/peers", body_schema=ADD_PEER_SCHEMA)
async def add_peer(request: web.Request) -> web.Response:
    """Add a static peer (HOST:PORT) and start dialling it."""
    address = request[BODY_KEY]["address"]
    add_static_peer(request.app[CONFIG_PATH_KEY], address)
    request.app[PEERS_KEY].add_static(address)
    return web.json_response({"address": address, "added": True}, status=201)


@peer_routes.delete("/v1/peers/{address}")
async def remove_peer(request: web.Request) -> web.Response:
    """Forget a static peer."""
    address = request.match_info["address"]
    remove_static_peer(request.app[CONFIG_PATH_KEY], address)
    request.app[PEERS_KEY].remove_static(address)
    return web.json_response({"address": address, "removed": True})
