"""The peer listener's route table (SPEC-003 §2.1): only the peer channel, pairing and liveness.

It lives outside the ``routes_*`` modules on purpose: those form the local API, while this
table is mounted alone on the LAN-facing listener, so nothing else is reachable there.
"""

from __future__ import annotations

from ..mesh.pairing.routes import PAIR_REASON, pair_socket
from ..mesh.routes import PEER_REASON, peer_socket
from .core import health
from .routes import RouteTable

peer_listener_routes = RouteTable("peer-listener")
peer_listener_routes.get("/v1/peer", public=PEER_REASON, streaming=True)(peer_socket)
peer_listener_routes.get("/v1/pair", public=PAIR_REASON, streaming=True)(pair_socket)
peer_listener_routes.get("/health", public="liveness probe; answers a constant")(health)
