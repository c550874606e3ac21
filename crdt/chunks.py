"""Automerge binary formats that maia-node must read itself: change chunks and v1 sync messages.

The Python binding applies sync messages but exposes neither the changes inside them nor a
way to hash raw bytes, and verification must happen *before* a change is applied. So this
module parses just enough of the documented formats: the change chunk header (hash, actor,
seq, deps) and the v1 sync message envelope (heads, need, have, changes).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_DOCUMENT = 0
CHUNK_CHANGE = 1
CHUNK_COMPRESSED = 2
SYNC_V1 = 0x42
SYNC_V2 = 0x43
HASH_LEN = 32
MAX_INFLATED = 64 << 20
#: The action column of a change's operations: column 4, type 2 (integer, run-length encoded);
#: bit 3 of a column's spec marks it deflated.
_ACTION_COLUMN = (4 << 4) | 2
_DEFLATE = 8
#: Runs an action column may hold, and what a deflated one may inflate to (see _rle_rows).
MAX_RUNS = 256
MAX_ACTION_COLUMN = 1 << 20
#: What one operation weighs against the byte budgets and bounds that follow memory (SPEC-005
#: 005.6.6): a change counts as its inflated bytes or this much per operation, whichever is
#: more. An entry's change is about 60 bytes per operation, and Automerge holds 11-12x a
#: change's bytes in memory (SPEC-005 §7.7); a million list insertions took 634 MB, 634 bytes
#: an operation, where 64 bytes each weigh 64 MB, about what an honest change of that memory
#: weighs.
OP_WEIGHT = 64


class ChunkError(ValueError):
    """Bytes that are not a well-formed Automerge change or sync message."""


def read_uleb(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ChunkError("truncated LEB128 integer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ChunkError("LEB128 integer too long")


def write_uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True, slots=True)
class ChangeInfo:
    """What verification needs to know about one change chunk, read from its bytes."""

    hash: bytes
    actor: bytes
    seq: int
    deps: tuple[bytes, ...]
    chunk: bytes
    # the change's weight: its bytes once inflated, or OP_WEIGHT per operation if that is
    # more (0: not read, the chunk is one this device made); what a document's memory
    # follows, a compressed chunk being several times smaller and a run-length encoded one
    # up to millions of times
    size: int = 0
    ops: int = 0  # its operations (0: not read)

    @property
    def weight(self) -> int:
        """What the change counts for against budgets and memory bounds (SPEC-005 005.6.6):
        its weight as read, or its bytes when it was not read (one this device made)."""
        return max(self.size, len(self.chunk))


def inflate_change(chunk: bytes) -> bytes:
    """Return the uncompressed (type 1) change chunk body from ``chunk_type`` onward."""
    if len(chunk) < 10 or chunk[:4] != MAGIC:
        raise ChunkError("not an Automerge chunk (bad magic)")
    ctype = chunk[8]
    length, pos = read_uleb(chunk, 9)
    if pos + length != len(chunk):
        raise ChunkError("chunk length does not match its bytes")
    if ctype == CHUNK_CHANGE:
        return chunk[8:]
    if ctype == CHUNK_COMPRESSED:
        try:
            inflater = zlib.decompressobj(-15)
            body = inflater.decompress(chunk[pos:], MAX_INFLATED)
        except zlib.error as exc:
            raise ChunkError(f"compressed change does not inflate: {exc}") from exc
        if inflater.unconsumed_tail:
            raise ChunkError("compressed change inflates beyond the size limit")
        return bytes([CHUNK_CHANGE]) + write_uleb(len(body)) + body
    raise ChunkError(f"chunk type {ctype} is not a change")


def change_hash(chunk: bytes) -> bytes:
    """Only the hash of a change chunk (for looking up its batch when sending: the chunk came
    from our own verified store, so its header need not be read again)."""
    return hashlib.sha256(inflate_change(chunk)).digest()


def parse_change(chunk: bytes) -> ChangeInfo:
    """Hash a change chunk the way Automerge does and read its header fields."""
    body = inflate_change(chunk)
    digest = hashlib.sha256(body).digest()
    if digest[:4] != chunk[4:8]:
        raise ChunkError("change checksum does not match its bytes")
    _, pos = read_uleb(body, 1)  # skip chunk type and length
    ndeps, pos = read_uleb(body, pos)
    if ndeps > 100_000:
        raise ChunkError("implausible dependency count")
    deps = []
    for _ in range(ndeps):
        dep = body[pos : pos + HASH_LEN]
        if len(dep) != HASH_LEN:
            raise ChunkError("truncated dependency hash")
        deps.append(bytes(dep))
        pos += HASH_LEN
    alen, pos = read_uleb(body, pos)
    actor = bytes(body[pos : pos + alen])
    if len(actor) != alen:
        raise ChunkError("truncated actor id")
    pos += alen
    seq, pos = read_uleb(body, pos)
    ops = count_ops(body, pos)
    return ChangeInfo(hash=digest, actor=actor, seq=seq, deps=tuple(deps), chunk=bytes(chunk),
                      size=max(len(body), ops * OP_WEIGHT), ops=ops)


def count_ops(body: bytes, pos: int) -> int:
    """The number of operations of a change, from its body after ``seq``: the rows of its
    action column, which is where Automerge's own reader stops (SPEC-005 005.6.1 c).

    Why: the columns are run-length encoded, so a change of a few bytes can hold millions of
    operations; a member's 182-byte change of a million list insertions took 634 MB on every
    node that applied it. Counting runs reads a few bytes per run, not per operation. Every
    catch-up counts each change's, so one-byte integers (nearly all of them here) are read
    inline.
    """
    try:
        return _count_ops(body, pos)
    except IndexError:
        raise ChunkError("truncated change") from None


def _count_ops(body: bytes, pos: int) -> int:
    _, pos = read_uleb(body, pos)  # start op
    _, pos = read_uleb(body, pos)  # time (signed LEB128: the same continuation bits)
    length, pos = read_uleb(body, pos)  # message
    pos += length
    others, pos = read_uleb(body, pos)  # other actors
    if others > len(body):
        raise ChunkError("implausible actor count")
    for _ in range(others):
        length, pos = read_uleb(body, pos)
        pos += length
    ncols, pos = read_uleb(body, pos)
    if ncols > 1024:
        raise ChunkError("implausible column count")
    action_at = action_len = -1
    deflated = False
    offset = 0
    for _ in range(ncols):
        spec = body[pos]
        if spec < 0x80:
            pos += 1
        else:
            spec, pos = read_uleb(body, pos)
        length = body[pos]
        if length < 0x80:
            pos += 1
        else:
            length, pos = read_uleb(body, pos)
        if action_at < 0 and spec & ~_DEFLATE == _ACTION_COLUMN:
            action_at, action_len, deflated = offset, length, bool(spec & _DEFLATE)
        offset += length
    if action_at < 0:
        return 0  # no action column: no operation
    start = pos + action_at
    column = body[start : start + action_len]
    if len(column) != action_len:
        raise ChunkError("truncated action column")
    if deflated:
        try:
            inflater = zlib.decompressobj(-15)
            column = inflater.decompress(column, MAX_ACTION_COLUMN)
        except zlib.error as exc:
            raise ChunkError(f"action column does not inflate: {exc}") from exc
        if inflater.unconsumed_tail:
            raise ChunkError("action column inflates beyond its bound")
    return _rle_rows(column)


def _rle_rows(column: bytes) -> int:
    """Rows of a run-length encoded column of unsigned integers: a positive count is a run of
    one value, a negative count that many literal values, zero a run of nulls.

    The work is bounded by runs, not bytes: at most MAX_RUNS runs (an entry's change has about
    six, any change maia-node makes a few dozen at most), none of them empty, and a literal
    run of one-byte values is skipped in one step. Why: a 258-byte change whose action column
    inflated to 64 MiB of empty runs held the event loop for 9.5 s (found by a review)."""
    rows = pos = runs = 0
    end = len(column)
    while pos < end:
        runs += 1
        if runs > MAX_RUNS:
            raise ChunkError(f"action column of more than {MAX_RUNS} runs")
        count = column[pos]
        if count < 0x40:  # a one-byte positive count (bit 6 clear: not negative)
            pos += 1
        else:
            count, pos = read_sleb(column, pos)
        if count > 0:
            if column[pos] < 0x80:  # the value repeated
                pos += 1
            else:
                _, pos = read_uleb(column, pos)
            rows += count
        elif count < 0:
            literals = column[pos : pos - count]
            if len(literals) == -count and max(literals) < 0x80:
                pos -= count  # every value one byte (the usual case): skipped at once
            else:
                for _ in range(-count):  # each value is at least a byte: bounded by the column
                    if column[pos] < 0x80:
                        pos += 1
                    else:
                        _, pos = read_uleb(column, pos)
            rows -= count
        else:
            nulls, pos = read_uleb(column, pos)
            if not nulls:
                raise ChunkError("an empty run in the action column")
            rows += nulls
    return rows


def read_sleb(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A signed LEB128 integer: the unsigned one, less 2**bits when its last byte's bit 6
    (the sign) is set."""
    value, end = read_uleb(buf, pos)
    if buf[end - 1] & 0x40:
        value -= 1 << (7 * (end - pos))
    return value, end


@dataclass(slots=True)
class SyncMessageV1:
    """The envelope of an Automerge v1 sync message; changes are raw chunks."""

    heads: list[bytes]
    need: list[bytes]
    have: list[tuple[list[bytes], bytes]]
    changes: list[bytes]

    def encode(self) -> bytes:
        out = bytearray([SYNC_V1])
        _write_hashes(out, self.heads)
        _write_hashes(out, self.need)
        out += write_uleb(len(self.have))
        for last_sync, bloom in self.have:
            _write_hashes(out, last_sync)
            out += write_uleb(len(bloom))
            out += bloom
        out += write_uleb(len(self.changes))
        for change in self.changes:
            out += write_uleb(len(change))
            out += change
        return bytes(out)


def _write_hashes(out: bytearray, hashes: list[bytes]) -> None:
    out += write_uleb(len(hashes))
    for h in hashes:
        out += h


def _read_hashes(buf: bytes, pos: int) -> tuple[list[bytes], int]:
    count, pos = read_uleb(buf, pos)
    end = pos + HASH_LEN * count
    if end > len(buf):
        raise ChunkError("truncated hash list")
    return [buf[pos + HASH_LEN * i : pos + HASH_LEN * (i + 1)] for i in range(count)], end


def parse_sync_message(buf: bytes) -> tuple[SyncMessageV1, bytes]:
    """Parse a v1 (or v2 envelope) sync message; return it and any trailing capability bytes.

    A v2 message (type 0x43) may carry a whole document chunk instead of changes, which cannot
    be verified change by change, so callers reject it; peers are steered to v1 by stripping
    the capabilities that advertise v2 (see :func:`strip_capabilities`).
    """
    if not buf:
        raise ChunkError("empty sync message")
    if buf[0] not in (SYNC_V1, SYNC_V2):
        raise ChunkError(f"unknown sync message type {buf[0]:#x}")
    pos = 1
    heads, pos = _read_hashes(buf, pos)
    need, pos = _read_hashes(buf, pos)
    nhave, pos = read_uleb(buf, pos)
    have = []
    for _ in range(nhave):
        last_sync, pos = _read_hashes(buf, pos)
        blen, pos = read_uleb(buf, pos)
        bloom = buf[pos : pos + blen]
        if len(bloom) != blen:
            raise ChunkError("truncated bloom filter")
        pos += blen
        have.append((last_sync, bloom))
    nchanges, pos = read_uleb(buf, pos)
    changes = []
    for _ in range(nchanges):
        clen, pos = read_uleb(buf, pos)
        change = buf[pos : pos + clen]
        if len(change) != clen:
            raise ChunkError("truncated change in sync message")
        pos += clen
        changes.append(change)
    msg = SyncMessageV1(heads, need, have, changes)
    if buf[0] == SYNC_V2:
        raise ChunkError("v2 sync message (document chunks cannot be verified per change)")
    return msg, buf[pos:]


def strip_capabilities(buf: bytes) -> bytes:
    """Drop the trailing capability list so the other side keeps speaking v1."""
    _, rest = parse_sync_message(buf)
    return buf[: len(buf) - len(rest)] if rest else buf


def changes_message(changes: list[bytes]) -> bytes:
    """A v1 sync message that only carries changes: how verified changes are applied."""
    return SyncMessageV1([], [], [], changes).encode()
