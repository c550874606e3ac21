"""The mesh roster as self-verifying certificates: who may write, and from when they may not.

Membership is a grow-only set of signed certificates (genesis, endorsements, tombstones), so
every node that holds the same certificates reaches the same verdict in any order: the
property that lets verification run before a change is applied, and lets revocation converge.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgpack

from .keys import DeviceKey, device_id, verify_signature

_MESH_DOMAIN = b"maia-mesh-v1"
_CERT_DOMAIN = b"maia-cert-v1\x00"


class CertError(ValueError):
    """A certificate that is malformed or whose signature does not verify."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def mesh_id_for(founder: bytes, nonce: bytes) -> bytes:
    return hashlib.sha256(_MESH_DOMAIN + founder + nonce).digest()


@dataclass(frozen=True, slots=True)
class Cert:
    """One signed roster statement. ``body`` is a dict; ``raw`` the exact bytes signed."""

    kind: str
    body: dict
    signer: bytes
    raw: bytes
    signature: bytes

    @property
    def cert_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def encode(self) -> bytes:
        return msgpack.packb([self.raw, self.signature], use_bin_type=True)


def _issue(key: DeviceKey, body: dict) -> Cert:
    raw = msgpack.packb(body, use_bin_type=True)
    sig = key.sign(_CERT_DOMAIN + raw)
    return Cert(body["t"], body, key.public_key, raw, sig)


_REQUIRED = {
    "genesis": {"founder": bytes, "nonce": bytes, "name": str, "at": str},
    "endorse": {"mesh": bytes, "subject": bytes, "name": str, "issuer": bytes, "at": str},
    "revoke": {"mesh": bytes, "subject": bytes, "issuer": bytes, "at": str, "cutoff": dict},
}


def decode_cert(data: bytes) -> Cert:
    """Parse and check a certificate's shape and signature (not yet its place in a roster)."""
    try:
        raw, sig = msgpack.unpackb(data, raw=False)
        body = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        raise CertError(f"malformed certificate: {exc}") from exc
    if not isinstance(body, dict) or body.get("v") != 1 or body.get("t") not in _REQUIRED:
        raise CertError("certificate of unknown kind or version")
    for name, typ in _REQUIRED[body["t"]].items():
        if not isinstance(body.get(name), typ):
            raise CertError(f"certificate field {name!r} missing or of the wrong type")
    signer = body["founder"] if body["t"] == "genesis" else body["issuer"]
    if len(signer) != 32 or not isinstance(sig, bytes) or len(sig) != 64:
        raise CertError("certificate key or signature has the wrong size")
    if not verify_signature(signer, _CERT_DOMAIN + raw, sig):
        raise CertError("certificate signature does not verify")
    return Cert(body["t"], body, signer, raw, sig)


def new_genesis(key: DeviceKey, name: str, device_name: str) -> Cert:
    return _issue(
        key,
        {
            "t": "genesis",
            "v": 1,
            "founder": key.public_key,
            "nonce": os.urandom(16),
            "name": name,
            "device_name": device_name,
            "at": now_iso(),
        },
    )


def new_endorsement(key: DeviceKey, mesh_id: bytes, subject: bytes, name: str) -> Cert:
    return _issue(
        key,
        {
            "t": "endorse",
            "v": 1,
            "mesh": mesh_id,
            "subject": subject,
            "name": name,
            "issuer": key.public_key,
            "at": now_iso(),
        },
    )


def new_tombstone(
    key: DeviceKey,
    mesh_id: bytes,
    subject: bytes,
    cutoff: Mapping[str, int],
    kept_endorsements: Iterable[str] = (),
    reason: str = "",
) -> Cert:
    return _issue(
        key,
        {
            "t": "revoke",
            "v": 1,
            "mesh": mesh_id,
            "subject": subject,
            "issuer": key.public_key,
            "at": now_iso(),
            "cutoff": dict(cutoff),
            "kept": sorted(kept_endorsements),
            "reason": reason,
        },
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    code: str = ""
    detail: str = ""


@dataclass
class Roster:
    """Members, revocations and cutoffs derived from a set of certificates for one mesh."""

    mesh_id: bytes
    certs: dict[str, Cert] = field(default_factory=dict)
    founder: bytes | None = None
    mesh_name: str = ""
    members: dict[bytes, str] = field(default_factory=dict)
    revoked: dict[bytes, dict[str, int]] = field(default_factory=dict)
    revoked_info: dict[bytes, Cert] = field(default_factory=dict)
    ever: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def build(cls, mesh_id: bytes, certs: Iterable[Cert]) -> Roster:
        roster = cls(mesh_id)
        for cert in certs:
            roster.certs[cert.cert_id] = cert
        roster._derive()
        return roster

    def add(self, cert: Cert) -> bool:
        """Add a certificate; True when it was new and belongs to this mesh."""
        if cert.cert_id in self.certs:
            return False
        if cert.kind == "genesis":
            if mesh_id_for(cert.body["founder"], cert.body["nonce"]) != self.mesh_id:
                return False
        elif cert.body["mesh"] != self.mesh_id:
            return False
        self.certs[cert.cert_id] = cert
        self._derive()
        return True

    def _derive(self) -> None:
        genesis = [
            c
            for c in self.certs.values()
            if c.kind == "genesis"
            and mesh_id_for(c.body["founder"], c.body["nonce"]) == self.mesh_id
        ]
        self.members, self.revoked, self.revoked_info, self.ever = {}, {}, {}, {}
        if not genesis:
            self.founder = None
            return
        g = genesis[0]
        self.founder, self.mesh_name = g.body["founder"], g.body["name"]
        endorsements = [
            c for c in self.certs.values() if c.kind == "endorse" and c.body["mesh"] == self.mesh_id
        ]
        # Everyone ever admitted (ignoring revocation): only they may issue tombstones.
        ever: dict[bytes, str] = {self.founder: g.body.get("device_name", "founder")}
        _closure(ever, endorsements, lambda c: True)
        self.ever = ever
        # SPEC-005 §5.4: several tombstones of one subject combine by MINIMUM cutoff (a doc a
        # tombstone omits counts as 0) and INTERSECTION of kept endorsements: revocation only
        # removes, so a thief's own "generous" tombstone cannot undo the owner's.
        tombstones: dict[bytes, list[Cert]] = {}
        for c in self.certs.values():
            if c.kind == "revoke" and c.body["mesh"] == self.mesh_id and c.signer in ever:
                tombstones.setdefault(c.body["subject"], []).append(c)
        kept: dict[bytes, set[str]] = {}
        for subject, certs in tombstones.items():
            docs = {d for c in certs for d in c.body["cutoff"] if isinstance(d, str)}
            self.revoked[subject] = {
                d: min(_seq(c.body["cutoff"].get(d)) for c in certs) for d in docs
            }
            kept[subject] = set.intersection(
                *({k for k in c.body.get("kept", []) if isinstance(k, str)} for c in certs)
            )
            self.revoked_info[subject] = min(certs, key=lambda c: c.body["at"])
        admitted: dict[bytes, str] = {self.founder: ever[self.founder]}
        _closure(
            admitted,
            endorsements,
            lambda c: c.signer not in self.revoked or c.cert_id in kept.get(c.signer, set()),
        )
        self.members = {k: v for k, v in admitted.items() if k not in self.revoked}
        # Revoked-with-cutoff is Auth ∩ R; a revoked key that was never admitted stays unknown.
        self.revoked = {k: v for k, v in self.revoked.items() if k in admitted}
        self.revoked_info = {k: v for k, v in self.revoked_info.items() if k in admitted}

    def is_member(self, key: bytes) -> bool:
        return key in self.members

    def may_author(self, actor: bytes, doc_id: str, seq: int) -> Verdict:
        """May ``actor``'s change number ``seq`` in ``doc_id`` be accepted?"""
        if actor in self.members:
            return Verdict(True)
        if actor in self.revoked:
            limit = self.revoked[actor].get(doc_id, 0)
            if seq <= limit:
                return Verdict(True)
            return Verdict(
                False,
                "revoked",
                f"device {device_id(actor)} was revoked; its change {seq} in {doc_id} comes "
                f"after the cutoff {limit}",
            )
        return Verdict(False, "unknown_signer", f"{device_id(actor)} is not in the roster")


def _seq(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _closure(admitted: dict[bytes, str], endorsements: list[Cert], allowed) -> None:
    grew = True
    while grew:
        grew = False
        for c in endorsements:
            subject = c.body["subject"]
            if subject not in admitted and c.signer in admitted and allowed(c):
                admitted[subject] = c.body["name"]
                grew = True
