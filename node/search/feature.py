"""Memory search as a node feature: owns the index, its upkeep and its embedding worker.

``setup`` opens the index in ``<data>/runtime/search`` (rebuilt there if missing, SPEC-001
§7.5) with the default local embedder; ``start`` runs one background task that indexes changed
shards on the event loop (which owns the documents) and hands embedding to one worker thread,
so a large catch-up never stalls the API; ``stop`` waits for the worker and saves the vector
file so the next start loads it instead of rebuilding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..features import FeatureBase
from .embedder import Embedder, default_embedder
from .index import SearchIndex
from .routes import SEARCH_KEY, search_routes

if TYPE_CHECKING:
    from ..api.routes import RouteTable
    from ..node import Node

log = logging.getLogger(__name__)

TICK = 2.0  # seconds between upkeep passes when nothing wakes the task
QUIET = 2.0  # a synced shard is indexed once it has not changed for this long
SAVE_EVERY = 60.0  # seconds between two writes of the vector file while vectors change


class SearchFeature(FeatureBase):
    name = "search"

    def __init__(self, embedder_factory: Callable[[], Embedder | None] = default_embedder) -> None:
        self._embedder_factory = embedder_factory
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._wake: asyncio.Event | None = None
        self.index: SearchIndex | None = None

    def setup(self, node: Node) -> None:
        super().setup(node)
        self.index = SearchIndex(node.paths.root / "runtime" / "search", node.repo,
                                 self._embedder_factory())
        node.repo.subscribe(self._on_change)

    def _on_change(self, doc_id: str, local: bool) -> None:
        if self._wake is not None and doc_id.startswith("memory/"):
            self._wake.set()

    def route_tables(self) -> Sequence[RouteTable]:
        return [search_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.index is not None
        app[SEARCH_KEY] = self.index

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-embed")
        self._task = asyncio.create_task(self._run(), name="search-index")

    async def _in_worker(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _run(self) -> None:
        assert self.index is not None and self._wake is not None
        index = self.index
        await self._in_worker(index.load_vectors)
        last_save = time.monotonic()
        while True:
            try:
                while index.flush(quiet=QUIET, max_shards=1):
                    await asyncio.sleep(0)  # one shard at a time: the API stays responsive
                while await self._in_worker(index.embed_pending):
                    if index.flush(quiet=QUIET, max_shards=1):
                        continue  # new entries first, so they are embedded in this run
                if time.monotonic() - last_save >= SAVE_EVERY:
                    await self._in_worker(index.save_vectors)
                    last_save = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("search index upkeep failed; retrying in %.0f s", TICK)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._pool is not None:
            # The worker may be mid-batch (cancelling the task does not stop the thread):
            # wait for it before the database closes.
            await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
            self._pool = None
        if self.index is not None:
            try:
                self.index.save_vectors()
            except Exception:
                log.exception("search vector file not saved; it is rebuilt at the next start")
            self.index.close()

    def status(self) -> dict[str, Any]:
        return self.index.status() if self.index is not None else {}


def create() -> SearchFeature:
    """Factory named in ``node.features.FEATURES``."""
    return SearchFeature()
