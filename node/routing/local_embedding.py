"""The local default embedding cortex: WordLlama, shipped inside its wheel (SPEC-006 §13.1).

Every node has it without configuration. ``WordLlamaEmbedder`` reads the 256-dimension WordLlama
model that ships inside the ``wordllama`` wheel (token embeddings averaged). It reads the wheel's
files itself instead of calling ``WordLlama.load``: that loader looks for the tokenizer under a
directory name the wheel does not use and then tries to download it, and it widens the weights
to float32 (twice the memory); here they stay float16, mapped from the wheel's file. Nothing
here touches the network (SPEC-001 §7.5). It lives in routing because it is a cortex: the
router answers ``/v1/embeddings`` with it, and memory search reaches it through routing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_EMBED_CHARS = 4000  # an average over more tokens than this says little more about meaning
TOKENIZER_CACHE_TEXTS = 256
SUB_BATCH = 64  # texts pooled at once: keeps the gathered token vectors near a megabyte


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
        base = _package_dir("wordllama")
        self._weights = base / "weights" / f"{self.CONFIG}_{self.dim}.safetensors"
        self._tokenizer_file = base / "tokenizers" / f"{self.CONFIG}_tokenizer_config.json"
        if not self._weights.is_file() or not self._tokenizer_file.is_file():
            raise EmbedderUnavailable(f"the wordllama model files are missing under {base}")
        version = importlib.metadata.version("wordllama")
        self.model_id = f"wordllama-{version}/{self.CONFIG}-{self.dim}"
        # The tokenizer (its library and a 128k-token vocabulary: about 25 MB resident) and
        # the mapped weights load with the first text to embed, not with the node: a node
        # catching up a peer embeds nothing until the catch-up ends (issue 17).
        self._lock = threading.Lock()
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, np.ndarray]:
        with self._lock:
            if self._tokenizer is None:
                # with the first text, not with the node (see __init__)
                from tokenizers import Tokenizer

                table = _map_safetensor(self._weights, "embedding.weight", self.dim)
                try:
                    tokenizer = Tokenizer.from_file(str(self._tokenizer_file))
                except Exception as exc:  # a damaged install: callers fall back or retry
                    raise EmbedderUnavailable(f"the wordllama tokenizer does not load: {exc}"
                                              ) from exc
                tokenizer.no_padding()
                tokenizer.no_truncation()
                # This tokenizer has no pre-tokenizer, so its BPE cache is keyed by whole
                # texts: it kept up to 10,000 of them, about 60 MB after a 100k catch-up was
                # embedded, and never hits for distinct entries (issue 17). A few, for
                # repeated queries.
                resize = getattr(tokenizer.model, "_resize_cache", None)
                if resize is not None:
                    resize(TOKENIZER_CACHE_TEXTS)
                self._table, self._tokenizer = table, tokenizer
            assert self._table is not None
            return self._tokenizer, self._table

    def embed(self, texts: list[str]) -> np.ndarray:
        """Mean of the token vectors of each text; a text with no token gives a zero row."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for at in range(0, len(texts), SUB_BATCH):
            out[at : at + SUB_BATCH] = self._embed(texts[at : at + SUB_BATCH])
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        tokenizer, table = self._load()
        encoded = tokenizer.encode_batch(
            [t[:MAX_EMBED_CHARS] for t in texts], add_special_tokens=False
        )
        lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not lengths.sum():
            return out
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encoded if e.ids])
        np.clip(ids, 0, table.shape[0] - 1, out=ids)
        rows = table[ids]  # float16, gathered from the mapped file
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


def load_default() -> WordLlamaEmbedder | None:
    """The local model, or None (logged) when it cannot load: search then ranks by text."""
    try:
        return WordLlamaEmbedder()
    except Exception as exc:
        log.warning("no local embedding model (%s); memory search ranks by text only", exc)
        return None
