"""Frame-level plumbing for the maia-node transport: the socket adapter, reading one binary
frame under a size limit, and closing a socket with a reason the peer can read.

Kept apart from the handshake and the channel so both apply exactly the same rules to what
arrives on the wire (binary only, bounded size) and close the same way when it is wrong.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType
from aiohttp.http_websocket import WebSocketError

log = logging.getLogger(__name__)

#: How long a normal close may wait for the peer's close reply before dropping the connection.
CLOSE_TIMEOUT = 2.0
#: The same after a failure: the close frame (with the reason) is already written, and an
#: untrusted or stalled peer must not hold the connection and its task open much longer.
ABORT_TIMEOUT = 0.5

#: WebSocket close code sent for each transport error code; the code string itself travels as
#: the close reason so the peer logs the same word we do.
_CLOSE_CODES: dict[str, int] = {
    "too_large": WSCloseCode.MESSAGE_TOO_BIG,
    "malformed": WSCloseCode.PROTOCOL_ERROR,
    "unsupported_version": WSCloseCode.PROTOCOL_ERROR,
}


class FrameSocket(Protocol):
    """The three calls the transport needs; aiohttp's server and client WebSockets both fit."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> Any: ...

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"") -> bool: ...


class FrameFault(Exception):
    """A frame broke a wire rule; the caller turns it into its own error type after closing."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class PeerClosed(Exception):
    """The peer closed (or the connection dropped) instead of sending a frame."""

    def __init__(self, close_code: int | None, reason: str) -> None:
        text = f"peer closed ({close_code}: {reason})" if close_code else "connection lost"
        super().__init__(text)
        self.close_code = close_code
        self.reason = reason


async def read_frame(ws: FrameSocket, limit: int) -> bytes:
    """Return the next binary frame of at most ``limit`` bytes, or raise why there is none."""
    msg = await ws.receive()
    kind = msg.type
    if kind is WSMsgType.BINARY:
        data = bytes(msg.data)
        if len(data) > limit:
            raise FrameFault("too_large", f"frame of {len(data)} bytes exceeds {limit}")
        return data
    if kind is WSMsgType.TEXT:
        raise FrameFault("malformed", "text frame where only binary frames are allowed")
    if kind is WSMsgType.CLOSE:
        reason = msg.extra if isinstance(msg.extra, str) else ""
        raise PeerClosed(int(msg.data) if msg.data is not None else None, reason)
    if kind in (WSMsgType.CLOSING, WSMsgType.CLOSED):
        raise PeerClosed(None, "")
    if kind is WSMsgType.ERROR:
        exc = msg.data
        if isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG:
            raise FrameFault("too_large", "frame exceeds the WebSocket message limit")
        raise PeerClosed(None, f"connection error: {type(exc).__name__}")
    raise FrameFault("malformed", f"unexpected WebSocket message type {kind!r}")


def close_code_for(error_code: str) -> int:
    """The WebSocket close code that goes with a transport error code."""
    return _CLOSE_CODES.get(error_code, WSCloseCode.POLICY_VIOLATION)


async def close_socket(
    ws: FrameSocket, code: int = WSCloseCode.OK, reason: str = "", *, wait: float = CLOSE_TIMEOUT
) -> None:
    """Close ``ws`` with ``code`` and ``reason``, waiting at most ``wait`` for the peer's reply.

    Never raises: this runs on failure paths where the original error is what the caller must
    see, and a socket that breaks while closing is as closed as it gets.
    """
    try:
        async with asyncio.timeout(wait):
            await ws.close(code=code, message=reason.encode()[:123])
    except TimeoutError:
        log.debug("peer did not answer our close within %.1f s", wait)
    except Exception as exc:
        log.debug("closing the socket failed: %s", type(exc).__name__)


async def abort_socket(ws: FrameSocket, error_code: str) -> None:
    """Close ``ws`` after a failure, with the error's close code and the code as reason."""
    await close_socket(ws, close_code_for(error_code), error_code, wait=ABORT_TIMEOUT)
