"""Cortex routing as a node feature: config, registry, peer protocol, router and API together.

``setup`` reads ``[cortex.*]`` / ``[routing]`` (a bad table stops the node with a message that
names it), hooks the routing frames into the peer manager and builds the router; ``start``
runs the registry's advertise/ping loop and, on a node that hosts a cortex, imports ``litellm``
in the background so the first request does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase
from .backend import LocalCortices
from .config import load_routing_config
from .embeddings import Embeddings
from .local_embedding import load_default
from .protocol import RoutingProtocol
from .registry import Registry
from .router import Router, utc_iso
from .routes import APPROVALS_KEY, EMBEDDINGS_KEY, ROUTER_KEY, openai_routes
from .trust import HostApprovals

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger(__name__)


class RoutingFeature(FeatureBase):
    name = "routing"

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task] = []

    def setup(self, node: Node) -> None:
        config = load_routing_config(node.config.extra)
        self.local = LocalCortices(config.cortices, config.settings)
        repo = node.repo
        self.registry = Registry(
            node.key.public_key,
            node.key.device_id,
            node.config.name,
            self.local,
            peer_name=lambda key: str(repo.roster.members.get(key, "")),
            on_fault=self._peer_fault,
        )
        self.protocol = RoutingProtocol(self.local, on_fault=self._peer_fault)
        self.router = Router(
            self.registry, self.local, config.settings, protocol=self.protocol, peers=node.peers
        )
        # the local default embedding cortex (SPEC-006 §13.1), loaded on first use
        self.embeddings = Embeddings(self.router, load_default)
        # which peers may be sent prompts (SPEC-006 006.6.7), remembered in Runtime
        self.approvals = HostApprovals(*node.store.runtime_db("kv"),
                                       learning_seconds=config.settings.learning_seconds)
        self.registry.approvals = self.approvals
        self.registry.attach(node.peers)
        self.protocol.attach(node.peers)
        node.peers.on_connected.append(lambda conn: self.router.peer_back(conn.peer_key))

    def _peer_fault(self, key: bytes, why: str) -> None:
        self.router.note_peer_fault(key, why)
        log.warning("peer fault, cooling down: %s", why)

    def route_tables(self) -> Sequence[RouteTable]:
        return [openai_routes]


    def configure_app(self, app: web.Application) -> None:
        app[ROUTER_KEY] = self.router
        app[APPROVALS_KEY] = self.approvals
        app[EMBEDDINGS_KEY] = self.embeddings

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.registry.run(), name="cortex-registry"))
        if self.local:
            self._tasks.append(asyncio.create_task(self._warm_up(), name="litellm-warm-up"))
            log.info("hosting cortices: %s", ", ".join(self.local.names()))

    async def _warm_up(self) -> None:
        try:
            await self.local.backend.ready()
        except Exception:
            log.exception("could not load litellm; hosted cortices will fail until it loads")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        await self.registry.stop()
        await self.protocol.stop()
        await self.local.backend.aclose()  # the bounded model clients (SPEC-006 §8.4)

    def status(self) -> dict[str, Any]:
        """Hosted cortices and routing counters; never a key or an api_base."""
        hosted = []
        for item in self.local.advertised():
            hosted.append(item | {"health": self.local.health(item["name"]) or "ok"})
        return {
            "hosted": hosted,
            "reachable": self.registry.reachable_names(),
            "peers_hosting": {
                host.device_id: sorted(host.cortices) for host in self.registry.peers.values()
            },
            "peers_offline": {  # SPEC-006 §3.3: what an away peer hosts, and since when
                host.device_id: {"cortices": sorted(host.cortices), "name": host.name,
                                 "last_seen": utc_iso(host.last_seen)}
                for host in self.registry.offline.values()
            },
            "requests": dict(self.router.counts),
            "embeddings": dict(self.embeddings.counts),
            "served_for_peers": self.protocol.served,
        }


def routing_feature() -> RoutingFeature:
    """Factory named in ``node.features.FEATURES``."""
    return RoutingFeature()
