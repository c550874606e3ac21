"""Offset pagination behind an opaque cursor, as every list endpoint does it (SPEC-003 §7.6)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, TypeVar

from .problem import Problem

T = TypeVar("T")


def page(items: Sequence[T], query: dict[str, Any]) -> tuple[list[T], str | None]:
    """The slice ``query`` asks for (``limit``, ``cursor``) and the cursor of the next one."""
    limit = query.get("limit", 50)
    start = 0
    if query.get("cursor"):
        try:
            start = int(base64.urlsafe_b64decode(query["cursor"].encode()).decode())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise Problem(400, "Bad cursor", "the cursor is not one this node issued") from None
        if start < 0:
            raise Problem(400, "Bad cursor", "the cursor is not one this node issued")
    end = start + limit
    nxt = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return list(items[start:end]), nxt
