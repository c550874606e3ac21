"""The roster as self-verifying certificates (SPEC-005 §5): membership, revocation, order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.keys import DeviceKey
from crdt.roster import (
    Roster,
    decode_cert,
    mesh_id_for,
    new_endorsement,
    new_genesis,
    new_tombstone,
)

DOC = "memory/note/2026-11/0"


def _mesh():
    founder = DeviceKey.generate()
    g = new_genesis(founder, "home", "laptop")
    return founder, g, mesh_id_for(founder.public_key, g.body["nonce"])


def test_founder_and_endorsed_devices_are_members():
    """SPEC-005 §5.4: the founder and every device endorsed by a member are members."""
    founder, g, mesh = _mesh()
    b, c = DeviceKey.generate(), DeviceKey.generate()
    e1 = new_endorsement(founder, mesh, b.public_key, "b")
    e2 = new_endorsement(b, mesh, c.public_key, "c")
    r = Roster.build(mesh, [g, e1, e2])
    assert set(r.members) == {founder.public_key, b.public_key, c.public_key}
    assert r.may_author(c.public_key, DOC, 1).ok


def test_only_members_can_add_members():
    """SPEC-005 §5.5: an endorsement issued by an outsider admits nobody."""
    _founder, g, mesh = _mesh()
    outsider, friend = DeviceKey.generate(), DeviceKey.generate()
    r = Roster.build(mesh, [g, new_endorsement(outsider, mesh, friend.public_key, "friend")])
    assert friend.public_key not in r.members
    v = r.may_author(friend.public_key, DOC, 1)
    assert not v.ok and v.code == "unknown_signer"


def test_certificates_of_another_mesh_are_ignored():
    """SPEC-005 §5.3: a certificate for another mesh does not count here."""
    founder, g, mesh = _mesh()
    _, _, other_mesh = _mesh()
    b = DeviceKey.generate()
    r = Roster.build(mesh, [g, new_endorsement(founder, other_mesh, b.public_key, "b")])
    assert b.public_key not in r.members


def test_revocation_cutoff_accepts_before_and_rejects_after():
    """SPEC-005 §5.4, §6: a revoked device's changes up to the cutoff stay valid; later ones
    are rejected with 'revoked'."""
    founder, g, mesh = _mesh()
    b = DeviceKey.generate()
    e = new_endorsement(founder, mesh, b.public_key, "b")
    t = new_tombstone(founder, mesh, b.public_key, {DOC: 5})
    r = Roster.build(mesh, [g, e, t])
    assert b.public_key not in r.members
    assert r.may_author(b.public_key, DOC, 5).ok
    later = r.may_author(b.public_key, DOC, 6)
    assert not later.ok and later.code == "revoked"
    assert not r.may_author(b.public_key, "memory/note/2026-11/1", 1).ok  # omitted doc: 0


def test_a_thief_cannot_undo_its_revocation():
    """SPEC-005 §5.7: tombstones combine by minimum cutoff, so a revoked device's own
    generous tombstone of itself changes nothing."""
    founder, g, mesh = _mesh()
    thief = DeviceKey.generate()
    e = new_endorsement(founder, mesh, thief.public_key, "stolen")
    owner_t = new_tombstone(founder, mesh, thief.public_key, {DOC: 3})
    thief_t = new_tombstone(thief, mesh, thief.public_key, {DOC: 10**9})
    r = Roster.build(mesh, [g, e, owner_t, thief_t])
    assert r.may_author(thief.public_key, DOC, 3).ok
    assert not r.may_author(thief.public_key, DOC, 4).ok


def test_revoked_device_cannot_be_reintroduced_and_its_endorsements_lapse():
    """SPEC-005 §5.5-5.6: a new endorsement of a revoked key does not readmit it; endorsements
    the revoked device issued stay valid only if the tombstone keeps them."""
    founder, g, mesh = _mesh()
    b, kept, dropped = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    eb = new_endorsement(founder, mesh, b.public_key, "b")
    ek = new_endorsement(b, mesh, kept.public_key, "kept")
    ed = new_endorsement(b, mesh, dropped.public_key, "dropped")
    t = new_tombstone(founder, mesh, b.public_key, {}, kept_endorsements=[ek.cert_id])
    again = new_endorsement(founder, mesh, b.public_key, "b again")
    r = Roster.build(mesh, [g, eb, ek, ed, t, again])
    assert b.public_key not in r.members
    assert kept.public_key in r.members
    assert dropped.public_key not in r.members


def test_certificates_survive_encoding_and_reject_tampering():
    """SPEC-005 §5.2: certificates verify from their bytes; an altered one is refused."""
    _founder, g, _mesh_id = _mesh()
    raw = g.encode()
    assert decode_cert(raw).cert_id == g.cert_id
    bad = bytearray(raw)
    bad[len(bad) // 2] ^= 0x01
    try:
        decode_cert(bytes(bad))
        raise AssertionError("a tampered certificate was accepted")
    except ValueError:
        pass


@settings(max_examples=25, deadline=None)
@given(st.randoms())
def test_membership_does_not_depend_on_arrival_order(rnd: random.Random):
    """SPEC-005 §5.4: the roster is a function of the certificate set, not of its order."""
    _founder, _g, mesh = _MESH
    certs = list(_CERTS)
    reference = Roster.build(mesh, certs)
    rnd.shuffle(certs)
    incremental = Roster(mesh)
    for c in certs:
        incremental.add(c)
    assert incremental.members == reference.members
    assert incremental.revoked == reference.revoked


_MESH = _mesh()
_keys = [DeviceKey.generate() for _ in range(5)]
_CERTS = [
    _MESH[1],
    new_endorsement(_MESH[0], _MESH[2], _keys[0].public_key, "k0"),
    new_endorsement(_keys[0], _MESH[2], _keys[1].public_key, "k1"),
    new_endorsement(_keys[1], _MESH[2], _keys[2].public_key, "k2"),
    new_endorsement(_MESH[0], _MESH[2], _keys[3].public_key, "k3"),
    new_tombstone(_MESH[0], _MESH[2], _keys[1].public_key, {DOC: 2}),
    new_tombstone(_keys[3], _MESH[2], _keys[1].public_key, {DOC: 7}),
    new_endorsement(_keys[4], _MESH[2], _keys[4].public_key, "self"),
]
