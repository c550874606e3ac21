"""maia-node transport: device-key authenticated, encrypted node-to-node channels over aiohttp
WebSockets (SPEC-005, transport).

``connect``/``accept`` open a socket and run ``handshake``; the result is a ``SecureChannel``
whose ``peer_key`` and ``peer_certs`` the caller checks against the roster before syncing.
"""

from .channel import SecureChannel
from .errors import ChannelClosed, ChannelError, HandshakeError, TransportError
from .frames import FrameSocket
from .gate import HandshakeGate, Slot
from .handshake import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_FRAME, PROTOCOL_VERSION, handshake
from .websocket import accept, connect, peer_session

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_FRAME",
    "PROTOCOL_VERSION",
    "ChannelClosed",
    "ChannelError",
    "FrameSocket",
    "HandshakeError",
    "HandshakeGate",
    "SecureChannel",
    "Slot",
    "TransportError",
    "accept",
    "connect",
    "handshake",
    "peer_session",
]
