"""SecureChannel: the encrypted, ordered message pipe maia-node peers talk over after the
handshake.

Each direction has its own key and a frame counter that is the nonce. The counter is never
sent, so the receiver only accepts the exact next frame: a frame that was altered, replayed,
reordered, or sent after a dropped one fails authentication and the channel closes, rather than
letting a LAN attacker splice sync traffic. The handshake's sealed AUTH is frame 0 of each
direction, so a channel built by the handshake starts both counters at 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any, NoReturn, Self

import aiohttp
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from crdt import device_id

from . import codec
from .crypto import MAC_BYTES, frame_nonce
from .errors import ChannelClosed, ChannelError, TransportError
from .frames import (
    ABORT_TIMEOUT,
    FrameFault,
    FrameSocket,
    PeerClosed,
    abort_socket,
    close_socket,
    read_frame,
)

log = logging.getLogger(__name__)


class SecureChannel:
    """An authenticated peer's encrypted channel; ``send``/``recv`` move msgpack-able objects.

    The handshake proved ``peer_key`` on this connection. Whether that key may sync (roster
    membership, revocation, ``peer_certs``) is the caller's decision, not the channel's.
    """

    def __init__(
        self,
        ws: FrameSocket,
        *,
        send_key: bytes,
        recv_key: bytes,
        peer_key: bytes,
        peer_certs: list[bytes],
        max_frame: int,
        first_counter: int = 0,
    ) -> None:
        """``first_counter`` is the counter of the first data frame in each direction: the
        handshake passes 1, because its sealed AUTH used counter 0 under the same keys and a
        nonce must never be used twice with one key."""
        if first_counter < 0:
            raise ValueError("frame counters start at 0 or later")
        self._ws = ws
        self._send_box = SecretBox(send_key)
        self._recv_box = SecretBox(recv_key)
        self._send_counter = first_counter
        self._recv_counter = first_counter
        self._send_lock = asyncio.Lock()
        self._recv_lock = asyncio.Lock()
        self._max_frame = max_frame
        self._ended: TransportError | None = None
        self.peer_key = peer_key
        self.peer_device_id = device_id(peer_key)
        self.peer_certs = peer_certs

    def __repr__(self) -> str:
        return f"SecureChannel(peer={self.peer_device_id}, closed={self.closed})"

    @property
    def closed(self) -> bool:
        """True once the channel was closed by either side or failed; it never reopens."""
        return self._ended is not None

    async def abort(self, code: int = 1001, reason: str = "") -> None:
        """Close the channel as one whose path is dead: data still unsent or unacknowledged
        is dropped, not retransmitted (SO_LINGER 0), and the peer's close reply is awaited
        only briefly.

        Why: a connection given up because its path died (SPEC-005 §9.14) otherwise keeps
        retransmitting into it, and each retransmission keeps this machine's neighbour lookup
        for the peer pending; when the link returns, a fresh dial queued behind that lookup
        waits up to a second, or fails, before the lookup starts over."""
        get_extra_info = getattr(self._ws, "get_extra_info", None)
        sock = get_extra_info("socket") if get_extra_info is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self._ended is None:
            self._end(ChannelClosed("closed", "aborted locally", close_code=code, reason=reason))
            await close_socket(self._ws, code, reason, wait=ABORT_TIMEOUT)

    # -- sending -------------------------------------------------------------------------------
    async def send(self, obj: Any) -> None:
        """Encode, seal and send ``obj``.

        Raises ``TypeError`` for objects msgpack cannot encode and ``ValueError`` for one larger
        than the frame limit (both before anything is sent, so the channel stays usable), and
        the channel's end (``ChannelClosed``/``ChannelError``) once it is closed.
        """
        self._raise_if_ended()
        plaintext = codec.pack(obj)
        if len(plaintext) > self._max_frame:
            raise ValueError(
                f"message of {len(plaintext)} bytes exceeds the frame limit of {self._max_frame}"
            )
        async with self._send_lock:  # counters must hit the wire in the order they are used
            self._raise_if_ended()
            nonce = frame_nonce(self._send_counter)
            self._send_counter += 1
            sealed = self._send_box.encrypt(plaintext, nonce).ciphertext
            try:
                await self._ws.send_bytes(sealed)
            except (ConnectionError, aiohttp.ClientError) as exc:
                self._end(ChannelClosed("connection_lost", f"send failed: {type(exc).__name__}"))
                await close_socket(self._ws, wait=ABORT_TIMEOUT)
                self._raise_end()

    # -- receiving -----------------------------------------------------------------------------
    async def recv(self) -> Any:
        """Return the next message from the peer.

        Raises ``ChannelClosed`` when the channel ended without an integrity failure here, and
        ``ChannelError`` (after closing the socket) when a frame cannot be trusted.
        """
        async with self._recv_lock:
            self._raise_if_ended()
            try:
                sealed = await read_frame(self._ws, self._max_frame + MAC_BYTES)
            except FrameFault as fault:
                await self._fail(fault.code, fault.detail)
            except PeerClosed as peer:
                if self._ended is None:
                    detail = f"peer closed the channel ({peer.close_code}: {peer.reason})"
                    if peer.close_code is None:
                        self._end(ChannelClosed("connection_lost", "connection dropped"))
                    else:
                        self._end(
                            ChannelClosed(
                                "closed", detail, close_code=peer.close_code, reason=peer.reason
                            )
                        )
                    log.info("channel with %s ended: %s", self.peer_device_id, self._ended)
                await close_socket(self._ws)
                self._raise_end()
            number = self._recv_counter
            try:
                plaintext = self._recv_box.decrypt(sealed, frame_nonce(number))
            except CryptoError:
                await self._fail(
                    "decrypt_failed",
                    f"frame {number} failed authentication (altered, replayed, reordered or "
                    "sent after a dropped frame)",
                )
            self._recv_counter += 1
            if len(plaintext) > self._max_frame:  # cannot happen with SecretBox; kept as a rule
                await self._fail("too_large", f"message of {len(plaintext)} bytes")
            try:
                # Any map key type the sender's msgpack accepts; lengths stay bounded.
                return codec.unpack(plaintext, self._max_frame, strict_map_key=False)
            except codec.DecodeError as exc:
                await self._fail("malformed", f"frame {number}: {exc}")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        """Iterate messages until the channel closes cleanly; integrity failures propagate."""
        try:
            return await self.recv()
        except ChannelClosed:
            raise StopAsyncIteration from None

    # -- closing -------------------------------------------------------------------------------
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel, telling the peer ``code`` and ``reason``; idempotent."""
        if self._ended is None:
            self._end(ChannelClosed("closed", "closed locally", close_code=code, reason=reason))
            await close_socket(self._ws, code, reason)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _end(self, why: TransportError) -> None:
        if self._ended is None:
            self._ended = why

    async def _fail(self, code: str, detail: str) -> NoReturn:
        """Record an integrity failure, close the socket with it, and raise it."""
        if self._ended is None:
            self._end(ChannelError(code, detail))
            log.warning("channel with %s closed: %s: %s", self.peer_device_id, code, detail)
            await abort_socket(self._ws, code)
        self._raise_end()

    def _raise_if_ended(self) -> None:
        if self._ended is not None:
            self._raise_end()

    def _raise_end(self) -> NoReturn:
        """Raise a fresh copy of how the channel ended (so tracebacks do not pile up)."""
        why = self._ended
        if isinstance(why, ChannelClosed):
            raise ChannelClosed(why.code, why.detail, close_code=why.close_code, reason=why.reason)
        if why is None:  # only called after _end(); a bug here must not look like a clean close
            raise RuntimeError("SecureChannel ended without a recorded reason")
        raise ChannelError(why.code, why.detail)
