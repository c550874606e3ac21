"""Signed batches: one Ed25519 signature over the ordered hashes of a device's own changes.

Signing each change alone would cap catch-up at the Ed25519 verify rate; one signature per
commit or bulk write lets verification run at Automerge's speed. The signed message names the
mesh and the document, so a batch cannot be replayed into another document or mesh.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import msgpack

from .chunks import HASH_LEN
from .keys import DeviceKey, verify_signature

_DOMAIN = b"maia-batch-v1\x00"
MAX_BATCH_HASHES = 1 << 20


class BatchError(ValueError):
    """A batch record that is malformed (not merely unverified)."""


def batch_message(mesh_id: bytes, doc_id: str, signer: bytes, hashes: Sequence[bytes]) -> bytes:
    """Canonical bytes that a batch signature covers."""
    doc = doc_id.encode()
    return b"".join(
        (
            _DOMAIN,
            mesh_id,
            struct.pack(">H", len(doc)),
            doc,
            signer,
            struct.pack(">I", len(hashes)),
            *hashes,
        )
    )


@dataclass(frozen=True)
class SignedBatch:
    mesh_id: bytes
    doc_id: str
    signer: bytes
    hashes: tuple[bytes, ...]
    signature: bytes

    @classmethod
    def sign(
        cls, key: DeviceKey, mesh_id: bytes, doc_id: str, hashes: Sequence[bytes]
    ) -> SignedBatch:
        hashes = tuple(hashes)
        sig = key.sign(batch_message(mesh_id, doc_id, key.public_key, hashes))
        return cls(mesh_id, doc_id, key.public_key, hashes, sig)

    @cached_property
    def batch_id(self) -> bytes:
        return hashlib.sha256(
            batch_message(self.mesh_id, self.doc_id, self.signer, self.hashes) + self.signature
        ).digest()

    def signature_valid(self) -> bool:
        return verify_signature(
            self.signer,
            batch_message(self.mesh_id, self.doc_id, self.signer, self.hashes),
            self.signature,
        )

    def encode(self) -> bytes:
        return msgpack.packb(
            [1, self.mesh_id, self.doc_id, self.signer, b"".join(self.hashes), self.signature],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedBatch:
        try:
            v, mesh, doc, signer, hashes, sig = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise BatchError(f"malformed batch record: {exc}") from exc
        if v != 1:
            raise BatchError(f"unknown batch record version {v!r}")
        if not (
            isinstance(mesh, bytes)
            and len(mesh) == 32
            and isinstance(doc, str)
            and isinstance(signer, bytes)
            and len(signer) == 32
            and isinstance(hashes, bytes)
            and len(hashes) % HASH_LEN == 0
            and len(hashes) // HASH_LEN <= MAX_BATCH_HASHES
            and isinstance(sig, bytes)
            and len(sig) == 64
        ):
            raise BatchError("batch record has fields of the wrong type or size")
        split = tuple(hashes[i : i + HASH_LEN] for i in range(0, len(hashes), HASH_LEN))
        return cls(mesh, doc, signer, split, sig)
