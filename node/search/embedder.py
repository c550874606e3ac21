"""Embedders: text in, one vector per text out.

``Embedder`` is the whole contract the index relies on, so the embedding cortex chosen through
the router (SPEC-006 §13.6) stands in for the local model without the index changing. The local
default, ``WordLlamaEmbedder``, is the routing feature's (node/routing/local_embedding.py);
it is re-exported here for the index, the offline search and the benchmarks.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np

from ..routing.local_embedding import EmbedderUnavailable, WordLlamaEmbedder, load_default

log = logging.getLogger(__name__)

__all__ = ["Embedder", "EmbedderUnavailable", "ModelUnavailable", "WordLlamaEmbedder",
           "checked_vectors", "default_embedder"]


class ModelUnavailable(RuntimeError):
    """The embedding model cannot answer now (its host is away, nothing routes to it): the
    texts stay pending and are tried again later, none of them is skipped."""


@runtime_checkable
class Embedder(Protocol):
    """What the search index needs from an embedding model."""

    model_id: str  # changes whenever the vectors would (model, version, dimension)
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """One row per text, ``dim`` columns; rows need not be normalised."""
        ...


def default_embedder() -> Embedder | None:
    """The local model, or None (logged) when it cannot load: search then ranks by text."""
    return load_default()


def checked_vectors(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``texts`` and check the answer: returns (unit vectors float32, row is usable).

    An embedder is a model, possibly another device's: its answer is untrusted input. A result
    of the wrong shape makes every row unusable; a row with a non-finite value or no length is
    unusable on its own. Exceptions from ``embed`` propagate (a transient failure: try later).
    """
    raw = embedder.embed(texts)
    n = len(texts)
    try:
        arr = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        arr = np.zeros((0,), dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (n, embedder.dim):
        log.warning("embedder %s answered shape %s for %d texts of dimension %d; skipped",
                    embedder.model_id, getattr(arr, "shape", None), n, embedder.dim)
        return np.zeros((n, embedder.dim), dtype=np.float32), np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(arr, axis=1)
    ok = np.isfinite(arr).all(axis=1) & np.isfinite(norms) & (norms > 1e-12)
    out = np.zeros_like(arr)
    out[ok] = arr[ok] / norms[ok, None]
    if not ok.all():
        log.warning("embedder %s gave %d unusable vector(s) of %d (not finite or zero); skipped",
                    embedder.model_id, int((~ok).sum()), n)
    return out, ok
