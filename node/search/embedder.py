"""Embedders: text in, one vector per text out.

``Embedder`` is the whole contract the index relies on, so an embedding cortex reached through
the router can later stand in for the local model without the index changing. The default,
``WordLlamaEmbedder``, reads the 256-dimension WordLlama model that ships inside the
``wordllama`` wheel (token embeddings averaged, then normalised). It reads the wheel's files
itself instead of calling ``WordLlama.load``: that loader looks for the tokenizer under a
directory name the wheel does not use and then tries to download it, and it widens the weights
to float32 (twice the memory); here they stay float16, mapped from the wheel's file. Nothing
here touches the network (SPEC-001 §7.5).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

MAX_EMBED_CHARS = 4000  # an average over more tokens than this says little more about meaning
TOKENIZER_CACHE_TEXTS = 256
SUB_BATCH = 64  # texts pooled at once: keeps the gathered token vectors near a megabyte


@runtime_checkable
class Embedder(Protocol):
    """What the search index needs from an embedding model."""

    model_id: str  # changes whenever the vectors would (model, version, dimension)
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """One row per text, ``dim`` columns; rows need not be normalised."""
        ...


class EmbedderUnavailable(RuntimeError):
    """The model's files are not installed (a broken substrate): search falls back to text."""


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in pydantic
    # and requests, which the embedder does not need).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(f"the package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class WordLlamaEmbedder:
    """The default local embedder: WordLlama ``l2_supercat`` at 256 dimensions."""

    CONFIG = "l2_supercat"
    dim = 256

    def __init__(self) -> None:
        # the tokenizer library only once the model loads (an unavailable model costs nothing)
        from tokenizers import Tokenizer

        base = _package_dir("wordllama")
        weights = base / "weights" / f"{self.CONFIG}_{self.dim}.safetensors"
        tokenizer = base / "tokenizers" / f"{self.CONFIG}_tokenizer_config.json"
        if not weights.is_file() or not tokenizer.is_file():
            raise EmbedderUnavailable(f"the wordllama model files are missing under {base}")
        self._table = _map_safetensor(weights, "embedding.weight", self.dim)
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        # This tokenizer has no pre-tokenizer, so its BPE cache is keyed by whole texts: it
        # kept up to 10,000 of them, about 60 MB after a 100k catch-up was embedded, and
        # never hits for distinct entries (issue 17). A few, for repeated queries.
        resize = getattr(self._tokenizer.model, "_resize_cache", None)
        if resize is not None:
            resize(TOKENIZER_CACHE_TEXTS)
        version = importlib.metadata.version("wordllama")
        self.model_id = f"wordllama-{version}/{self.CONFIG}-{self.dim}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Mean of the token vectors of each text; a text with no token gives a zero row."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for at in range(0, len(texts), SUB_BATCH):
            out[at : at + SUB_BATCH] = self._embed(texts[at : at + SUB_BATCH])
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(
            [t[:MAX_EMBED_CHARS] for t in texts], add_special_tokens=False
        )
        lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not lengths.sum():
            return out
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encoded if e.ids])
        np.clip(ids, 0, self._table.shape[0] - 1, out=ids)
        rows = self._table[ids]  # float16, gathered from the mapped file
        nonempty = lengths > 0
        starts = np.concatenate(([0], np.cumsum(lengths[nonempty])[:-1]))
        sums = np.add.reduceat(rows, starts, axis=0, dtype=np.float32)
        out[nonempty] = sums / lengths[nonempty, None]
        return out


def _map_safetensor(path: Path, name: str, dim: int) -> np.ndarray:
    """One float16 tensor of a safetensors file, mapped read-only instead of read.

    The mapped pages are the page cache's: resident only while used, and the kernel can drop
    them, so an idle node does not carry the model's 16 MB in its heap.
    """
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size < 1 << 24:
            raise EmbedderUnavailable(f"{path} is not a safetensors file")
        header = json.loads(fh.read(size))
    meta = header.get(name)
    if not isinstance(meta, dict) or meta.get("dtype") != "F16":
        raise EmbedderUnavailable(f"{path} holds no float16 tensor {name!r}")
    rows, cols = meta["shape"]
    start, end = meta["data_offsets"]
    if cols != dim or end - start != rows * cols * 2:
        raise EmbedderUnavailable(f"{path}: tensor {name!r} has shape {meta['shape']}")
    return np.memmap(path, dtype="<f2", mode="r", offset=8 + size + start, shape=(rows, cols))


def default_embedder() -> Embedder | None:
    """The local model, or None (logged) when it cannot load: search then ranks by text."""
    try:
        return WordLlamaEmbedder()
    except Exception as exc:
        log.warning("no local embedding model (%s); memory search ranks by text only", exc)
        return None


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
