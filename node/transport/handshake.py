"""The maia-node handshake: prove both device keys on this connection and agree session keys.

Wire (binary WebSocket frames, msgpack maps), both sides at once (SPEC-005 §9.2 to §9.7):
  1. HELLO {"t": "hello", "v": 1, "mesh", "key", "eph", "nonce"}   (32 bytes each), plaintext
  2. session keys: transcript = BLAKE2b-256(b"maia-handshake-v1" + initiator HELLO +
     responder HELLO), the bytes as sent; k_i2r / k_r2i = BLAKE2b-256(X25519(own eph, peer eph),
     key=transcript, person=b"maia-i2r" / b"maia-r2i"). A low-order peer ephemeral (all-zero
     shared secret) is "malformed", before any AUTH is sent.
  3. AUTH  {"t": "auth", "sig", "certs"}, each side's first sealed frame: SecretBox under its
     direction's key with the implicit nonce of counter 0. sig = Ed25519 by the device key over
     b"maia-auth-v1" + transcript + role byte (b"I" initiator, b"R" responder).
The channel's data frames then go on at counter 1 in each direction.

AUTH is sealed so a LAN observer never sees the certificates (they carry mesh and device names),
and opening it proves both sides derived the same keys. Refusal codes for the peer's AUTH:
  * "decrypt_failed": the frame does not open under the expected key and counter 0, the same
    code the channel uses for any frame that does not open. It means the frame was altered in
    transit, or the two sides saw different HELLOs (a replayed recording, a meddled HELLO), so
    their transcripts and keys differ. Nothing in the frame is read.
  * "bad_signature": the frame opened, but sig is not by the key in the peer's HELLO over this
    transcript and the peer's role.
  * "malformed": the frame opened but is not an AUTH map of the right shape.
The fresh nonces and ephemeral keys in the transcript bind each AUTH to this one connection, so a
recorded AUTH is worthless elsewhere; an attacker who swaps ephemeral keys changes the
transcript and breaks both the keys and the signatures. Roster authorisation is the caller's job
afterwards.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from crdt import DeviceKey, device_id, verify_signature

from . import codec
from .channel import SecureChannel
from .crypto import MAC_BYTES, auth_message, frame_nonce, session_keys, transcript_hash
from .errors import HandshakeError
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

PROTOCOL_VERSION = 1
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
DEFAULT_MAX_FRAME = 8 << 20
_FIELD_BYTES = 32
_SIG_BYTES = 64
#: AUTH is frame 0 of each direction; the channel's data frames start at the next counter.
_AUTH_COUNTER = 0


@dataclass(frozen=True, slots=True)
class _PeerHello:
    key: bytes
    eph: bytes


async def handshake(
    ws: FrameSocket,
    *,
    key: DeviceKey,
    mesh_id: bytes,
    initiator: bool,
    certs: Sequence[bytes] = (),
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> SecureChannel:
    """Run the handshake on an open WebSocket and return the encrypted channel.

    The whole exchange must finish within ``timeout`` seconds. On any failure the socket is
    closed (with the error code as close reason, so the peer logs the same word) and
    ``HandshakeError`` is raised.
    """
    if len(mesh_id) != _FIELD_BYTES:
        raise ValueError(f"mesh id must be {_FIELD_BYTES} bytes, got {len(mesh_id)}")
    cert_list = [bytes(c) for c in certs]
    role = "initiator" if initiator else "responder"
    try:
        async with asyncio.timeout(timeout):
            channel = await _exchange(ws, key, mesh_id, initiator, cert_list, max_frame)
    except TimeoutError:
        error = HandshakeError("handshake_timeout", f"handshake not done within {timeout:g} s")
    except HandshakeError as exc:
        error = exc
    except FrameFault as fault:
        error = HandshakeError(fault.code, fault.detail)
    except PeerClosed as peer:
        error = HandshakeError("peer_closed", str(peer))
    except (ConnectionError, aiohttp.ClientError) as exc:
        error = HandshakeError("connection_lost", f"send failed: {type(exc).__name__}")
    except asyncio.CancelledError:
        await close_socket(ws, 1001, "cancelled", wait=ABORT_TIMEOUT)
        raise
    else:
        log.info("handshake as %s done: peer %s", role, channel.peer_device_id)
        return channel
    log.info("handshake as %s failed: %s", role, error)
    await abort_socket(ws, error.code)
    raise error


async def _exchange(
    ws: FrameSocket,
    key: DeviceKey,
    mesh_id: bytes,
    initiator: bool,
    certs: list[bytes],
    max_frame: int,
) -> SecureChannel:
    """HELLO out and in, derive the keys, sealed AUTH out and in. Raises on the first fault."""
    ephemeral = PrivateKey.generate()
    our_hello = codec.pack(
        {
            "t": "hello",
            "v": PROTOCOL_VERSION,
            "mesh": mesh_id,
            "key": key.public_key,
            "eph": bytes(ephemeral.public_key),
            "nonce": os.urandom(_FIELD_BYTES),
        }
    )
    await ws.send_bytes(our_hello)
    peer_hello_bytes = await read_frame(ws, max_frame)
    peer = _parse_hello(peer_hello_bytes, max_frame, mesh_id=mesh_id, our_key=key.public_key)

    if initiator:
        transcript = transcript_hash(our_hello, peer_hello_bytes)
    else:
        transcript = transcript_hash(peer_hello_bytes, our_hello)
    try:
        k_i2r, k_r2i = session_keys(ephemeral, peer.eph, transcript)
    except CryptoError:
        raise HandshakeError("malformed", "peer ephemeral key is a low-order point") from None
    send_key, recv_key = (k_i2r, k_r2i) if initiator else (k_r2i, k_i2r)

    our_sig = key.sign(auth_message(transcript, initiator=initiator))
    our_auth = codec.pack({"t": "auth", "sig": our_sig, "certs": certs})
    sealed_auth = SecretBox(send_key).encrypt(our_auth, frame_nonce(_AUTH_COUNTER)).ciphertext
    await ws.send_bytes(sealed_auth)

    sealed = await read_frame(ws, max_frame + MAC_BYTES)
    try:
        peer_auth = SecretBox(recv_key).decrypt(sealed, frame_nonce(_AUTH_COUNTER))
    except CryptoError:
        raise HandshakeError(
            "decrypt_failed",
            f"AUTH from {device_id(peer.key)} does not open with this connection's keys "
            "(altered in transit, or the two sides saw different HELLOs)",
        ) from None
    peer_sig, peer_certs = _parse_auth(peer_auth, max_frame)
    if not verify_signature(peer.key, auth_message(transcript, initiator=not initiator), peer_sig):
        raise HandshakeError(
            "bad_signature",
            f"AUTH from {device_id(peer.key)} is not signed by the key in its HELLO "
            "for this connection",
        )
    return SecureChannel(
        ws,
        send_key=send_key,
        recv_key=recv_key,
        peer_key=peer.key,
        peer_certs=peer_certs,
        max_frame=max_frame,
        first_counter=_AUTH_COUNTER + 1,
    )


def _decode_map(data: bytes, max_frame: int, kind: str) -> dict[str, object]:
    try:
        msg = codec.unpack(data, max_frame)
    except codec.DecodeError as exc:
        raise HandshakeError("malformed", f"{kind}: {exc}") from None
    if not isinstance(msg, dict) or msg.get("t") != kind:
        raise HandshakeError("malformed", f"expected a {kind} message")
    return msg


def _field(msg: dict[str, object], name: str, size: int, kind: str) -> bytes:
    value = msg.get(name)
    if not isinstance(value, bytes) or len(value) != size:
        raise HandshakeError("malformed", f"{kind} field '{name}' must be {size} bytes")
    return value


def _parse_hello(data: bytes, max_frame: int, *, mesh_id: bytes, our_key: bytes) -> _PeerHello:
    """Check the peer's HELLO; unknown extra fields are ignored (the transcript covers them)."""
    msg = _decode_map(data, max_frame, "hello")
    version = msg.get("v")
    if type(version) is not int:  # not bool: True == 1 in Python
        raise HandshakeError("malformed", "hello field 'v' must be an integer")
    if version != PROTOCOL_VERSION:
        raise HandshakeError(
            "unsupported_version", f"peer speaks version {version}, we speak {PROTOCOL_VERSION}"
        )
    mesh = _field(msg, "mesh", _FIELD_BYTES, "hello")
    peer_key = _field(msg, "key", _FIELD_BYTES, "hello")
    eph = _field(msg, "eph", _FIELD_BYTES, "hello")
    _field(msg, "nonce", _FIELD_BYTES, "hello")
    if not hmac.compare_digest(mesh, mesh_id):
        raise HandshakeError("wrong_mesh", f"peer {device_id(peer_key)} belongs to another mesh")
    if hmac.compare_digest(peer_key, our_key):
        raise HandshakeError("self_connection", "the peer presented our own device key")
    return _PeerHello(key=peer_key, eph=eph)


def _parse_auth(data: bytes, max_frame: int) -> tuple[bytes, list[bytes]]:
    msg = _decode_map(data, max_frame, "auth")
    sig = _field(msg, "sig", _SIG_BYTES, "auth")
    certs = msg.get("certs")
    if not isinstance(certs, list) or not all(isinstance(c, bytes) for c in certs):
        raise HandshakeError("malformed", "auth field 'certs' must be a list of byte strings")
    return sig, certs
