"""The peer mesh as a node feature: the peer socket on both listeners, the peer list routes,
static peers dialled at start, and the ``maia peer``, ``maia peers`` and ``maia sync`` commands.

The connection manager itself (``node.peers``) belongs to the node: sync, routing, sessions and
the web page all use it, so it exists before any feature is set up.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase
from .reach import Reach
from .routes import CONFIG_PATH_KEY, PEERS_KEY, REACH_KEY, peer_listener_routes, peer_routes


class MeshFeature(FeatureBase):
    name = "mesh"
    reach: Reach | None = None

    def route_tables(self) -> Sequence[RouteTable]:
        return [peer_routes]

    def peer_listener_tables(self) -> Sequence[RouteTable]:
        return [peer_listener_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.node is not None
        app[PEERS_KEY] = self.node.peers
        app[CONFIG_PATH_KEY] = self.node.paths.config
        if self.reach is None:  # one for the node, whichever app is configured first
            self.reach = Reach(self.node)
        app[REACH_KEY] = self.reach

    async def start(self) -> None:
        assert self.node is not None
        for address in self.node.config.static_peers:
            self.node.peers.add_static(address)
        assert self.reach is not None
        await self.reach.start()

    async def stop(self) -> None:
        if self.reach is not None and self.reach.started:
            await self.reach.stop()


def create() -> MeshFeature:
    return MeshFeature()

