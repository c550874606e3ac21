"""Signed address records, from a hostile member's side (SPEC-005 §12.9-12.11).

Pure: real keys and real signatures, no network. Each case is what a member key in the wrong
hands could publish; the book must drop it or keep only what is safe to dial.
"""

from __future__ import annotations

import ipaddress
import os
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import DeviceKey
from node.mesh.addresses import (
    DOMAIN,
    MAX_ADDRS,
    MAX_FRAME_BYTES,
    MAX_RECORDS_PER_FRAME,
    TTL,
    AddressBook,
    BadRecord,
    dial_order,
    own_addresses,
    parse_frame,
    parse_record,
    sign_record,
    usable_address,
    usable_host,
)
from node.mesh.peers import ADDRESS_BACKOFF_MAX, DialTarget

MESH = os.urandom(32)
NOW = 1_800_000_000.0


def _key() -> DeviceKey:
    return DeviceKey.generate()


def _members(*keys: DeviceKey):
    allowed = {k.public_key for k in keys}
    return lambda key: key in allowed


def _raw_signed(key: DeviceKey, body: dict) -> dict[str, bytes]:
    packed = msgpack.packb(body, use_bin_type=True)
    return {"body": packed, "sig": key.sign(DOMAIN + packed)}


def test_a_member_record_is_accepted_and_a_newer_one_replaces_it():
    """005.12.10: the newest record of a current member is held, one per key."""
    me, peer = _key(), _key()
    book = AddressBook(MESH, me.public_key)
    first = sign_record(peer, MESH, 1, [("192.168.1.10:7412", "lan")], now=NOW)
    second = sign_record(peer, MESH, 2, [("100.100.1.2:7412", "tunnel")], now=NOW)
    assert book.offer(first, _members(peer), now=NOW) is not None
    assert book.offer(second, _members(peer), now=NOW) is not None
    assert book.offer(first, _members(peer), now=NOW) is None  # older: dropped
    assert book.offer(second, _members(peer), now=NOW) is None  # same: nothing new to relay
    assert book.records[peer.public_key].addrs == (("100.100.1.2:7412", "tunnel"),)


def test_records_of_strangers_revoked_members_and_other_meshes_are_dropped():
    """005.12.10: only a current member's record for this mesh counts; a revoked member's
    record already held goes when the roster changes (prune)."""
    me, peer, stranger = _key(), _key(), _key()
    book = AddressBook(MESH, me.public_key)
    rec = sign_record(stranger, MESH, 5, [("10.0.0.5:7412", "lan")], now=NOW)
    assert book.offer(rec, _members(peer), now=NOW) is None
    other_mesh = sign_record(peer, os.urandom(32), 5, [("10.0.0.5:7412", "lan")], now=NOW)
    assert book.offer(other_mesh, _members(peer), now=NOW) is None
    held = sign_record(peer, MESH, 5, [("10.0.0.6:7412", "lan")], now=NOW)
    assert book.offer(held, _members(peer), now=NOW) is not None
    book.prune(_members(), now=NOW)  # the peer was revoked
    assert not book.records


def test_a_record_signed_by_another_key_is_dropped():
    """005.12.9: a member cannot publish a record in another member's name."""
    me, victim, liar = _key(), _key(), _key()
    packed = msgpack.packb({"v": 1, "mesh": MESH, "key": victim.public_key, "seq": 9,
                            "exp": int(NOW + 60), "addrs": [["10.0.0.66:7412", "lan"]]},
                           use_bin_type=True)
    forged = {"body": packed, "sig": liar.sign(DOMAIN + packed)}
    book = AddressBook(MESH, me.public_key)
    assert book.offer(forged, _members(victim, liar), now=NOW) is None
    with pytest.raises(BadRecord, match="signature"):
        parse_record(forged, MESH, now=NOW)


def test_expired_and_far_future_records_are_dropped():
    """005.12.10: expired, or expiring more than 24 h (+5 min) ahead."""
    peer = _key()
    with pytest.raises(BadRecord, match="expired"):
        parse_record(sign_record(peer, MESH, 1, [], now=NOW - TTL - 1), MESH, now=NOW)
    with pytest.raises(BadRecord, match="too far"):
        parse_record(sign_record(peer, MESH, 1, [], now=NOW, ttl=10 * TTL), MESH, now=NOW)
    book = AddressBook(MESH, _key().public_key)
    book.offer(sign_record(peer, MESH, 1, [("10.1.1.1:1", "lan")], now=NOW, ttl=60),
               _members(peer), now=NOW)
    book.prune(_members(peer), now=NOW + 61)
    assert not book.records


@pytest.mark.parametrize("address", [
    "127.0.0.1:7412", "127.8.9.10:22", "[::1]:7412", "169.254.169.254:80", "224.0.0.251:5353",
    "255.255.255.255:7412", "0.0.0.0:7412", "[::]:7412", "[ff02::1]:7412", "[fe80::1]:7412",
    "[::ffff:127.0.0.1]:7412", "240.0.0.1:7412", "0.1.2.3:7412", "localhost:7412",
    "metadata.google.internal:80", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1", "10.0.0.1:x",
])
def test_addresses_a_node_must_never_dial_are_not_kept(address):
    """005.12.10: no names, loopback, link-local, multicast, broadcast, unspecified, reserved."""
    assert not usable_address(address)
    peer = _key()
    record = parse_record(sign_record(peer, MESH, 1, [(address, "lan")], now=NOW), MESH, now=NOW)
    assert record.addrs == ()


@pytest.mark.parametrize("address", [
    "192.168.1.10:7412", "10.231.4.2:17412", "100.101.102.103:7412", "203.0.113.7:7412",
    "[2001:db8::7]:7412",
])
def test_unicast_addresses_are_kept(address):
    assert usable_address(address)


def test_thousands_of_addresses_cannot_be_published():
    """005.12.9: at most 16 addresses; a body above 1 KiB or a longer list is dropped whole."""
    peer = _key()
    many = [[f"10.0.{i // 250}.{i % 250 + 1}:7412", "lan"] for i in range(2000)]
    raw = _raw_signed(peer, {"v": 1, "mesh": MESH, "key": peer.public_key, "seq": 1,
                             "exp": int(NOW + 60), "addrs": many})
    with pytest.raises(BadRecord):
        parse_record(raw, MESH, now=NOW)
    seventeen = many[:MAX_ADDRS + 1]
    raw = _raw_signed(peer, {"v": 1, "mesh": MESH, "key": peer.public_key, "seq": 1,
                             "exp": int(NOW + 60), "addrs": seventeen})
    with pytest.raises(BadRecord):
        parse_record(raw, MESH, now=NOW)
    with pytest.raises(BadRecord):
        parse_frame({"t": "addrs", "records": [raw] * (MAX_RECORDS_PER_FRAME + 1)})


def test_own_records_raise_the_sequence_instead_of_being_held():
    """005.12.9: a node that sees an own record newer than its clock publishes above it."""
    me = _key()
    book = AddressBook(MESH, me.public_key)
    future = sign_record(me, MESH, int(NOW * 1000) + 10**9, [], now=NOW)
    assert book.offer(future, _members(me), now=NOW) is None
    assert not book.records
    assert book.next_seq(now=NOW) == int(NOW * 1000) + 10**9 + 1


def test_the_book_survives_a_restart_and_is_verified_again(tmp_path):
    """005.12.11: kept in Runtime, re-verified when read; a tampered file yields nothing."""
    me, peer = _key(), _key()
    path = tmp_path / "addresses"
    book = AddressBook(MESH, me.public_key, path)
    book.offer(sign_record(peer, MESH, 3, [("10.9.9.9:7412", "tunnel")]), _members(peer))
    book.save()
    again = AddressBook(MESH, me.public_key, path)
    again.load(_members(peer))
    assert again.records[peer.public_key].addrs == (("10.9.9.9:7412", "tunnel"),)
    data = bytearray(path.read_bytes())
    data[data.find(b"10.9.9.9")] = ord("6")
    path.write_bytes(bytes(data))
    tampered = AddressBook(MESH, me.public_key, path)
    tampered.load(_members(peer))
    assert not tampered.records


def test_addresses_on_our_own_networks_are_dialled_first():
    """005.12.12: the LAN before the tunnel when we share the LAN, the tunnel otherwise."""
    peer = _key()
    rec = parse_record(sign_record(peer, MESH, 1, [
        ("192.168.1.10:7412", "lan"), ("100.64.0.2:7412", "tunnel"),
        ("203.0.113.7:7412", "address")], now=NOW), MESH, now=NOW)
    at_home = [ipaddress.ip_network("192.168.1.0/24")]
    away = [ipaddress.ip_network("100.64.0.0/10")]
    assert dial_order(rec, at_home)[0][0] == "192.168.1.10:7412"
    assert dial_order(rec, away)[0][0] == "100.64.0.2:7412"


def test_own_addresses_listen_all_and_advertise():
    """005.12.9: every interface when listening on all; advertise resolved by the publisher;
    loopback never published."""
    ifs = [("192.168.1.10", "lan", ipaddress.ip_network("192.168.1.0/24")),
           ("100.70.0.1", "tunnel", ipaddress.ip_network("100.64.0.0/10"))]
    assert own_addresses(7412, "0.0.0.0", ["203.0.113.7:9000", "127.0.0.1:1", "junk"], ifs) == [
        ("192.168.1.10:7412", "lan"), ("100.70.0.1:7412", "tunnel"),
        ("203.0.113.7:9000", "address")]
    assert own_addresses(7412, "127.0.0.1", [], ifs) == []
    assert own_addresses(7412, "100.70.0.1", [], ifs) == [("100.70.0.1:7412", "tunnel")]


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=6),
    max_leaves=30,
))
def test_junk_never_raises_anything_but_bad_record(junk):
    """005.12.10: whatever a member sends, a record is refused with BadRecord, never a crash;
    also when the junk is signed by a member."""
    key = _key()
    for raw in (junk, {"body": msgpack.packb(junk, use_bin_type=True), "sig": b"\0" * 64},
                _raw_signed(key, junk if isinstance(junk, dict) else {"x": junk})):
        with pytest.raises(BadRecord):
            parse_record(raw, MESH, now=NOW)


def test_an_address_that_never_answers_is_dialled_ever_more_rarely():
    """005.12.10: per-address backoff, 4 s doubling to 300 s; reset only by a link change."""
    sp = DialTarget("10.0.0.9:22", expected_id="X", origin="address")
    waits = []
    for _ in range(10):
        assert sp.may_dial("10.0.0.9:22")
        sp.failed("10.0.0.9:22")
        waits.append(sp.not_before["10.0.0.9"] - time.monotonic())
        assert not sp.may_dial("10.0.0.9:22")
        sp.not_before["10.0.0.9"] = 0.0  # as if the wait had passed
    assert 3.5 < waits[0] <= 4.0 and ADDRESS_BACKOFF_MAX - 1 < waits[-1] <= ADDRESS_BACKOFF_MAX
    sp.failed("10.0.0.9:22")
    sp.links_changed()
    assert sp.may_dial("10.0.0.9:22")
    static = DialTarget("10.0.0.9:7412")  # a configured peer keeps the dialler's own backoff
    static.failed("10.0.0.9:7412")
    assert static.may_dial("10.0.0.9:7412")


def test_cloud_metadata_addresses_are_never_dialled():
    """005.12.10: the metadata services outside 169.254.0.0/16 (AWS's IPv6 endpoint,
    Alibaba's, Azure's) are refused like link-local; a named link-local mDNS interface
    (005.12.1) admits link-local addresses but never 169.254.169.254."""
    for host in ("fd00:ec2::254", "100.100.100.200", "168.63.129.16", "169.254.169.254",
                 "::ffff:100.100.100.200"):
        assert not usable_host(host), host
        assert not usable_host(host, link_local=True), host
    assert usable_host("100.100.100.201")  # the rest of Tailscale's range is dialled
    assert usable_host("169.254.7.7", link_local=True) and not usable_host("169.254.7.7")


def test_a_record_naming_this_machine_is_not_dialled_there():
    """005.12.10: the dialler never dials its own machine, whatever port a member names."""
    peer = _key()
    rec = parse_record(sign_record(peer, MESH, 1, [
        ("192.168.1.5:22", "lan"), ("192.168.1.10:7412", "lan"), ("[fd00::5]:8080", "lan")],
        now=NOW), MESH, now=NOW)
    nets = [ipaddress.ip_network("192.168.1.0/24")]
    assert dial_order(rec, nets, ["192.168.1.5", "fd00::5"]) == [("192.168.1.10:7412", "lan")]


def test_a_frame_of_copies_costs_at_most_one_signature_per_member():
    """005.12.11: records are decoded first and only the highest `seq` above the held one of
    each member is verified; a frame naming one member twice is refused as a whole; a bad
    signature is counted for the caller's `bad_signature` refusal."""
    me, peer, other = _key(), _key(), _key()
    book = AddressBook(MESH, me.public_key)
    record = sign_record(peer, MESH, 5, [("10.2.2.2:7412", "lan")], now=NOW)
    with pytest.raises(BadRecord, match="two records"):
        book.offer_frame([record] * MAX_RECORDS_PER_FRAME, _members(peer, other), now=NOW)
    started = time.perf_counter()
    for _ in range(50):  # a repeated frame of a record held costs no signature check
        book.offer_frame([record], _members(peer, other), now=NOW)
    verdict = book.offer_frame([record], _members(peer, other), now=NOW)
    assert verdict.fresh == [] and verdict.bad_signatures == 0
    assert book.records[peer.public_key].seq == 5
    assert time.perf_counter() - started < 0.05
    forged = dict(sign_record(other, MESH, 9, [], now=NOW), sig=bytes(64))
    verdict = book.offer_frame([forged, sign_record(peer, MESH, 6, [], now=NOW)],
                               _members(peer, other), now=NOW)
    assert verdict.bad_signatures == 1 and [r.seq for r in verdict.fresh] == [6]
    assert other.public_key not in book.records


def test_an_addrs_frame_over_1_mib_is_refused():
    """005.12.11: at most 1 MiB a frame, whatever its records hold."""
    junk = {"body": b"x" * 4096, "sig": b"s" * 64}
    with pytest.raises(BadRecord, match="bytes"):
        parse_frame({"t": "addrs", "records": [junk] * (MAX_FRAME_BYTES // 4096 + 1)})
