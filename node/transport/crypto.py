"""The maia-node transport's key schedule: transcript hash, AUTH challenge, session keys, nonces.

Pure functions with no I/O, so the handshake and the tests derive the same bytes the same way.
Every value here is bound to the transcript (both HELLOs as sent, including fresh nonces and
ephemeral keys), which is what makes a recorded AUTH or frame useless on another connection.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import crypto_scalarmult
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import PrivateKey
from nacl.secret import SecretBox

HANDSHAKE_LABEL = b"maia-handshake-v1"
AUTH_LABEL = b"maia-auth-v1"
ROLE_INITIATOR = b"I"
ROLE_RESPONDER = b"R"
PERSON_I2R = b"maia-i2r"
PERSON_R2I = b"maia-r2i"

#: Bytes SecretBox adds to each frame (the Poly1305 tag); the nonce is never sent.
MAC_BYTES: int = SecretBox.MACBYTES
NONCE_BYTES: int = SecretBox.NONCE_SIZE


def transcript_hash(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    """BLAKE2b-256 over the label and both HELLOs exactly as they crossed the wire."""
    return hashlib.blake2b(
        HANDSHAKE_LABEL + initiator_hello + responder_hello, digest_size=32
    ).digest()


def auth_message(transcript: bytes, *, initiator: bool) -> bytes:
    """What a side signs in AUTH; the role byte stops one side's AUTH being reflected back."""
    return AUTH_LABEL + transcript + (ROLE_INITIATOR if initiator else ROLE_RESPONDER)


def session_keys(
    our_ephemeral: PrivateKey, peer_ephemeral: bytes, transcript: bytes
) -> tuple[bytes, bytes]:
    """Return ``(k_i2r, k_r2i)``: one key per direction so the two counters never share a nonce.

    Raises ``nacl.exceptions.CryptoError`` when the peer's ephemeral key is a low-order point
    (the shared secret would be all zeros, known to anyone).
    """
    shared = crypto_scalarmult(bytes(our_ephemeral), peer_ephemeral)
    k_i2r = blake2b(shared, digest_size=32, key=transcript, person=PERSON_I2R, encoder=RawEncoder)
    k_r2i = blake2b(shared, digest_size=32, key=transcript, person=PERSON_R2I, encoder=RawEncoder)
    return k_i2r, k_r2i


def frame_nonce(counter: int) -> bytes:
    """The implicit nonce of frame number ``counter`` in one direction (24-byte big-endian)."""
    return counter.to_bytes(NONCE_BYTES, "big")
