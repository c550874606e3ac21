"""Automerge binary formats read by maia-node itself (SPEC-005 §3): hashes recomputed from the
bytes equal the binding's, for plain and compressed chunks; damaged bytes are refused."""

from __future__ import annotations

import contextlib

import pytest
from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.chunks import (
    CHUNK_COMPRESSED,
    ChunkError,
    change_hash,
    changes_message,
    count_ops,
    inflate_change,
    parse_change,
    parse_sync_message,
    strip_capabilities,
    write_uleb,
)


def _changes():
    doc = Document(actor_id=b"\x07" * 32)
    with doc.transaction() as tx:
        tx.put(ROOT, "small", ScalarType.Str, "x")
    with doc.transaction() as tx:
        obj = tx.put_object(ROOT, "big", ObjType.Map)
        tx.put(obj, "text", ScalarType.Str, "a long text that compresses well " * 40)
    return doc, doc.get_changes([])


def test_recomputed_hashes_equal_the_bindings_for_plain_and_compressed_chunks():
    """SPEC-005 §3.1-3.3: the hash is recomputed from the bytes, inflating type-2 chunks."""
    _, changes = _changes()
    assert {c.bytes[8] for c in changes} >= {CHUNK_COMPRESSED}  # both kinds really occur
    for c in changes:
        info = parse_change(c.bytes)
        assert info.hash == c.hash == change_hash(c.bytes)
        assert info.actor == c.actor_id and info.seq == c.seq and list(info.deps) == c.deps


def test_damaged_chunks_are_refused():
    """SPEC-005 §3.4: a flipped byte, a truncation or another chunk type is refused."""
    _, changes = _changes()
    raw = bytearray(changes[0].bytes)
    raw[-1] ^= 0x01
    with pytest.raises(ChunkError, match="checksum"):
        parse_change(bytes(raw))
    with pytest.raises(ChunkError):
        parse_change(changes[1].bytes[:-5])
    with pytest.raises(ChunkError):
        parse_change(b"not a chunk at all")


def test_sync_messages_parse_strip_and_carry_changes():
    """SPEC-005 §8.2-8.4: v1 messages are parsed, capabilities stripped, and a changes-only
    message applies changes out of order once their dependencies arrive."""
    doc, changes = _changes()
    first = doc.generate_sync_message(SyncState()).encode()
    stripped = strip_capabilities(first)
    msg, rest = parse_sync_message(stripped)
    assert rest == b"" and msg.heads == doc.get_heads()
    other = Document(actor_id=b"\x08" * 32)
    other.receive_sync_message(SyncState(), Message.decode(changes_message([changes[1].bytes])))
    assert other.get_heads() == []  # queued: its dependency is missing
    other.receive_sync_message(SyncState(), Message.decode(changes_message([changes[0].bytes])))
    assert other.get_heads() == doc.get_heads()


_steps = st.lists(st.one_of(
    st.tuples(st.just("put"), st.text(max_size=4), st.integers(0, 3)),
    st.tuples(st.just("list"), st.integers(0, 300), st.sampled_from(["null", "int", "str"])),
    st.tuples(st.just("map"), st.integers(0, 40), st.just("")),
    st.tuples(st.just("delete"), st.text(max_size=4), st.just(0)),
    st.tuples(st.just("text"), st.text(max_size=200), st.just(0)),
), min_size=1, max_size=6)


@settings(max_examples=120, deadline=None)
@given(changes=st.lists(_steps, min_size=1, max_size=4))
def test_operations_are_counted_as_automerge_counts_them(changes) -> None:
    """SPEC-005 005.6.1 c: the operations read from a change's bytes (its action column's
    rows) are those the binding reports (``max_op - start_op + 1``), for run-length encoded
    runs of insertions, literal runs, nested objects, deletions and text, plain and
    compressed."""
    doc = Document(actor_id=b"\x09" * 32)
    for steps in changes:
        with doc.transaction() as tx:
            for n, (what, a, b) in enumerate(steps):
                key = f"k{n}"
                if what == "put":
                    tx.put(ROOT, a or key, ScalarType.Int, b)
                elif what == "list":
                    lst = tx.put_object(ROOT, key, ObjType.List)
                    for i in range(a):
                        if b == "null":
                            tx.insert(lst, i, ScalarType.Null, None)
                        elif b == "int":
                            tx.insert(lst, i, ScalarType.Int, i % 3)
                        else:
                            tx.insert(lst, i, ScalarType.Str, "ab"[i % 2])
                elif what == "map":
                    obj = tx.put_object(ROOT, key, ObjType.Map)
                    for i in range(a):
                        tx.put(obj, f"f{i}", ScalarType.Boolean, True)
                elif what == "delete":
                    if tx.get(ROOT, a or "k0") is not None:
                        tx.delete(ROOT, a or "k0")
                else:
                    text = tx.put_object(ROOT, key, ObjType.Text)
                    for i, ch in enumerate(a):
                        tx.insert(text, i, ScalarType.Str, ch)
    for c in doc.get_changes([]):
        want = c.max_op - c.start_op + 1
        assert parse_change(c.raw_bytes).ops == want
        assert parse_change(c.bytes).ops == want


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_damaged_operation_count_is_refused_cleanly(data) -> None:
    """Bytes after a change's header are a member's to choose: counting its operations on
    any of them returns a number or raises ChunkError, never another error."""
    _, changes = _changes()
    original = inflate_change(changes[1].raw_bytes)
    header = parse_change(changes[1].raw_bytes)
    pos = 1
    for _ in range(2):  # the body's length, the dependency count
        while original[pos] & 0x80:
            pos += 1
        pos += 1
    pos += 32 * len(header.deps) + 1 + len(header.actor)
    while original[pos] & 0x80:  # seq
        pos += 1
    pos += 1
    assert count_ops(original, pos) == 2  # the map and its text
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(pos, len(raw) - 1))] = data.draw(st.integers(0, 255))
    body = bytes(raw[:data.draw(st.integers(pos, len(raw)))])
    with contextlib.suppress(ChunkError):
        assert count_ops(body, pos) >= 0


def _ops_body(column: bytes, deflated: bool = False) -> bytes:
    """What follows a change's seq: start op, time, no message, no other actor, then one
    column, the action column, and its data."""
    spec = 0x42 | (0x08 if deflated else 0)
    return bytes([1, 0, 0, 0, 1, spec]) + write_uleb(len(column)) + column


def test_counting_operations_costs_little_whatever_the_column_says() -> None:
    """SPEC-005 005.6.1 c, found by a review of the first version: a change of 258 bytes whose
    action column was deflated from 64 MiB of empty runs held the event loop for 9.5 s and
    counted no operation. A deflated column inflates to at most 1 MiB, a column holds at most
    256 runs, none empty, and a long literal run of one-byte values costs one step."""
    import time
    import zlib

    from crdt.chunks import MAX_RUNS

    def deflate(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()

    bomb = deflate(b"\x00\x00" * (32 << 20))
    assert len(bomb) < 100_000
    cases = [
        _ops_body(bomb, deflated=True),  # 64 MiB once inflated
        _ops_body(deflate(b"\x00\x00" * 1000), deflated=True),  # empty runs
        _ops_body(b"\x01\x00" * (MAX_RUNS + 1)),  # runs of one operation each
    ]
    for body in cases:
        started = time.perf_counter()
        with pytest.raises(ChunkError):
            count_ops(body, 0)
        assert time.perf_counter() - started < 0.5
    # a literal run of 60,000 one-byte actions: -60000 as signed LEB128, then the values
    n = -60_000
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            break
        out.append(byte | 0x80)
    literal = bytes(out) + bytes(i % 3 for i in range(60_000))
    started = time.perf_counter()
    assert count_ops(_ops_body(literal), 0) == 60_000
    assert time.perf_counter() - started < 0.05
