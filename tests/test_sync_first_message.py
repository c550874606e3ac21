"""A live write goes out in the first sync message after a summary (SPEC-005 §8.3, §8.7).

In process: real LMDB stores, real repositories and the real sync protocol
(tests/trust_helpers.py). A fresh Automerge sync state knows nothing of the peer, so its first
message would carry only heads and a Bloom filter, and the change one round trip later; the
peer's summary already says where it stands, and the sync state starts from there. A peer whose
summary lies only slows itself down: it still converges.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt.chunks import parse_sync_message
from crdt.identity import IDENTITY_DOC
from crdt.sync import PeerSync
from crdt.verify import Rejected
from tests.trust_helpers import NOTE_DOC, Device, pump


@pytest.fixture
def pair(tmp_path: Path):
    a = Device.found(tmp_path, "a")
    b = a.admit(tmp_path, "b")
    a.write("first", "written before they met")
    pump(a, b)
    yield a, b
    a.close()
    b.close()


def _session(a: Device, b: Device) -> tuple[PeerSync, PeerSync]:
    """A new connection: fresh sync states, and each side has read the other's summary."""
    sa, sb = PeerSync(a.repo, b.key.public_key), PeerSync(b.repo, a.key.public_key)
    sa.docs_to_sync(sb.summary_frame())
    sb.docs_to_sync(sa.summary_frame())
    return sa, sb


def _changes_in(frames: list[dict]) -> int:
    return sum(len(parse_sync_message(f["msg"])[0].changes) for f in frames)


def _converge(sa: PeerSync, sb: PeerSync, a: Device, b: Device, rounds: int = 50) -> None:
    """Move frames both ways on the same sessions until both sides are quiet; a rejection
    resets the sender's state, as node/mesh/peers.py does on a ``reject`` frame."""
    for _ in range(rounds):
        moved = 0
        docs = sorted(set(a.store.doc_ids()) | set(b.store.doc_ids()),
                      key=lambda d: (d != IDENTITY_DOC, d))
        for doc_id in docs:
            for src, dst in ((sa, sb), (sb, sa)):
                for frame in src.generate(doc_id):
                    moved += 1
                    try:
                        dst.receive(frame)
                    except Rejected:
                        src.reset(doc_id)
                        break
        if not moved:
            return


def test_the_first_message_after_the_summary_carries_the_write(pair):
    a, b = pair
    sa, sb = _session(a, b)
    a.write("live", "a write on a connected node")
    frames = sa.generate(NOTE_DOC)
    assert _changes_in(frames) == 1
    for frame in frames:
        sb.receive(frame)
    assert b.read("live") == "a write on a connected node"  # one trip, no round before it


def test_a_document_made_after_the_summary_goes_whole_in_the_first_message(pair):
    a, b = pair
    sa, sb = _session(a, b)
    fresh = "memory/note/2026-12/5"
    a.write("new shard", "the first entry of a document neither side held", doc_id=fresh)
    frames = sa.generate(fresh)
    assert _changes_in(frames) >= 1
    for frame in frames:
        sb.receive(frame)
    assert b.read("new shard", doc_id=fresh) == "the first entry of a document neither side held"


def test_a_document_only_we_held_waits_for_the_peer_to_open_it(pair):
    a, b = pair
    only_a = "memory/note/2026-12/6"
    a.write("mine", "b lacks this whole document", doc_id=only_a)
    sa, sb = _session(a, b)
    a.write("more", "still b's to ask for", doc_id=only_a)
    assert _changes_in(sa.generate(only_a)) == 0  # §8.2: the side that lacks it opens
    _converge(sa, sb, a, b)
    assert b.read("more", doc_id=only_a) == "still b's to ask for"


def test_without_a_summary_the_exchange_starts_with_heads_only(pair):
    a, b = pair
    sa = PeerSync(a.repo, b.key.public_key)
    a.write("live", "no summary read yet")
    assert _changes_in(sa.generate(NOTE_DOC)) == 0


def test_a_summary_naming_heads_we_lack_starts_the_usual_way_and_converges(pair):
    a, b = pair
    b.write("theirs", "a change a has not seen")
    sa, sb = _session(a, b)
    a.write("ours", "concurrent")
    assert _changes_in(sa.generate(NOTE_DOC)) == 0  # their heads are unknown here: no guess
    sa.reset(NOTE_DOC)
    _converge(sa, sb, a, b)
    assert a.heads() == b.heads()
    assert b.read("ours") == "concurrent" and a.read("theirs") == "a change a has not seen"


def test_a_summary_that_claims_more_than_it_holds_costs_its_sender_a_round(pair):
    a, b = pair
    a.write("missed", "b never got this")
    sa, sb = PeerSync(a.repo, b.key.public_key), PeerSync(b.repo, a.key.public_key)
    lie = sa.summary_frame()  # b claims a's heads: "I have everything you have"
    sa.docs_to_sync(lie)
    sb.docs_to_sync(sa.summary_frame())
    a.write("next", "only this would be sent")
    frames = sa.generate(NOTE_DOC)
    with pytest.raises(Rejected) as refused:
        for frame in frames:
            sb.receive(frame)
    assert refused.value.code == "missing_dependency"
    sa.reset(NOTE_DOC)
    _converge(sa, sb, a, b)
    assert a.heads() == b.heads()
    assert b.read("missed") == "b never got this" and b.read("next") == "only this would be sent"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("wsp")), max_size=12))
def test_any_interleaving_of_writes_summaries_and_partial_syncs_converges(tmp_path_factory,
                                                                          steps):
    """Writes on either side, summaries read at any moment (stale by the time they are
    used), single messages delivered or lost: one final exchange always converges."""
    root = tmp_path_factory.mktemp("interleave")
    a = Device.found(root, "a")
    b = a.admit(root, "b")
    try:
        pump(a, b)
        sa, sb = _session(a, b)
        for n, (who, what) in enumerate(steps):
            me, them = (a, sa) if who == "a" else (b, sb)
            other = sb if who == "a" else sa
            if what == "w":
                me.write(f"e{n}", f"{who} {n}")
            elif what == "s":  # a new connection: the other side's summary, maybe stale later
                them.reset(NOTE_DOC)
                them.docs_to_sync(other.summary_frame())
            else:  # one message goes out; the link may drop it (not delivered) or not
                frames = them.generate(NOTE_DOC)
                if n % 2:
                    with contextlib.suppress(Rejected):
                        for frame in frames:
                            other.receive(frame)
        sa, sb = _session(a, b)
        _converge(sa, sb, a, b)
        assert a.heads() == b.heads()
    finally:
        a.close()
        b.close()
