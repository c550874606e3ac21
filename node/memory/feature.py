"""Memory as a node feature: its routes (entries and their versions) and its ``maia memory``
commands.

The :class:`~node.memory.entries.Memory` object belongs to the node (sessions keep their
journal in it, upkeep indexes it), so the feature only hands it to the routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase, cancel_and_wait
from .routes import MEMORY_KEY, memory_routes
from .versions_routes import memory_version_routes

log = logging.getLogger(__name__)


class MemoryFeature(FeatureBase):
    name = "memory"
    _task: asyncio.Task | None = None

    def route_tables(self) -> Sequence[RouteTable]:
        # versions first: /v1/memory/deleted before /v1/memory/{entry_id}
        return [memory_version_routes, memory_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.node is not None
        app[MEMORY_KEY] = self.node.memory

    async def start(self) -> None:
        assert self.node is not None
        wake = asyncio.Event()
        self.node.memory.wake_indexer = wake.set
        self._task = asyncio.create_task(self._index_in_slices(wake), name="memory-index")

    async def _index_in_slices(self, wake: asyncio.Event) -> None:
        """Drive the memory index's sliced re-indexes (SPEC-005 005.7.7), one slice per turn
        of the event loop, so a peer's next message or an API request waits at most a slice."""
        assert self.node is not None
        memory = self.node.memory
        while True:
            await wake.wait()
            wake.clear()
            try:
                while memory.index_slice():
                    await asyncio.sleep(0)
            except Exception:  # the shard stays dirty: the upkeep's pass reads it whole
                log.exception("memory index slice failed")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self.node is not None:
            self.node.memory.index_in_one_piece()


def create() -> MemoryFeature:
    return MemoryFeature()
