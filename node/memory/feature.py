"""Memory as a node feature: its routes (entries and their versions) and its ``maia memory``
commands.

The :class:`~node.memory.entries.Memory` object belongs to the node (sessions keep their
journal in it, upkeep indexes it), so the feature only hands it to the routes.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase
from .routes import MEMORY_KEY, memory_routes
from .versions_routes import memory_version_routes


class MemoryFeature(FeatureBase):
    name = "memory"

    def route_tables(self) -> Sequence[RouteTable]:
        # versions first: /v1/memory/deleted before /v1/memory/{entry_id}
        return [memory_version_routes, memory_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.node is not None
        app[MEMORY_KEY] = self.node.memory


def create() -> MemoryFeature:
    return MemoryFeature()
