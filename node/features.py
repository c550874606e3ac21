"""Features plug into the node through one small interface, so each concern stays in its folder.

A feature (memory, devices, the peer mesh, discovery, pairing, cortex routing, agent sessions,
backups, the web page, the MCP server, memory search, consolidation) owns its routes, its CLI
commands and its background work, and hands them to the node only through :class:`Feature` and
to ``maia`` through its ``FEATURES`` entry.
The node gives it the node after its store, documents and peer manager exist; it may add route
tables for the local API and for the peer listener, credential kinds, background tasks and a
section of the status. Nothing below this module imports a feature by name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web

    from crdt import Store

    from .api.auth import Authenticator
    from .api.routes import RouteTable
    from .config import NodeConfig
    from .node import Node

Commands = argparse._SubParsersAction  # what a commands module's ``register`` adds to


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

    async def start(self) -> None:
        """Start background work; the HTTP server is already listening."""

    async def stop(self) -> None:
        """Stop background work; called before the store closes, also after a failed start."""

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable section for /v1/status (an empty one is left out)."""

    def offline_status(self, store: Store, config: NodeConfig) -> dict[str, Any]:
        """The same section for ``maia status`` when no node runs, read from disk."""


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Stop a feature's background task and wait until it has ended, whatever it raised: a
    feature's ``stop`` must not return while its task still touches the store."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


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

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    def offline_status(self, store: Store, config: NodeConfig) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Entry:
    """One feature: ``feature`` is the "module:factory" building it (the factory takes no
    arguments and does no I/O); ``commands`` is the module whose ``register(commands)`` adds its
    ``maia`` sub-commands. The commands module is named here rather than reached through the
    feature object so that ``maia`` starts without loading the features' HTTP and peer code
    (it keeps to the standard library, ``crdt`` and the feature's own domain modules)."""

    feature: str
    commands: str | None = None


FEATURES: list[Entry] = [
    Entry("node.memory.feature:create", "node.memory.cli"),
    Entry("node.devices.feature:create", "node.devices.cli"),
    Entry("node.mesh.feature:create", "node.mesh.cli"),
    Entry("node.mesh.discovery:create"),
    Entry("node.mesh.pairing.feature:create", "node.mesh.pairing.cli"),
    Entry("node.routing.feature:routing_feature", "node.routing.cli"),
    Entry("node.backup.feature:feature", "node.backup.cli"),
    Entry("node.sessions.feature:create", "node.sessions.cli"),
    Entry("node.web.feature:create"),
    Entry("node.mcp.feature:create", "node.mcp.cli"),
    Entry("node.search.feature:create"),  # its `maia memory search` is memory's command
    Entry("node.consolidation.feature:create", "node.consolidation.cli"),
]


def load_features(names: Sequence[str] | None = None) -> list[Feature]:
    """Build the features (``names``: "module:factory" entries; default: every feature)."""
    out = []
    for entry in [e.feature for e in FEATURES] if names is None else names:
        module, _, factory = entry.partition(":")
        out.append(getattr(importlib.import_module(module), factory)())
    return out


def register_commands(commands: Commands) -> None:
    """Add every feature's ``maia`` sub-commands (without building the features)."""
    for entry in FEATURES:
        if entry.commands is not None:
            importlib.import_module(entry.commands).register(commands)


def local_api_tables(features: Sequence[Feature]) -> list[RouteTable]:
    """The local API's tables of ``features`` (the core table comes with ``build_app``)."""
    return [table for feature in features for table in feature.route_tables()]
