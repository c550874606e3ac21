"""Automerge binary formats read by maia-node itself (SPEC-005 §3): hashes recomputed from the
bytes equal the binding's, for plain and compressed chunks; damaged bytes are refused."""

from __future__ import annotations

import pytest
from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState

from crdt.chunks import (
    CHUNK_COMPRESSED,
    ChunkError,
    change_hash,
    changes_message,
    parse_change,
    parse_sync_message,
    strip_capabilities,
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
