"""Embeddings through the router: the service behind /v1/embeddings and memory search.

:class:`Embeddings` answers an embeddings request: ``cortex/embedding`` goes to the configured
embedding cortices of the mesh in the router's order, then to the local default (WordLlama,
every node has it, §13.1); a name goes to that cortex's hosts only. :meth:`Embeddings.choose`
is the one embedding cortex memory search uses (§13.6).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import DEFAULT_EMBEDDING, EMBEDDING
from .embedding_shapes import unpack
from .errors import BadUpstreamAnswer, NoRoute, RouteTimeout, RoutingError, UnknownCortex
from .local_embedding import EmbedderUnavailable, WordLlamaEmbedder
from .router import Router

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class Choice:
    """An embedding cortex as memory search sees it: what to call and what its vectors are."""

    name: str
    model_id: str
    dim: int


@dataclass(slots=True)
class Embedded:
    """One answered embeddings request."""

    name: str  # the cortex that answered
    model_id: str
    host: str  # device id of the node whose model computed the vectors
    vectors: np.ndarray  # float32, (n, dim)
    prompt_tokens: int


def cortex_model_id(name: str, model: str, dim: int) -> str:
    """The key of a configured cortex's vectors (SPEC-006 §13.2): name, model and length."""
    return f"cortex:{name}/{model}/{dim}"


def openai_answer(got: Embedded) -> dict[str, Any]:
    """The OpenAI embeddings answer, rebuilt from explicit fields (SPEC-006 §13.5).

    Values are float32; written as float64 they would carry 17 digits that mean nothing.
    Rounded to 8 decimals (within 5e-9 of the float32 value) the JSON is half as long and
    three times faster to write and read (measured: 256 vectors of 256, 134 ms -> 44 ms).
    """
    rows = np.round(got.vectors.astype(np.float64), 8).tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row}
                 for i, row in enumerate(rows)],
        "model": got.name,
        "usage": {"prompt_tokens": got.prompt_tokens, "total_tokens": got.prompt_tokens},
    }


class Embeddings:
    """Embeddings for the API and for memory search, through the router (SPEC-006 §13)."""

    def __init__(self, router: Router, default: Callable[[], WordLlamaEmbedder | None]) -> None:
        self.router = router
        self._default_factory = default
        self._default: WordLlamaEmbedder | None = None
        self._default_tried = False
        self.counts = {"requests": 0, "local_default": 0, "routed": 0}

    @property
    def default(self) -> WordLlamaEmbedder | None:
        """The local default, loaded on first use (None, logged, when its files are missing)."""
        if not self._default_tried:
            self._default_tried = True
            self._default = self._default_factory()
        return self._default

    def default_choice(self) -> Choice | None:
        d = self.default
        return Choice(DEFAULT_EMBEDDING, d.model_id, d.dim) if d is not None else None

    def choose(self) -> Choice | None:
        """The embedding cortex memory search uses (§13.6): this node's own first, else a
        connected peer's (non-remote first, then by name and device id), else the local
        default. Load, health and cooldown do not move it, so it changes only with the set
        of embedding cortices in reach."""
        registry = self.router.registry
        for name in self.router.local.names():
            cortex = self.router.local.get(name)
            if cortex is not None and cortex.kind == EMBEDDING and cortex.dimensions:
                return Choice(name, cortex_model_id(name, cortex.model, cortex.dimensions),
                              cortex.dimensions)
        offers = sorted(
            ((c.remote, c.name, h.device_id, c) for h, c in registry.offers()
             if not h.local and c.kind == EMBEDDING and c.dimensions
             and not self.router.name_conflict(h, c)),
            key=lambda t: t[:3])
        if offers:
            c = offers[0][3]
            return Choice(c.name, cortex_model_id(c.name, c.model, c.dimensions or 0),
                          c.dimensions or 0)
        return self.default_choice()

    def model_entry(self) -> dict[str, Any] | None:
        """The local default as a ``/v1/models`` entry (SPEC-006 §4.7, §13.1): on this device,
        never advertised, always available while its files are installed."""
        d = self.default
        if d is None:
            return None
        me = self.router.registry.me
        return {"id": DEFAULT_EMBEDDING, "object": "model", "created": 0, "owned_by": "maia-node",
                "maia": {"kind": EMBEDDING, "model": d.model_id, "capabilities": ["text"],
                         "context_window": 8192, "remote": False, "available": True,
                         "dimensions": d.dim, "local_default": True,
                         "hosts": [{"device_id": me.device_id, "name": me.name, "local": True,
                                    "healthy": True, "in_flight": 0, "max_concurrency": 1,
                                    "rtt_ms": None, "cooling_down": None,
                                    "name_conflict": False, "online": True,
                                    "last_seen": None}]}}

    async def embed(self, model: str, inputs: list[str], *,
                    expect_model_id: str | None = None) -> Embedded:
        """Vectors for ``inputs`` from ``model`` (a name, ``cortex/embedding`` or the local
        default's name). ``expect_model_id``: refuse an answer of another model (search)."""
        self.counts["requests"] += 1
        if model == DEFAULT_EMBEDDING:
            return await self._local_default(inputs)
        plan = self.router.plan_embedding(model, inputs)
        if model == f"cortex/{EMBEDDING}" and not plan.candidates:
            return await self._local_default(inputs)
        try:
            candidate, answer = await self.router.complete(plan)
        except (NoRoute, BadUpstreamAnswer, RouteTimeout) as exc:
            if model == f"cortex/{EMBEDDING}" and self.default is not None:
                log.info("no embedding cortex answered (%s); the local default does",
                         exc.detail[:200])
                return await self._local_default(inputs)
            raise
        dim = candidate.cortex.dimensions or 0
        mat, tokens = unpack(answer, len(inputs), dim)  # checked on arrival; cheap to re-read
        model_id = cortex_model_id(candidate.cortex.name, candidate.cortex.model, dim)
        if expect_model_id is not None and model_id != expect_model_id:
            raise NoRoute(f"{candidate.cortex.name} on {candidate.where} is {model_id}, not "
                          f"{expect_model_id}", retry_after=None, reasons=plan.reasons)
        self.counts["routed"] += 1
        return Embedded(candidate.cortex.name, model_id, candidate.where, mat, tokens)

    async def _local_default(self, inputs: list[str]) -> Embedded:
        model = self.default
        if model is None:
            raise UnknownCortex("the local default embedding model is not installed",
                                available=self.router.available())
        self.counts["local_default"] += 1
        try:
            raw = np.asarray(await asyncio.to_thread(model.embed, inputs), dtype=np.float32)
        except EmbedderUnavailable as exc:  # its files load with the first text (issue 17)
            raise UnknownCortex(str(exc), available=self.router.available()) from None
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        raw = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)  # unit, as OpenAI's
        tokens = sum(math.ceil(len(t.encode()) / 4) for t in inputs)
        return Embedded(DEFAULT_EMBEDDING, model.model_id, self.router.registry.me.device_id,
                        raw, tokens)


__all__ = ["Choice", "Embedded", "Embeddings", "RoutingError",
           "cortex_model_id", "openai_answer"]
