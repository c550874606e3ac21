"""Consolidation, salience and skills as a node feature (SPEC-006 §12).

``setup`` reads ``[consolidation]`` (a bad table stops the node with a message naming it),
builds the job over the node's Memory and the routing feature's router, and gives the Memory
its recall counter (``memory.salience``), which retrieval reads. ``start`` runs the periodic
job only when a consolidation cortex is configured: off by default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..features import FeatureBase, cancel_and_wait
from .config import load_consolidation_config
from .job import Busy, Consolidator
from .routes import CONSOLIDATOR_KEY, consolidation_routes
from .salience import Salience

if TYPE_CHECKING:
    from ..api.routes import RouteTable
    from ..node import Node

log = logging.getLogger(__name__)


class ConsolidationFeature(FeatureBase):
    name = "consolidation"

    def __init__(self) -> None:
        self.job: Consolidator | None = None
        self._task: asyncio.Task | None = None

    def setup(self, node: Node) -> None:
        super().setup(node)
        config = load_consolidation_config(node.config.extra)
        router = next((f.router for f in node.features if f.name == "routing"), None)
        node.memory.salience = Salience(node.repo.store)
        self.job = Consolidator(node.memory, router, config)

    def route_tables(self) -> Sequence[RouteTable]:
        return [consolidation_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.job is not None
        app[CONSOLIDATOR_KEY] = self.job

    async def start(self) -> None:
        if self.job is not None and self.job.config.enabled and self.job.router is not None:
            self._task = asyncio.create_task(self._every_interval(), name="consolidation")
            log.info("consolidation every %gs with cortex %s", self.job.config.interval_s,
                     self.job.config.cortex)

    async def _every_interval(self) -> None:
        assert self.job is not None
        while True:
            await asyncio.sleep(self.job.config.interval_s)
            try:
                report = await self.job.run()
                if report.written_count:
                    log.info("consolidation wrote %d fact(s)", report.written_count)
            except Busy:
                pass  # a run asked for by the owner is in progress
            except Exception:
                log.exception("consolidation run failed; the next one is in %gs",
                              self.job.config.interval_s)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def status(self) -> dict[str, Any]:
        return self.job.status() if self.job is not None else {"enabled": False}


def create() -> ConsolidationFeature:
    """Factory named in ``node.features.FEATURES``."""
    return ConsolidationFeature()
