"""The approximate nearest-neighbour index: usearch HNSW over int8-quantised unit vectors.

Why usearch: on 100,000 vectors of 256 dimensions a query takes about 1 ms (exact numpy over
float16 takes about 60 ms on this machine), int8 keeps it near 50 MB resident, and the index
saves to and loads from one file in milliseconds. It is a cache of the vectors stored in the
search database (SPEC-001 §7.5): anything odd about it and it is rebuilt from them.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
from usearch.index import Index

log = logging.getLogger(__name__)

ADD_CHUNK = 64  # vectors added per lock hold, so a bulk load never stalls a query for long


class VectorIndex:
    """Thread-safe: the embedding worker adds while the event loop searches."""

    def __init__(self, dim: int, index: Index | None = None) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._index = index or Index(
            ndim=dim, metric="cos", dtype="i8", connectivity=16,
            expansion_add=64, expansion_search=64,
        )

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace the vectors of ``keys`` (a replaced key is removed first)."""
        keys = np.asarray(keys, dtype=np.uint64)
        for at in range(0, len(keys), ADD_CHUNK):
            k, v = keys[at : at + ADD_CHUNK], vectors[at : at + ADD_CHUNK]
            with self._lock:
                present = np.atleast_1d(self._index.contains(k))
                if present.any():
                    self._index.remove(k[present])
                self._index.add(k, v, threads=1)

    def remove(self, keys: list[int]) -> None:
        if not keys:
            return
        arr = np.asarray(keys, dtype=np.uint64)
        with self._lock:
            present = np.atleast_1d(self._index.contains(arr))
            if present.any():
                self._index.remove(arr[present])

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to ``k`` (key, cosine similarity) pairs, most similar first."""
        with self._lock:
            if not len(self._index):
                return []
            found = self._index.search(vector, min(k, len(self._index)))
        return [(int(key), 1.0 - float(d)) for key, d in zip(found.keys, found.distances,
                                                              strict=True)]

    def save(self, path: Path) -> None:
        """Write atomically (a crash mid-save leaves the old file or none, never half of one)."""
        tmp = path.with_name(path.name + ".tmp")
        with self._lock:
            self._index.save(str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex | None:
        """The saved index, or None when the file is missing, unreadable or of another size."""
        try:
            index = Index.restore(str(path), view=False)
        except Exception as exc:  # a truncated or foreign file: rebuild from the database
            log.info("vector index file %s not usable (%s); rebuilding it", path, exc)
            return None
        if index is None or index.ndim != dim:
            return None
        return cls(dim, index)
