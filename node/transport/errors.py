"""Errors the maia-node transport raises, each carrying a short machine-readable code.

The code is what a peer sees as the WebSocket close reason and what the log shows, so the same
failure reads the same on both ends; the detail is for humans and never contains key material.
"""

from __future__ import annotations

from typing import Any


class TransportError(Exception):
    """Any transport failure: ``code`` is stable for tests and logs, ``detail`` is prose."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class HandshakeError(TransportError):
    """The handshake failed: the peer is not proven to hold its key on this connection.

    ``response`` is set by ``accept`` to the prepared (now closed) server WebSocket, so an
    aiohttp handler can return it instead of raising after the upgrade.
    """

    response: Any = None


class ChannelError(TransportError):
    """An established channel saw a frame it must not trust (altered, replayed, oversized...).

    The socket is already closed when this is raised: nothing after a bad frame can be trusted.
    """


class ChannelClosed(TransportError):
    """The channel ended without an integrity failure on our side.

    ``close_code`` and ``reason`` are what the peer sent in its close frame (``None`` and ``""``
    when the connection simply dropped), so a caller can tell "peer said bye" from "peer refused
    us" without us guessing which of those is an error for it.
    """

    def __init__(
        self,
        code: str = "closed",
        detail: str = "",
        *,
        close_code: int | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(code, detail)
        self.close_code = close_code
        self.reason = reason
