"""The shape of an embeddings answer, checked (SPEC-006 §13.4), and its compact wire form.

An embedding cortex is a model, possibly on another device: what it answers is untrusted input.
:func:`vectors_from_openai` accepts a backend's OpenAI-shaped answer only with exactly one vector
per input, each of exactly the advertised length of finite numbers; on the peer channel vectors
travel packed (n × dim little-endian float32 in one binary string, :func:`pack` /
:func:`unpack`), checked again on arrival. Anything else is :class:`Garbage`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .shapes import Garbage


def _finite_matrix(rows: list[list[float]], n: int, dim: int) -> np.ndarray:
    try:
        mat = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise Garbage("a vector holds something that is not a number") from None
    if mat.shape != (n, dim):
        raise Garbage(f"vectors of shape {mat.shape}, expected ({n}, {dim})")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf: refused
        out = mat.astype(np.float32)
    if not np.isfinite(out).all():
        raise Garbage("a vector holds NaN or infinity (or a number beyond float32)")
    return out


def vectors_from_openai(answer: Any, n: int, dim: int) -> tuple[np.ndarray, int]:
    """The (n, dim) float32 vectors of an OpenAI embeddings answer and its prompt tokens.

    Exactly one item per input, indexed 0..n-1 once each, each a list of ``dim`` numbers
    (booleans and strings are not numbers), all finite: anything else raises Garbage.
    """
    if not isinstance(answer, dict):
        raise Garbage("the answer is not an object")
    data = answer.get("data")
    if not isinstance(data, list):
        raise Garbage("the answer has no data list")
    if len(data) != n:
        raise Garbage(f"{len(data)} vectors for {n} inputs")
    rows: list[Any] = [None] * n
    for pos, item in enumerate(data):
        if not isinstance(item, dict):
            raise Garbage("a data item is not an object")
        index = item.get("index", pos)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n \
                or rows[index] is not None:
            raise Garbage("the data items' indexes are not 0..n-1 once each")
        vector = item.get("embedding")
        if not isinstance(vector, list) or len(vector) != dim:
            got = len(vector) if isinstance(vector, list) else type(vector).__name__
            raise Garbage(f"a vector of length {got}, expected {dim}")
        if not all(type(x) is float or type(x) is int for x in vector):
            raise Garbage("a vector holds something that is not a number")
        rows[index] = vector
    usage = answer.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens < 2**31:
        tokens = 0
    return _finite_matrix(rows, n, dim), tokens


def pack(vectors: np.ndarray, prompt_tokens: int) -> dict[str, Any]:
    """The compact form of an answer on the peer channel (SPEC-006 §13.4)."""
    mat = np.ascontiguousarray(vectors, dtype="<f4")
    return {"n": int(mat.shape[0]), "dim": int(mat.shape[1]), "vectors": mat.tobytes(),
            "tokens": int(prompt_tokens)}


def unpack(answer: Any, n: int, dim: int) -> tuple[np.ndarray, int]:
    """The vectors of a packed answer, checked like a backend's: Garbage if anything is off."""
    if not isinstance(answer, dict):
        raise Garbage("the answer is not a map")
    blob, got_n, got_dim = answer.get("vectors"), answer.get("n"), answer.get("dim")
    if (got_n, got_dim) != (n, dim) or isinstance(got_n, bool) or isinstance(got_dim, bool):
        raise Garbage(f"vectors of shape ({got_n}, {got_dim}), expected ({n}, {dim})")
    if not isinstance(blob, bytes) or len(blob) != n * dim * 4:
        raise Garbage("the packed vectors have the wrong size")
    mat = np.frombuffer(blob, dtype="<f4").reshape(n, dim).astype(np.float32)
    if not np.isfinite(mat).all():
        raise Garbage("a vector holds NaN or infinity")
    tokens = answer.get("tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens < 2**31:
        tokens = 0
    return mat, tokens


def checked_packed(n: int, dim: int) -> Callable[[Any], dict[str, Any]]:
    """The check a requester runs on a peer's ``end`` of an embeddings call (SPEC-006 §13.4)."""

    def check(answer: Any) -> dict[str, Any]:
        mat, tokens = unpack(answer, n, dim)
        return pack(mat, tokens)

    return check


