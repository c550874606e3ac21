"""msgpack encoding for maia-node transport messages, with every length bounded.

A peer is untrusted until the caller has checked it against the roster, so decoding must not
let a small frame claim a huge string, array or map.
"""

from __future__ import annotations

from typing import Any

import msgpack


class DecodeError(ValueError):
    """The bytes are not exactly one msgpack object within the limits."""


def pack(obj: Any) -> bytes:
    """Encode ``obj``; bytes stay bytes and str stays str on the other side."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, limit: int, *, strict_map_key: bool = True) -> Any:
    """Decode exactly one object from ``data``; no length inside may exceed ``limit``."""
    bound = min(limit, len(data))
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=strict_map_key,
            max_bin_len=bound,
            max_str_len=bound,
            max_array_len=bound,
            max_map_len=bound,
            max_ext_len=bound,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        # Only the type: the message may quote bytes of a decrypted frame, which logs must not.
        raise DecodeError(f"not one bounded msgpack object ({type(exc).__name__})") from None
