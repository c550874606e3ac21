"""Search while no node runs (``maia memory search`` through the offline target).

The CLI holds the data dir's lock, so it may bring the Runtime index up to date itself:
index changed shards, embed what is missing (in this process, in batches), answer, and save
the vector file so the next node start loads it (SPEC-001 §7.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crdt import Repo

from .embedder import default_embedder
from .index import SearchError, SearchIndex, SemanticUnavailable

__all__ = ["SearchError", "SemanticUnavailable", "search_offline"]


def search_offline(repo: Repo, data_dir: Path, query: str, mode: str,
                   filters: dict[str, Any]) -> list[dict[str, Any]]:
    index = SearchIndex(Path(data_dir) / "runtime" / "search", repo, default_embedder())
    try:
        index.load_vectors()
        index.flush()
        if mode != "text":
            while index.embed_pending():
                pass
        result = index.search(query, mode=mode, **filters)
        index.save_vectors()
        return result["entries"]
    finally:
        index.close()
