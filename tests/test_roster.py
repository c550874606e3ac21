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
H = bytes(32)


def _cut(key: DeviceKey, seq: int, doc: str = DOC, digest: bytes = H) -> dict:
    """A cutoff naming ``key``'s head in ``doc`` at ``seq`` (the hash is only a name here)."""
    return {doc: [(key.public_key, seq, digest)]}


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
    t = new_tombstone(founder, mesh, b.public_key, _cut(b, 5))
    r = Roster.build(mesh, [g, e, t])
    assert b.public_key not in r.members
    assert r.may_author(b.public_key, DOC, 5).ok
    assert r.may_author(b.public_key, DOC, 5).needs.hash == H  # only as an ancestor of it
    later = r.may_author(b.public_key, DOC, 6)
    assert not later.ok and later.code == "revoked"
    assert not r.may_author(b.public_key, "memory/note/2026-11/1", 1).ok  # omitted doc: 0


def test_a_thief_cannot_undo_its_revocation():
    """SPEC-005 §5.7: tombstones combine by minimum cutoff, so a revoked device's own
    generous tombstone of itself changes nothing."""
    founder, g, mesh = _mesh()
    thief = DeviceKey.generate()
    e = new_endorsement(founder, mesh, thief.public_key, "stolen")
    owner_t = new_tombstone(founder, mesh, thief.public_key, _cut(thief, 3))
    thief_t = new_tombstone(thief, mesh, thief.public_key, _cut(thief, 10**9))
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
    t = new_tombstone(founder, mesh, b.public_key, {}, kept=[ek.cert_id])
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
    new_tombstone(_MESH[0], _MESH[2], _keys[1].public_key, _cut(_keys[1], 2)),
    new_tombstone(_keys[3], _MESH[2], _keys[1].public_key, _cut(_keys[1], 7)),
    new_tombstone(_keys[2], _MESH[2], _MESH[0].public_key, {}),  # a junior revokes the founder
    new_tombstone(_keys[3], _MESH[2], _keys[0].public_key, {}),  # siblings revoke each other
    new_tombstone(_keys[0], _MESH[2], _keys[3].public_key, {}),
    new_endorsement(_keys[4], _MESH[2], _keys[4].public_key, "self"),
]


# -- a hostile member (SPEC-005 §5.3, §5.4) ------------------------------------------------------
import msgpack  # noqa: E402

from crdt.roster import _CERT_DOMAIN, Cert, CertError, parse_cert  # noqa: E402


def _signed(key: DeviceKey, body: dict) -> bytes:
    """A certificate with any body at all, validly signed: what a member key can produce."""
    raw = msgpack.packb(body, use_bin_type=True)
    return msgpack.packb([raw, key.sign(_CERT_DOMAIN + raw)], use_bin_type=True)


def _revoke_body(by: DeviceKey, mesh_id: bytes, subject_key: bytes, **over) -> dict:
    body = {"t": "revoke", "v": 2, "mesh": mesh_id, "subject": subject_key,
            "issuer": by.public_key, "at": "2026-12-01T00:00:00Z", "cutoff": {},
            "kept": [], "reason": ""}
    body.update(over)
    return body


def test_a_mistyped_revocation_is_refused_and_the_roster_stays_whole():
    """SPEC-005 §5.3: a validly signed revocation whose `kept` is not a list of certificate ids
    is refused when decoded (it used to raise mid-derivation and empty the member list)."""
    founder, g, mesh = _mesh()
    b, c = DeviceKey.generate(), DeviceKey.generate()
    eb = new_endorsement(founder, mesh, b.public_key, "b")
    ec = new_endorsement(founder, mesh, c.public_key, "c")
    r = Roster.build(mesh, [g, eb, ec])
    bad = _signed(b, _revoke_body(b, mesh, c.public_key, kept=5))
    try:
        decode_cert(bad)
        raise AssertionError("a revocation with a mistyped 'kept' was accepted")
    except CertError as exc:
        assert "kept" in str(exc)
    assert set(r.members) == {founder.public_key, b.public_key, c.public_key}


_FIELDS = ["mesh", "subject", "issuer", "at", "cutoff", "kept", "reason", "v", "t"]
_I64 = st.integers(-(2**63), 2**63 - 1)  # what msgpack can carry
_JUNK = st.one_of(
    st.none(), st.booleans(), _I64, st.floats(allow_nan=False), st.text(max_size=5),
    st.binary(max_size=40), st.lists(_I64, max_size=3),
    st.dictionaries(st.text(max_size=3), _I64, max_size=3),
    st.just("x" * 600), st.just(["0" * 64] * 3), st.just({DOC: [[b"\x01" * 32, 0, H]]}),
    st.just({DOC: [[b"\x01" * 31, 1, H]]}), st.just({"../etc": []}),
)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=_JUNK)
def test_any_mistyped_certificate_field_is_refused_never_raised(field, value):
    """SPEC-005 §5.3: every field is checked by type and bound; whatever a member key signs,
    decoding raises only CertError and a roster built with it still holds the members."""
    founder, g, mesh = _MESH_FOR_FUZZ
    body = _revoke_body(founder, mesh, _FUZZ_MEMBER.public_key, **{field: value})
    raw = _signed(founder, body)
    try:
        cert = decode_cert(raw)
    except CertError:
        cert = None
    certs = [g, _FUZZ_ENDORSE] + ([cert] if cert else [])
    r = Roster.build(mesh, certs)
    assert founder.public_key in r.members
    if cert is not None:  # the junk happened to be valid: it must then be a real revocation
        assert isinstance(cert, Cert) and cert.kind == "revoke"


_MESH_FOR_FUZZ = _mesh()
_FUZZ_MEMBER = DeviceKey.generate()
_FUZZ_ENDORSE = new_endorsement(_MESH_FOR_FUZZ[0], _MESH_FOR_FUZZ[2], _FUZZ_MEMBER.public_key, "m")


def test_oversized_certificate_is_refused_before_signature_work():
    """SPEC-005 §5.3: a certificate is bounded as bytes and per field."""
    founder, _g, mesh = _mesh()
    huge = _signed(founder, _revoke_body(founder, mesh, founder.public_key, reason="r" * 5000))
    try:
        parse_cert(huge)
        raise AssertionError("an oversized reason was accepted")
    except CertError:
        pass


def test_a_revoked_thief_cannot_revoke_the_founder():
    """SPEC-005 §5.4 (revocation issuers): after the owner revokes a stolen key, that key's
    own tombstone of the founder does not count, so the mesh keeps its members."""
    founder, g, mesh = _mesh()
    thief, desktop = DeviceKey.generate(), DeviceKey.generate()
    et = new_endorsement(founder, mesh, thief.public_key, "laptop")
    ed = new_endorsement(founder, mesh, desktop.public_key, "desktop")
    owner_t = new_tombstone(founder, mesh, thief.public_key, {})
    thief_t = new_tombstone(thief, mesh, founder.public_key, {})
    r = Roster.build(mesh, [g, et, ed, owner_t, thief_t])
    assert set(r.members) == {founder.public_key, desktop.public_key}
    assert founder.public_key not in r.revoked


def test_a_thief_acting_first_loses_to_the_more_senior_founder():
    """SPEC-005 §5.4: revocations are judged by seniority, so a stolen laptop that revokes the
    founder before the owner revokes the laptop still loses once both are known."""
    founder, g, mesh = _mesh()
    thief, desktop, accomplice = (DeviceKey.generate() for _ in range(3))
    et = new_endorsement(founder, mesh, thief.public_key, "laptop")
    ed = new_endorsement(founder, mesh, desktop.public_key, "desktop")
    ea = new_endorsement(thief, mesh, accomplice.public_key, "accomplice")
    thief_revokes_founder = new_tombstone(thief, mesh, founder.public_key, {})
    accomplice_revokes_desktop = new_tombstone(accomplice, mesh, desktop.public_key, {})
    before = Roster.build(mesh, [g, et, ed, ea, thief_revokes_founder,
                                 accomplice_revokes_desktop])
    assert founder.public_key not in before.members  # the damage, until the owner acts
    owner_t = new_tombstone(founder, mesh, thief.public_key, {})
    after = Roster.build(mesh, [*before.certs.values(), owner_t])
    assert set(after.members) == {founder.public_key, desktop.public_key}
    assert accomplice.public_key not in after.members
    assert accomplice.public_key not in after.revoked  # never admitted by a valid chain now


def test_equally_senior_devices_that_revoke_each_other_are_both_out():
    """SPEC-005 §5.4: two devices of one seniority revoking each other are both revoked (a
    revocation only removes), and neither's other revocations count unless kept."""
    founder, g, mesh = _mesh()
    a, b, phone = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    certs = [g, *(new_endorsement(founder, mesh, k.public_key, n)
                  for k, n in ((a, "a"), (b, "b"), (phone, "phone")))]
    certs += [new_tombstone(a, mesh, b.public_key, {}), new_tombstone(b, mesh, a.public_key, {}),
              new_tombstone(b, mesh, phone.public_key, {})]
    r = Roster.build(mesh, certs)
    assert set(r.members) == {founder.public_key, phone.public_key}


def test_endorsements_by_a_revoked_key_lapse_unless_kept():
    """SPEC-005 §5.4: a device a thief admitted is not a member once the thief is revoked
    without keeping that admission; it is not 'revoked' either, so its changes are unknown."""
    founder, g, mesh = _mesh()
    thief, admitted = DeviceKey.generate(), DeviceKey.generate()
    certs = [g, new_endorsement(founder, mesh, thief.public_key, "t"),
             new_endorsement(thief, mesh, admitted.public_key, "a"),
             new_tombstone(founder, mesh, thief.public_key, {})]
    r = Roster.build(mesh, certs)
    verdict = r.may_author(admitted.public_key, DOC, 1)
    assert not verdict.ok and verdict.code == "unknown_signer"


def test_cutoff_heads_bind_each_incarnation():
    """SPEC-005 §5.4: a cutoff names heads per actor (key + incarnation); an incarnation the
    revoker never saw gets nothing, whatever its numbers."""
    founder, g, mesh = _mesh()
    b = DeviceKey.generate()
    inc1, inc2 = b.public_key + b"\x01" * 8, b.public_key + b"\x02" * 8
    t = new_tombstone(founder, mesh, b.public_key, {DOC: [(inc1, 4, H)]})
    r = Roster.build(mesh, [g, new_endorsement(founder, mesh, b.public_key, "b"), t])
    assert r.may_author(inc1, DOC, 4).ok
    assert not r.may_author(inc1, DOC, 5).ok
    assert not r.may_author(inc2, DOC, 1).ok
    assert not r.may_author(b.public_key, DOC, 1).ok
