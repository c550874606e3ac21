"""Features plug into the node through one small interface, so each concern stays in its module.

A feature (cortex routing, agent sessions, backups, discovery, ...) gets the node after its
store, documents and peer manager exist; it may add route tables, register peer frame kinds,
run background tasks, and add a section to the status. ``FEATURES`` lists what a node runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from .api.routes import RouteTable
    from .node import Node


class Feature(Protocol):
    name: str

    def setup(self, node: Node) -> None:
        """Wire into the node (peer frame handlers, document listeners); no I/O yet."""

    def route_tables(self) -> Sequence[RouteTable]:
        """HTTP routes this feature serves (SPEC-003 applies to them like to every route)."""

    def configure_app(self, app: web.Application) -> None:
        """Put what the routes need into the app (AppKeys)."""

    async def start(self) -> None:
        """Start background work; the HTTP server is already listening."""

    async def stop(self) -> None:
        """Stop background work; called before the store closes, also after a failed start."""

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable section for /v1/status."""


# "module:factory" entries; the factory takes no arguments and returns a Feature.
FEATURES: list[str] = [
    "node.discovery:create",
    "node.pairing:create",
    "node.routing.feature:routing_feature",
    "node.backup.feature:feature",
    "node.sessions.feature:create",
    "node.web.feature:create",
    "node.mcp.feature:create",
    "node.search.feature:create",
    "node.consolidation.feature:create",
]


def load_features(names: Sequence[str] | None = None) -> list[Feature]:
    out = []
    for entry in FEATURES if names is None else names:
        module, _, factory = entry.partition(":")
        out.append(getattr(importlib.import_module(module), factory)())
    return out
