"""Memory as a node feature: its routes and its ``maia memory`` commands.

The :class:`~node.memory.entries.Memory` object belongs to the node (sessions keep their
journal in it, upkeep indexes it), so the feature only hands it to the routes.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase
from .routes import MEMORY_KEY, memory_routes


class MemoryFeature(FeatureBase):
    name = "memory"

    def route_tables(self) -> Sequence[RouteTable]:
        return [memory_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.node is not None
        app[MEMORY_KEY] = self.node.memory



def create() -> MemoryFeature:
    return MemoryFeature()
