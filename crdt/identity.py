"""The Identity layer's document: the mesh, the operator profile and the roster certificates.

The roster's authority is the certificates themselves (see ``roster``); the document carries
them so they travel and persist with everything else, and certificates found in it after a
sync are fed back into the roster.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

import msgpack
from automerge.core import ROOT, ObjType, ScalarType, Transaction, extract

from .documents import Repo
from .keys import DeviceKey, device_id
from .roster import (
    Cert,
    CertError,
    Roster,
    actor_key,
    decode_cert,
    mesh_id_for,
    new_endorsement,
    new_genesis,
    new_tombstone,
)
from .store import Store

IDENTITY_DOC = "identity"
PROFILE_FIELDS = ("display_name", "email", "timezone", "locale", "bio")
# The profile's rules, for every caller (the API and the offline CLI): the bounds keep one field
# from swallowing the identity document, the patterns keep timezone and locale usable as
# identifiers. Each field: (max length, full-match pattern or None, what it must look like).
PROFILE_RULES: dict[str, tuple[int, str | None, str]] = {
    "display_name": (100, r"(?s).+", "1 to 100 characters"),
    "email": (254, r"[^@]*@[^@]*", "an email address"),
    "timezone": (64, r"[A-Za-z0-9_+\-/]*", "a time zone name such as Europe/Paris"),
    "locale": (35, r"([A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*)?", "a language tag such as en-GB"),
    "bio": (2000, None, "at most 2000 characters"),
}


class ProfileError(ValueError):
    """A profile change breaks a rule of PROFILE_RULES (one sentence)."""


def check_profile_changes(changes: Mapping[str, object]) -> None:
    """Refuse unknown fields and values outside PROFILE_RULES; None clears a field."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise ProfileError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
    if not changes:
        raise ProfileError("say which profile fields to change")
    for name, value in changes.items():
        if value is None:
            continue
        limit, pattern, shape = PROFILE_RULES[name]
        if not isinstance(value, str) or len(value) > limit or (
                pattern is not None and re.fullmatch(pattern, value) is None):
            raise ProfileError(f"{name} must be {shape}")


class NoMeshError(Exception):
    """This device has a key but belongs to no mesh yet."""


def stored_mesh_id(store: Store) -> bytes | None:
    return store.get_identity_value("mesh_id")


def create_mesh(store: Store, key: DeviceKey, mesh_name: str, device_name: str) -> Repo:
    """Found a new mesh with this device as its first member and write the first document."""
    if stored_mesh_id(store) is not None:
        raise ValueError("this device already belongs to a mesh")
    genesis = new_genesis(key, mesh_name, device_name)

    mesh_id = mesh_id_for(key.public_key, genesis.body["nonce"])
    store.put_certs([(genesis.cert_id, genesis.encode())])
    store.set_identity_value("mesh_id", mesh_id)
    repo = Repo(store, key, mesh_id)

    def first(tx: Transaction) -> None:
        mesh = tx.put_object(ROOT, "mesh", ObjType.Map)
        tx.put(mesh, "id", ScalarType.Str, mesh_id.hex())
        tx.put(mesh, "name", ScalarType.Str, mesh_name)
        tx.put(mesh, "founder", ScalarType.Str, key.device_id)
        tx.put(mesh, "created_at", ScalarType.Str, genesis.body["at"])
        tx.put_object(ROOT, "profile", ObjType.Map)
        tx.put_object(ROOT, "preferences", ObjType.Map)
        roster = tx.put_object(ROOT, "roster", ObjType.Map)
        tx.put(roster, genesis.cert_id, ScalarType.Bytes, genesis.encode())

    repo.change(IDENTITY_DOC, first)
    return repo


def open_repo(store: Store, key: DeviceKey) -> Repo:
    mesh_id = stored_mesh_id(store)
    if mesh_id is None:
        raise NoMeshError("this device belongs to no mesh yet: run 'maia init --new-mesh' or pair")
    repo = Repo(store, key, mesh_id)
    import_roster_from_doc(repo)
    return repo


def _obj(doc: Any, name: str) -> bytes | None:
    got = doc.get(ROOT, name)
    return got[1] if got is not None and got[0] == ObjType.Map else None


def get_profile(repo: Repo) -> dict[str, str]:
    doc = repo.open(IDENTITY_DOC).doc
    obj = _obj(doc, "profile")
    if obj is None:
        return {}
    return {k: v for k, v in extract(doc, obj).items() if isinstance(v, str)}


def update_profile(repo: Repo, changes: Mapping[str, str | None]) -> dict[str, str]:
    """Set (or, with None, clear) profile fields in one signed change."""
    check_profile_changes(changes)

    def edit(tx: Transaction) -> None:
        got = tx.get(ROOT, "profile")
        obj = got[1] if got is not None else tx.put_object(ROOT, "profile", ObjType.Map)
        for name, value in changes.items():
            if value is None:
                if tx.get(obj, name) is not None:
                    tx.delete(obj, name)
            else:
                tx.put(obj, name, ScalarType.Str, value)

    repo.change(IDENTITY_DOC, edit)
    return get_profile(repo)


def mesh_info(repo: Repo) -> dict[str, str]:
    doc = repo.open(IDENTITY_DOC).doc
    obj = _obj(doc, "mesh")
    info = {k: v for k, v in extract(doc, obj).items()} if obj is not None else {}
    info.setdefault("id", repo.mesh_id.hex())
    return info


def import_roster_from_doc(repo: Repo) -> int:
    """Feed certificates found in the Identity document into the roster (they self-verify)."""
    doc = repo.open(IDENTITY_DOC).doc
    obj = _obj(doc, "roster")
    if obj is None:
        return 0
    known = repo.roster.certs
    raws = [_as_bytes(v) for k, v in extract(doc, obj).items() if k not in known]
    return repo.add_certs([r for r in raws if r is not None])


def _as_bytes(value: object) -> bytes | None:
    """The binding hands Bytes scalars back as bytes or as a list of ints, by path."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    return None


def record_certs(repo: Repo, certs: list[Cert]) -> None:
    """Write certificates into the Identity document so they persist and travel."""
    repo.add_certs([c.encode() for c in certs])

    def edit(tx: Transaction) -> None:
        got = tx.get(ROOT, "roster")
        obj = got[1] if got is not None else tx.put_object(ROOT, "roster", ObjType.Map)
        for cert in certs:
            if tx.get(obj, cert.cert_id) is None:
                tx.put(obj, cert.cert_id, ScalarType.Bytes, cert.encode())

    repo.change(IDENTITY_DOC, edit, roster_change=True)


# -- manual enrolment (until pairing with a short authentication string lands) ------------------
KEY_PREFIX = "maia-key:"
INVITE_PREFIX = "maia-invite:"


def join_request(key: DeviceKey) -> str:
    """What a new device shows so a member can enrol it: its public key, nothing secret."""
    return KEY_PREFIX + base64.urlsafe_b64encode(key.public_key).decode().rstrip("=")


def parse_join_request(text: str) -> bytes:
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a join request starts with '{KEY_PREFIX}'")
    body = text[len(KEY_PREFIX):]
    try:
        pub = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise ValueError("the join request is damaged") from exc
    if len(pub) != 32:
        raise ValueError("the join request is damaged (wrong key length)")
    return pub


def enrol_device(repo: Repo, subject: bytes, name: str) -> str:
    """Endorse ``subject`` as a member (signed by this device) and return its invitation."""
    if not repo.roster.is_member(repo.key.public_key):
        raise ValueError("only a member of the mesh can add devices")
    if subject in repo.roster.revoked:
        raise ValueError("that device was revoked; a revoked device cannot come back")
    cert = new_endorsement(repo.key, repo.mesh_id, subject, name)
    record_certs(repo, [cert])
    blob = msgpack.packb(
        [1, repo.mesh_id, [c.encode() for c in repo.roster.certs.values()]], use_bin_type=True
    )
    return INVITE_PREFIX + base64.urlsafe_b64encode(blob).decode().rstrip("=")


def parse_invitation(text: str) -> tuple[bytes, list[Cert]]:
    """The mesh id and the certificates (each decoded and signature-checked; bad ones skipped)
    an invitation carries. ValueError when it is not an invitation or is damaged."""
    text = text.strip()
    if not text.startswith(INVITE_PREFIX):
        raise ValueError(f"an invitation starts with '{INVITE_PREFIX}'")
    body = text[len(INVITE_PREFIX):]
    try:
        version, mesh_id, certs = msgpack.unpackb(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), raw=False
        )
    except Exception as exc:
        raise ValueError("the invitation is damaged") from exc
    if version != 1 or not isinstance(mesh_id, bytes) or len(mesh_id) != 32 \
            or not isinstance(certs, list):
        raise ValueError("the invitation is of an unknown kind")
    decoded = []
    for raw in certs:
        try:
            decoded.append(decode_cert(raw))
        except (CertError, TypeError, ValueError):
            continue
    return mesh_id, decoded


def accept_invitation(store: Store, key: DeviceKey, text: str) -> Repo:
    """Join the mesh an invitation names, if it really admits this device."""
    mesh_id, decoded = parse_invitation(text)
    existing = stored_mesh_id(store)
    if existing is not None and existing != mesh_id:
        raise ValueError("this device already belongs to another mesh")
    roster = Roster.build(mesh_id, decoded)
    if not roster.is_member(key.public_key):
        raise ValueError("the invitation does not admit this device (was it made for another?)")
    store.put_certs([(c.cert_id, c.encode()) for c in decoded])
    store.set_identity_value("mesh_id", mesh_id)
    return Repo(store, key, mesh_id)


# -- revocation -------------------------------------------------------------------------------
def issued_by(repo: Repo, issuer: bytes) -> list[Cert]:
    """Endorsements and tombstones ``issuer`` signed: what a revocation of it must keep or drop."""
    return sorted(
        (c for c in repo.roster.certs.values() if c.kind in ("endorse", "revoke")
         and c.signer == issuer and c.subject != issuer),
        key=lambda c: (c.kind, c.body["at"], c.cert_id),
    )


def cutoff_heads(repo: Repo, key: bytes) -> dict[str, list[tuple[bytes, int, bytes]]]:
    """Where ``key``'s history ends in every document this node holds: per actor (the key and
    each of its incarnations), its newest change (SPEC-005 §5.9). Only ancestors of these heads
    stay valid once the key is revoked."""
    out: dict[str, list[tuple[bytes, int, bytes]]] = {}
    for doc_id in repo.store.doc_ids():
        actors = [a for a in repo.store.doc_actors(doc_id) if actor_key(a) == key]
        if not actors:
            continue
        newest: dict[bytes, tuple[int, bytes]] = {}
        for c in repo.open(doc_id).doc.get_changes([]):
            if c.actor_id in actors and c.seq > newest.get(c.actor_id, (0, b""))[0]:
                newest[c.actor_id] = (c.seq, c.hash)
        out[doc_id] = [(a, seq, h) for a, (seq, h) in sorted(newest.items())]
    return out


def revoke_device(
    repo: Repo,
    subject: bytes,
    *,
    keep: list[str] | None = None,
    keep_all: bool = False,
    reason: str = "",
) -> Cert:
    """Write a signed tombstone for ``subject`` (SPEC-005 §5.9): its changes up to what this
    node holds stay, everything later is refused by every node, and it can never come back.

    The subject's own endorsements and revocations count afterwards only if kept; the owner
    must say which (``keep`` prefixes of certificate ids, or ``keep_all``)."""
    roster = repo.roster
    me = repo.key.public_key
    if subject == me:
        raise ValueError("a device cannot revoke itself; revoke it from another member")
    if subject in roster.revoked and any(
        c.kind == "revoke" and c.subject == subject and c.signer != subject
        for c in roster.certs.values()
    ):
        # SPEC-005 §5.7: a second tombstone only narrows what both revokers saw. A device's
        # revocation of itself is no reason to refuse: its owner must still be able to drop
        # what the device kept for itself.
        raise ValueError("that device is already revoked")
    if subject not in roster.members and not (
        subject == roster.founder or subject in roster.ever
    ):
        raise ValueError("that device is not a member of this mesh")
    if me not in roster.members and me not in roster.ever:
        raise ValueError("only a member of the mesh can revoke devices")
    issued = issued_by(repo, subject)
    if issued and not keep_all and keep is None:
        listing = ", ".join(
            f"{c.cert_id[:12]} ({'admitted' if c.kind == 'endorse' else 'revoked'} "
            f"{c.body.get('name') or device_id(c.subject)})"
            for c in issued
        )
        raise ValueError(
            f"that device signed other roster entries: {listing}; say which stay with --keep ID "
            "(repeatable) or --keep-all"
        )
    kept = [c.cert_id for c in issued] if keep_all else [
        c.cert_id for c in issued if any(c.cert_id.startswith(k) for k in (keep or []) if k)
    ]
    cert = new_tombstone(repo.key, repo.mesh_id, subject, cutoff_heads(repo, subject), kept,
                         reason)
    # The issuer must still be a member once its own tombstone counts (a revoked device may
    # issue one only when it wins by seniority: SPEC-005 §5.4).
    trial = Roster.build(repo.mesh_id, [*roster.certs.values(), cert])
    if not trial.is_member(me):
        raise ValueError("only a member of the mesh can revoke devices (this device is not one)")
    if subject in trial.members:
        raise ValueError("this device is too junior to revoke that one: the other device "
                         "revoked it first; revoke from a more senior device (the founder)")
    record_certs(repo, [cert])
    return cert
