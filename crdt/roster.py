"""The mesh roster as self-verifying certificates: who may write, and from when they may not.

Membership is a grow-only set of signed certificates (genesis, endorsements, tombstones), so
every node that holds the same certificates reaches the same verdict in any order: the
property that lets verification run before a change is applied, and lets revocation converge.

The rules are written for an attacker who holds a member key (SPEC-005 §5):
  * every certificate is checked field by field, by type and bound, when it is decoded; one
    that fails is skipped and logged, never raised into the roster;
  * a roster is derived into fresh values and swapped in whole, so a surprise can never leave
    it half cleared;
  * a tombstone's cutoff names the revoked key's heads (change hashes), not a bare number;
  * a key that is itself revoked cannot revoke or endorse, unless the revocation of that key
    kept the act; conflicts between revocations are settled by seniority in the admission tree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgpack

from .docids import valid_doc_id
from .keys import DeviceKey, device_id, verify_signature

log = logging.getLogger(__name__)

_MESH_DOMAIN = b"maia-mesh-v1"
_CERT_DOMAIN = b"maia-cert-v1\x00"

KEY_BYTES = 32
#: An actor id is the device key, optionally followed by an 8-byte incarnation (SPEC-005 §2.2).
ACTOR_BYTES = (KEY_BYTES, KEY_BYTES + 8)
HASH_BYTES = 32
MAX_CERT_BYTES = 4 << 20
MAX_NAME = 128
MAX_AT = 64
MAX_REASON = 500
MAX_KEPT = 10_000
MAX_CUTOFF_DOCS = 100_000
MAX_CUTOFF_ACTORS = 1024
MAX_SEQ = (1 << 32) - 1
#: Admissions deeper than this many endorsements from the founder are ignored (a person's mesh
#: is a handful of levels deep; a chain of thousands is an attack on derivation time).
MAX_DEPTH = 64
_CERT_ID_RE = re.compile(r"^[0-9a-f]{64}\Z")


class CertError(ValueError):
    """A certificate that is malformed or whose signature does not verify."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def mesh_id_for(founder: bytes, nonce: bytes) -> bytes:
    return hashlib.sha256(_MESH_DOMAIN + founder + nonce).digest()


def actor_key(actor: bytes) -> bytes:
    """The device key inside an actor id (the actor minus its incarnation suffix)."""
    return bytes(actor[:KEY_BYTES])


@dataclass(frozen=True, slots=True)
class CutoffHead:
    """Where a revoked device's history in one document ends: its change ``seq`` by ``actor``
    whose hash is ``hash``. Its changes valid after revocation are exactly the ancestors of
    these heads (SPEC-005 §5.4)."""

    actor: bytes
    seq: int
    hash: bytes


#: doc id -> actor -> the head that actor's valid changes end at.
Cutoff = dict[str, dict[bytes, CutoffHead]]


@dataclass(frozen=True, slots=True)
class Cert:
    """One signed roster statement. ``body`` is a dict; ``raw`` the exact bytes signed.

    ``cutoff`` is the parsed, validated cutoff of a tombstone (empty for other kinds)."""

    kind: str
    body: dict
    signer: bytes
    raw: bytes
    signature: bytes
    cutoff: Cutoff = field(default_factory=dict, compare=False)

    @property
    def cert_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def subject(self) -> bytes | None:
        return self.body.get("subject")

    def encode(self) -> bytes:
        return msgpack.packb([self.raw, self.signature], use_bin_type=True)

    def cutoff_summary(self) -> dict[str, list[dict[str, object]]]:
        """The cutoff for people and JSON: per document, each actor's last valid change."""
        return {doc: [{"actor": h.actor.hex(), "seq": h.seq, "head": h.hash.hex()}
                      for h in heads.values()] for doc, heads in self.cutoff.items()}

    def verify(self) -> bool:
        return verify_signature(self.signer, _CERT_DOMAIN + self.raw, self.signature)


def _issue(key: DeviceKey, body: dict) -> Cert:
    raw = msgpack.packb(body, use_bin_type=True)
    sig = key.sign(_CERT_DOMAIN + raw)
    return parse_cert(msgpack.packb([raw, sig], use_bin_type=True))


# -- decoding: every field checked by type and bound ---------------------------------------------
def _bytes(size: int):
    def check(v: object) -> bool:
        return isinstance(v, bytes) and len(v) == size
    check.__doc__ = f"{size} bytes"
    return check


def _text(limit: int):
    def check(v: object) -> bool:
        return isinstance(v, str) and len(v) <= limit
    check.__doc__ = f"a string of at most {limit} characters"
    return check


def _kept(v: object) -> bool:
    return (
        isinstance(v, list)
        and len(v) <= MAX_KEPT
        and all(isinstance(k, str) and _CERT_ID_RE.fullmatch(k) for k in v)
    )


_kept.__doc__ = f"a list of at most {MAX_KEPT} certificate ids"
_KEY, _NONCE = _bytes(KEY_BYTES), _bytes(16)
_SCHEMAS: dict[tuple[str, int], dict[str, tuple[object, bool]]] = {
    # field -> (check, required)
    ("genesis", 1): {"founder": (_KEY, True), "nonce": (_NONCE, True),
                     "name": (_text(MAX_NAME), True), "device_name": (_text(MAX_NAME), False),
                     "at": (_text(MAX_AT), True)},
    ("endorse", 1): {"mesh": (_KEY, True), "subject": (_KEY, True),
                     "name": (_text(MAX_NAME), True), "issuer": (_KEY, True),
                     "at": (_text(MAX_AT), True)},
    # v1 tombstones named a bare seq per document; they still revoke, but their cutoff is
    # read as empty (nothing of the subject stays valid), because a bare seq lets a thief
    # mint a fresh low-numbered branch (SPEC-005 §5.3).
    ("revoke", 1): {"mesh": (_KEY, True), "subject": (_KEY, True), "issuer": (_KEY, True),
                    "at": (_text(MAX_AT), True), "cutoff": (lambda v: isinstance(v, dict), True),
                    "kept": (_kept, False), "reason": (_text(MAX_REASON), False)},
    ("revoke", 2): {"mesh": (_KEY, True), "subject": (_KEY, True), "issuer": (_KEY, True),
                    "at": (_text(MAX_AT), True), "cutoff": (lambda v: isinstance(v, dict), True),
                    "kept": (_kept, False), "reason": (_text(MAX_REASON), False)},
}


def _parse_cutoff(subject: bytes, raw: dict) -> Cutoff:
    """``{doc id: [[actor, seq, hash], ...]}``, each actor the subject's own."""
    if len(raw) > MAX_CUTOFF_DOCS:
        raise CertError(f"cutoff names more than {MAX_CUTOFF_DOCS} documents")
    out: Cutoff = {}
    for doc_id, heads in raw.items():
        if not valid_doc_id(doc_id):
            raise CertError("cutoff names an invalid document id")
        if not isinstance(heads, list) or len(heads) > MAX_CUTOFF_ACTORS:
            raise CertError("cutoff heads of a document must be a short list")
        per_actor: dict[bytes, CutoffHead] = {}
        for head in heads:
            if not (isinstance(head, list) and len(head) == 3):
                raise CertError("a cutoff head is [actor, seq, hash]")
            actor, seq, digest = head
            if not (isinstance(actor, bytes) and len(actor) in ACTOR_BYTES
                    and actor_key(actor) == subject):
                raise CertError("a cutoff head names an actor that is not the subject's")
            if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
                raise CertError("a cutoff head's seq is out of range")
            if not (isinstance(digest, bytes) and len(digest) == HASH_BYTES):
                raise CertError("a cutoff head's hash must be 32 bytes")
            if actor in per_actor:
                raise CertError("a cutoff names one actor twice in a document")
            per_actor[actor] = CutoffHead(actor, seq, digest)
        out[doc_id] = per_actor
    return out


def parse_cert(data: bytes) -> Cert:
    """Parse and check a certificate's shape (every field, by type and bound), not its signature.

    Cheap: the caller filters by issuer before paying for :meth:`Cert.verify`."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_CERT_BYTES:
        raise CertError("certificate missing or larger than its bound")
    try:
        raw, sig = msgpack.unpackb(bytes(data), raw=False, max_bin_len=MAX_CERT_BYTES)
        body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise CertError(f"malformed certificate: {type(exc).__name__}") from exc
    if not isinstance(body, dict) or not isinstance(sig, bytes) or len(sig) != 64:
        raise CertError("certificate body or signature of the wrong shape")
    kind, version = body.get("t"), body.get("v")
    if type(version) is not int or type(kind) is not str or (kind, version) not in _SCHEMAS:
        raise CertError("certificate of unknown kind or version")
    for name, (check, required) in _SCHEMAS[(kind, version)].items():
        if name not in body:
            if required:
                raise CertError(f"certificate field {name!r} is missing")
            continue
        if not check(body[name]):  # type: ignore[operator]
            raise CertError(f"certificate field {name!r} must be {check.__doc__ or 'valid'}")
    signer = body["founder"] if kind == "genesis" else body["issuer"]
    cutoff: Cutoff = {}
    if kind == "revoke" and version == 2:
        cutoff = _parse_cutoff(body["subject"], body["cutoff"])
    return Cert(kind, body, signer, bytes(raw), sig, cutoff)


def decode_cert(data: bytes) -> Cert:
    """Parse a certificate and check its signature (not yet its place in a roster)."""
    cert = parse_cert(data)
    if not cert.verify():
        raise CertError("certificate signature does not verify")
    return cert


def new_genesis(key: DeviceKey, name: str, device_name: str) -> Cert:
    return _issue(key, {"t": "genesis", "v": 1, "founder": key.public_key,
                        "nonce": os.urandom(16), "name": name[:MAX_NAME],
                        "device_name": device_name[:MAX_NAME], "at": now_iso()})


def new_endorsement(key: DeviceKey, mesh_id: bytes, subject: bytes, name: str) -> Cert:
    return _issue(key, {"t": "endorse", "v": 1, "mesh": mesh_id, "subject": subject,
                        "name": name[:MAX_NAME], "issuer": key.public_key, "at": now_iso()})


def new_tombstone(
    key: DeviceKey,
    mesh_id: bytes,
    subject: bytes,
    cutoff: Mapping[str, Iterable[tuple[bytes, int, bytes]]],
    kept: Iterable[str] = (),
    reason: str = "",
) -> Cert:
    """A signed revocation. ``cutoff`` maps each document to the subject's heads there, as
    (actor, seq, hash); ``kept`` lists the certificates the subject issued that stay valid."""
    return _issue(key, {
        "t": "revoke", "v": 2, "mesh": mesh_id, "subject": subject, "issuer": key.public_key,
        "at": now_iso(),
        "cutoff": {d: [[a, s, h] for a, s, h in heads] for d, heads in cutoff.items()},
        "kept": sorted(set(kept)), "reason": reason[:MAX_REASON],
    })


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    code: str = ""
    detail: str = ""
    #: For a revoked author: the cutoff head this change must be an ancestor of.
    needs: CutoffHead | None = None


@dataclass(frozen=True, slots=True)
class _Derived:
    founder: bytes | None
    mesh_name: str
    members: dict[bytes, str]
    revoked: dict[bytes, Cutoff]
    revoked_info: dict[bytes, Cert]
    ever: dict[bytes, str]
    depth: dict[bytes, int]


_EMPTY = _Derived(None, "", {}, {}, {}, {}, {})


class Roster:
    """Members, revocations and cutoffs derived from the certificates of one mesh."""

    def __init__(self, mesh_id: bytes) -> None:
        self.mesh_id = mesh_id
        self.certs: dict[str, Cert] = {}
        self._d = _EMPTY

    # Read-only views of the current derivation (swapped whole by _derive).
    founder = property(lambda self: self._d.founder)
    mesh_name = property(lambda self: self._d.mesh_name)
    members = property(lambda self: self._d.members)
    revoked = property(lambda self: self._d.revoked)
    revoked_info = property(lambda self: self._d.revoked_info)
    ever = property(lambda self: self._d.ever)
    depth = property(lambda self: self._d.depth)

    @classmethod
    def build(cls, mesh_id: bytes, certs: Iterable[Cert]) -> Roster:
        roster = cls(mesh_id)
        roster.add_many(certs)
        return roster

    def belongs(self, cert: Cert) -> bool:
        if cert.kind == "genesis":
            return mesh_id_for(cert.body["founder"], cert.body["nonce"]) == self.mesh_id
        return cert.body["mesh"] == self.mesh_id

    def add(self, cert: Cert) -> bool:
        """Add a certificate; True when it was new and belongs to this mesh."""
        return self.add_many([cert]) == 1

    def add_many(self, certs: Iterable[Cert]) -> int:
        """Add certificates (already signature-checked) and derive the roster once."""
        added = 0
        for cert in certs:
            if cert.cert_id not in self.certs and self.belongs(cert):
                self.certs[cert.cert_id] = cert
                added += 1
        if added or self._d is _EMPTY:
            self._derive()
        return added

    def _derive(self) -> None:
        try:
            derived = derive(self.mesh_id, self.certs.values())
        except Exception:  # a bug here must not dissolve the mesh: keep the last good roster
            log.exception("deriving the roster failed; keeping the previous one")
            return
        self._d = derived

    # -- questions -------------------------------------------------------------------------------
    def is_member(self, key: bytes) -> bool:
        return key in self._d.members

    def revocation(self, key: bytes) -> dict[str, str] | None:
        """Who revoked ``key``, when and why, from its counted tombstone; None if not revoked."""
        cert = self._d.revoked_info.get(key)
        if key not in self._d.revoked or cert is None:
            return None
        return {"by": device_id(cert.signer), "by_name": self._d.ever.get(cert.signer, ""),
                "at": str(cert.body.get("at", "")), "reason": str(cert.body.get("reason", ""))}

    def revocation_proof(self, key: bytes) -> list[Cert]:
        """The tombstone that revokes ``key`` and the chain that admits its issuer: what a
        revoked device needs to verify, by itself, that it was revoked (SPEC-005 §9.8)."""
        cert = self._d.revoked_info.get(key)
        if key not in self._d.revoked or cert is None:
            return []
        return [*self.chain_of(cert.signer), cert]

    def chain_of(self, key: bytes) -> list[Cert]:
        """The genesis and the endorsements leading from the founder to ``key`` (shortest)."""
        d = self._d
        if d.founder is None or key not in d.members:
            return []
        genesis = [c for c in self.certs.values() if c.kind == "genesis" and self.belongs(c)]
        chain: list[Cert] = []
        current, seen = key, set()
        while current != d.founder and current not in seen:
            seen.add(current)
            step = min(
                (c for c in self.certs.values() if c.kind == "endorse"
                 and c.body["subject"] == current and c.signer in d.depth
                 and d.depth[c.signer] < d.depth.get(current, 1 << 30)),
                key=lambda c: (d.depth[c.signer], c.cert_id), default=None,
            )
            if step is None:
                return []
            chain.append(step)
            current = step.signer
        return sorted(genesis, key=lambda c: c.cert_id)[:1] + chain[::-1]

    def may_author(self, actor: bytes, doc_id: str, seq: int) -> Verdict:
        """May ``actor``'s change number ``seq`` in ``doc_id`` be accepted?

        A revoked author's change passes only up to its cutoff head, and only as an ancestor of
        that head: the verdict names the head (``needs``) for the caller to check."""
        key = actor_key(actor)
        if key in self._d.members:
            return Verdict(True)
        cutoff = self._d.revoked.get(key)
        if cutoff is not None:
            head = cutoff.get(doc_id, {}).get(bytes(actor))
            if head is not None and seq <= head.seq:
                return Verdict(True, needs=head)
            return Verdict(
                False, "revoked",
                f"device {device_id(key)} was revoked; its change {seq} in {doc_id} is not "
                "before its cutoff",
            )
        return Verdict(False, "unknown_signer", f"{device_id(key)} is not in the roster")


def derive(mesh_id: bytes, certs: Iterable[Cert]) -> _Derived:
    """Membership as a pure function of the certificate set (SPEC-005 §5.4)."""
    certs = sorted(certs, key=lambda c: c.cert_id)
    genesis = [c for c in certs if c.kind == "genesis"
               and mesh_id_for(c.body["founder"], c.body["nonce"]) == mesh_id]
    if not genesis:
        return _EMPTY
    g = genesis[0]
    founder = g.body["founder"]
    endorsements = [c for c in certs if c.kind == "endorse" and c.body["mesh"] == mesh_id]
    tombstones = [c for c in certs if c.kind == "revoke" and c.body["mesh"] == mesh_id]

    # Ever: everyone ever admitted, ignoring revocation; depth = admission distance (BFS),
    # the seniority that settles conflicting revocations. Admissions deeper than MAX_DEPTH
    # are ignored, which bounds the work a chain of endorsements can cause.
    by_issuer: dict[bytes, list[Cert]] = {}
    for c in endorsements:
        by_issuer.setdefault(c.signer, []).append(c)
    ever: dict[bytes, str] = {founder: g.body.get("device_name", "founder")}
    depth: dict[bytes, int] = {founder: 0}
    frontier = [founder]
    while frontier and depth[frontier[0]] < MAX_DEPTH:
        nxt = []
        for issuer in frontier:
            for c in by_issuer.get(issuer, ()):
                if c.body["subject"] not in ever:
                    ever[c.body["subject"]] = c.body["name"]
                    depth[c.body["subject"]] = depth[issuer] + 1
                    nxt.append(c.body["subject"])
        frontier = nxt

    # Counting tombstones, level by level of seniority: a tombstone counts when its issuer is
    # admitted and not already revoked by a counting tombstone of a more senior level, or when
    # that revocation kept it. Two equals that revoke each other are judged together, so both
    # are revoked, and then neither's other acts count unless kept; a self-revocation is
    # judged first in the same way.
    counted: list[Cert] = []
    for level in sorted({depth[t.signer] for t in tombstones if t.signer in depth}):
        at_level = [t for t in tombstones if depth.get(t.signer) == level]
        pairs = {(t.signer, t.body["subject"]) for t in at_level}
        for mutual in (True, False):
            # First equals that revoke each other, and self-revocations (judged together: all
            # are out), then the level's other acts, which count only if their issuer still
            # stands or was kept.
            auth, revoked, kept = _authorise(founder, by_issuer, counted, depth)
            counted.extend(
                t for t in at_level
                if ((t.body["subject"], t.signer) in pairs) == mutual
                and t.signer in auth
                and (t.signer not in revoked or t.cert_id in kept.get(t.signer, set()))
            )
    auth, revoked, kept = _authorise(founder, by_issuer, counted, depth)
    members = {k: ever[k] for k in auth if k not in revoked}
    revoked_in = {k: v for k, v in revoked.items() if k in auth}
    info = {}
    for t in counted:
        subject = t.body["subject"]
        earlier = subject not in info or t.body["at"] < info[subject].body["at"]
        if subject in revoked_in and earlier:
            info[subject] = t
    return _Derived(founder, g.body["name"], members, revoked_in, info, ever, depth)


def _authorise(
    founder: bytes, by_issuer: Mapping[bytes, Sequence[Cert]], tombstones: Sequence[Cert],
    depth: Mapping[bytes, int],
) -> tuple[set[bytes], dict[bytes, Cutoff], dict[bytes, set[str]]]:
    """Auth, the combined cutoff of each revoked key, and what each revocation kept.

    Auth is found breadth-first over each issuer's endorsements: linear in their number, and
    within Ever (``depth``): a member's chain of endorsements deeper than MAX_DEPTH admitted
    keys Ever never held, and reading their names failed the whole derivation, so a node
    that restarted had no roster and quarantined every document (found by an attacker's
    read)."""
    by_subject: dict[bytes, list[Cert]] = {}
    for t in tombstones:
        by_subject.setdefault(t.body["subject"], []).append(t)
    revoked: dict[bytes, Cutoff] = {}
    kept: dict[bytes, set[str]] = {}
    for subject, ts in by_subject.items():
        revoked[subject] = _combine([t.cutoff for t in ts])
        kept[subject] = set.intersection(*(set(t.body.get("kept", [])) for t in ts))
    auth = {founder}
    frontier = [founder]
    while frontier:
        nxt = []
        for issuer in frontier:
            for c in by_issuer.get(issuer, ()):
                subject = c.body["subject"]
                if subject not in auth and subject in depth and (
                        issuer not in revoked or c.cert_id in kept[issuer]):
                    auth.add(subject)
                    nxt.append(subject)
        frontier = nxt
    return auth, revoked, kept


def _combine(cutoffs: Sequence[Cutoff]) -> Cutoff:
    """Several tombstones of one key: a document or actor any of them omits allows nothing;
    otherwise the lowest head wins (revocation only removes; SPEC-005 §5.7)."""
    docs = set(cutoffs[0]).intersection(*cutoffs[1:]) if cutoffs else set()
    out: Cutoff = {}
    for doc in docs:
        actors = set(cutoffs[0][doc]).intersection(*(c[doc] for c in cutoffs[1:]))
        out[doc] = {a: min((c[doc][a] for c in cutoffs), key=lambda h: (h.seq, h.hash))
                    for a in actors}
    return out
