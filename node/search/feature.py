"""Memory search as a node feature: owns the index, its upkeep and its embedding worker.

``setup`` opens the index in ``<data>/runtime/search`` (rebuilt there if missing, SPEC-001
§7.5) with the embedding cortex the routing feature chooses (SPEC-006 §13.6: this node's own
embedding cortex, else a peer's, else the local default); ``start`` runs one background task
that indexes changed shards on the event loop (which owns the documents), hands embedding to
one worker thread, so a large catch-up never stalls the API, and every 10 s asks routing again
which cortex to embed with, switching the index (and re-embedding in the background) when the
choice changes; ``stop`` waits for the worker and saves the vector file so the next start
loads it instead of rebuilding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from ..features import FeatureBase, cancel_and_wait
from ..routing.config import DEFAULT_EMBEDDING
from ..routing.embeddings import Choice, Embeddings
from ..routing.errors import RoutingError
from .embedder import Embedder, ModelUnavailable
from .index import SearchIndex
from .routes import SEARCH_KEY, search_routes

if TYPE_CHECKING:
    from ..api.routes import RouteTable
    from ..node import Node

log = logging.getLogger(__name__)

TICK = 2.0  # seconds between upkeep passes when nothing wakes the task
QUIET = 2.0  # a synced shard is indexed once it has not changed for this long
SAVE_EVERY = 60.0  # seconds between two writes of the vector file while vectors change
CHOOSE_EVERY = 10.0  # seconds between two looks at which embedding cortex to use (§13.6)
ROUTED_TIMEOUT = 120.0  # one batch through the router, all attempts (the worker waits this long)
RETRY_AFTER = 10.0  # a model that could not answer a batch is asked again after this long
#: Embedding waits while peers' changes keep arriving (a catch-up): the worker's memory adds to
#: the catch-up's at its peak otherwise (issue 17). It resumes this long after the last one...
CATCH_UP_QUIET = 5.0
#: ...or, if peers' changes never stop, embeds one batch after waiting this long (a 100k
#: catch-up on a loaded machine ran past 30 s, and the batch then loaded the model mid-way).
MAX_EMBED_PAUSE = 120.0


class RoutedEmbedder:
    """An embedding cortex reached through the router, as the index's :class:`Embedder`.

    ``embed`` runs on the index's worker thread and waits for the call on the event loop; it
    names the cortex and the model id it expects, so a host of another model cannot answer
    (SPEC-006 §13.6). An unreachable model raises :class:`ModelUnavailable` (the texts stay
    pending); an answer refused by the checks of §13.4 raises RuntimeError (the index then
    tries the texts one by one and skips those the model fails on alone).
    """

    def __init__(self, choice: Choice, service: Embeddings,
                 loop: Callable[[], asyncio.AbstractEventLoop | None]) -> None:
        self.choice = choice
        self.model_id = choice.model_id
        self.dim = choice.dim
        self._service = service
        self._loop = loop  # the node's event loop, once it runs (made at setup, used later)

    def embed(self, texts: list[str]) -> np.ndarray:
        loop = self._loop()
        if loop is None:
            raise ModelUnavailable("the node has not started yet")
        future = asyncio.run_coroutine_threadsafe(
            self._service.embed(self.choice.name, texts, expect_model_id=self.model_id), loop)
        try:
            return future.result(ROUTED_TIMEOUT).vectors
        except TimeoutError:
            future.cancel()
            raise ModelUnavailable(f"{self.choice.name} did not answer in time") from None
        except RoutingError as exc:
            if exc.status == 502:  # an answer out of shape: maybe one text's fault
                raise RuntimeError(f"{self.choice.name}: {exc.detail}") from None
            raise ModelUnavailable(f"{self.choice.name}: {exc.detail}") from None


class SearchFeature(FeatureBase):
    name = "search"

    def __init__(self, embedder_factory: Callable[[], Embedder | None] | None = None) -> None:
        # a fixed embedder (tests); by default the one routing chooses (SPEC-006 §13.6)
        self._embedder_factory = embedder_factory
        self._embeddings: Embeddings | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_at = 0.0
        self._remote_at = float("-inf")  # when a peer's change to a memory shard last came
        self._paused_from: float | None = None
        self.index: SearchIndex | None = None

    def setup(self, node: Node) -> None:
        super().setup(node)
        embedder: Embedder | None
        if self._embedder_factory is not None:
            embedder = self._embedder_factory()
        else:
            routing = next((f for f in node.features if f.name == "routing"), None)
            self._embeddings = getattr(routing, "embeddings", None)
            embedder = self._embeddings.default if self._embeddings is not None else None
            choice = self._embeddings.choose() if self._embeddings is not None else None
            if choice is not None and choice.name != DEFAULT_EMBEDDING:
                embedder = self._embedder_for(choice)  # this node's own embedding cortex
        self.index = SearchIndex(node.paths.root / "runtime" / "search", node.repo, embedder,
                                 memory=node.memory)
        node.repo.subscribe(self._on_change)

    def _embedder_for(self, choice: Choice) -> Embedder | None:
        assert self._embeddings is not None
        if choice.name == DEFAULT_EMBEDDING:
            return self._embeddings.default
        return RoutedEmbedder(choice, self._embeddings, lambda: self._loop)

    async def _follow_choice(self) -> None:
        """Switch the index when routing's choice of embedding cortex changed (§13.6)."""
        if self._embeddings is None or self.index is None:
            return
        choice = self._embeddings.choose()
        if choice is None or choice.model_id == self.index.model_id:
            return
        embedder = self._embedder_for(choice)
        index = self.index
        await self._in_worker(lambda: index.switch(embedder))
        self._retry_at = 0.0

    def _on_change(self, doc_id: str, local: bool) -> None:
        if doc_id.startswith("memory/"):
            if not local:
                self._remote_at = time.monotonic()
            if self._wake is not None:
                self._wake.set()

    def embedding_paused(self) -> bool:
        """Whether embedding waits for a catch-up to end: peers' changes came within
        CATCH_UP_QUIET seconds, and the pause has not yet lasted MAX_EMBED_PAUSE (then one
        batch goes, so a peer that never stops writing cannot starve it). Indexing by text
        goes on meanwhile: entries are found by text at once, by meaning once embedded."""
        now = time.monotonic()
        if now - self._remote_at >= CATCH_UP_QUIET:
            self._paused_from = None
            return False
        if self._paused_from is None:
            self._paused_from = now
        if now - self._paused_from < MAX_EMBED_PAUSE:
            return True
        self._paused_from = now
        return False

    def route_tables(self) -> Sequence[RouteTable]:
        return [search_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.index is not None
        app[SEARCH_KEY] = self.index

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-embed")
        self._task = asyncio.create_task(self._run(), name="search-index")

    async def _in_worker(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _run(self) -> None:
        assert self.index is not None and self._wake is not None
        index = self.index
        await self._in_worker(index.load_vectors)
        last_save = last_choice = time.monotonic()
        while True:
            try:
                if time.monotonic() - last_choice >= CHOOSE_EVERY:
                    last_choice = time.monotonic()
                    await self._follow_choice()
                while index.flush(quiet=QUIET, max_shards=1):
                    await asyncio.sleep(0)  # one shard at a time: the API stays responsive
                while (time.monotonic() >= self._retry_at and not self.embedding_paused()
                       and await self._embed_slice()):
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

    async def _embed_slice(self) -> int:
        """One batch on the worker; a model that cannot answer is asked again later."""
        assert self.index is not None
        try:
            return await self._in_worker(self.index.embed_pending)
        except (ModelUnavailable, RuntimeError) as exc:
            self._retry_at = time.monotonic() + RETRY_AFTER
            log.warning("search: embedding with %s failed (%s); entries stay pending, found by "
                        "text, tried again in %.0f s", self.index.model_id, exc, RETRY_AFTER)
            return 0

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
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
