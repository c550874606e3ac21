"""Features plug into the node through one small interface, so each concern stays in its folder.

A feature (memory, devices, the peer mesh, discovery, pairing, cortex routing, agent sessions,
backups, the web page) owns its routes, its CLI commands and its background work, and hands
them to the node and to ``maia`` only through :class:`Feature`. The node gives it the node after
its store, documents and peer manager exist; it may add route tables for the local API and for
the peer listener, credential kinds, background tasks, a section of the status, and ``maia``
sub-commands. ``FEATURES`` lists what a node runs; nothing below it imports a feature by name.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from .api.core import core_routes
from .api.openapi import openapi_routes
from .api.routes import RouteTable

if TYPE_CHECKING:
    from crdt import Store

    from .api.auth import Authenticator
    from .config import NodeConfig
    from .node import Node

Commands = argparse._SubParsersAction  # what ``register_cli`` adds its sub-commands to


class Feature(Protocol):
    name: str

    def setup(self, node: Node) -> None:
        """Wire into the node (peer frame handlers, document listeners); no I/O yet."""

    def route_tables(self) -> Sequence[RouteTable]:
        """Local-API routes this feature serves (SPEC-003 applies to them like to every route)."""

    def peer_listener_tables(self) -> Sequence[RouteTable]:
        """Routes served on the LAN-facing peer listener (SPEC-003 §2.1): only public sockets
        that authenticate by the device-key handshake belong here."""

    def authenticators(self) -> Sequence[Authenticator]:
        """Credential kinds tried after the local token (SPEC-004 session tokens, login cookies)."""

    def configure_app(self, app: web.Application) -> None:
        """Put what the routes need into the app (AppKeys)."""

    def register_cli(self, commands: Commands) -> None:
        """Add this feature's ``maia`` sub-commands; called without a node (no setup)."""

    async def start(self) -> None:
        """Start background work; the HTTP server is already listening."""

    async def stop(self) -> None:
        """Stop background work; called before the store closes, also after a failed start."""

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable section for /v1/status (an empty one is left out)."""

    def offline_status(self, store: Store, config: NodeConfig) -> dict[str, Any]:
        """The same section for ``maia status`` when no node runs, read from disk."""


class FeatureBase:
    """The do-nothing answer to every :class:`Feature` method (``setup`` keeps the node); a
    feature overrides its own."""

    name = ""
    node: Node | None = None

    def setup(self, node: Node) -> None:
        self.node = node

    def route_tables(self) -> Sequence[RouteTable]:
        return ()

    def peer_listener_tables(self) -> Sequence[RouteTable]:
        return ()

    def authenticators(self) -> Sequence[Authenticator]:
        return ()

    def configure_app(self, app: web.Application) -> None:
        pass

    def register_cli(self, commands: Commands) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    def offline_status(self, store: Store, config: NodeConfig) -> dict[str, Any]:
        return {}


# "module:factory" entries; the factory takes no arguments and returns a Feature. Its
# constructor does no I/O: ``maia`` builds every feature to collect its commands.
FEATURES: list[str] = [
    "node.memory.feature:create",
    "node.devices.feature:create",
    "node.mesh.feature:create",
    "node.mesh.discovery:create",
    "node.mesh.pairing.feature:create",
    "node.routing.feature:routing_feature",
    "node.backup.feature:feature",
    "node.sessions.feature:create",
    "node.web.feature:create",
]


def load_features(names: Sequence[str] | None = None) -> list[Feature]:
    out = []
    for entry in FEATURES if names is None else names:
        module, _, factory = entry.partition(":")
        out.append(getattr(importlib.import_module(module), factory)())
    return out


def local_api_tables(features: Sequence[Feature]) -> list[RouteTable]:
    """The local API's tables of ``features`` (the core table comes with ``build_app``)."""
    return [table for feature in features for table in feature.route_tables()]


def node_route_tables() -> list[RouteTable]:
    """Every table of a node's local API, core first, without starting a node (the OpenAPI
    document and the conformance tests read them)."""
    return [core_routes, openapi_routes, *local_api_tables(load_features())]
