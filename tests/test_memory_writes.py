"""Local writes hold their index rows for one later Runtime transaction (issue 17).

The entries are durable when ``add_many`` returns (signed, committed with fsync); the index
rows are Runtime and follow with the next writes. A read must still see every write before
it, and a process that ends before the rows are written must lose nothing: the shard's
indexed heads stay behind, so it is re-indexed from the document at the next start
(SPEC-001: deleting Runtime loses nothing).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt.documents import Repo
from crdt.keys import DeviceKey
from crdt.store import Store
from node.memory.entries import PENDING_ROWS, Memory

KEY = DeviceKey.generate()
MESH = os.urandom(32)


def _memory(data: Path) -> tuple[Store, Memory]:
    store = Store(data)
    return store, Memory(Repo(store, KEY, MESH))


def _items(n: int, word: str = "apple") -> list[dict]:
    return [{"text": f"{word} {i}", "kind": ("note", "fact")[i % 2], "tags": ["t"]}
            for i in range(n)]


def test_a_read_sees_every_write_before_it(tmp_path: Path) -> None:
    store, memory = _memory(tmp_path)
    try:
        added = memory.add_many(_items(30))
        assert memory._pending, "rows are held, not yet written"
        listed = memory.list(query="apple", limit=100)
        assert sorted(e["id"] for e in listed) == sorted(e["id"] for e in added)
        assert memory.count() == 30
        one = memory.add("banana split", "note", ["x"])
        assert [e["id"] for e in memory.list(query="banana")] == [one["id"]]
    finally:
        store.close()


def test_rows_not_written_before_the_process_ends_are_rebuilt_from_the_documents(
    tmp_path: Path,
) -> None:
    store, memory = _memory(tmp_path)
    added = memory.add_many(_items(25))
    store.close()  # as if the process died: the held rows were never written
    store, memory = _memory(tmp_path)
    try:
        assert memory._dirty, "the shards count as stale: their indexed heads are behind"
        assert sorted(e["id"] for e in memory.list(limit=100)) == sorted(e["id"] for e in added)
    finally:
        store.close()


def test_written_rows_mark_their_shards_indexed(tmp_path: Path) -> None:
    store, memory = _memory(tmp_path)
    memory.add_many(_items(40))
    memory.add_many(_items(10, "pear"))  # the same shards again, rows still held
    memory.write_pending()
    store.close()
    store, memory = _memory(tmp_path)
    try:
        assert not memory._dirty, "nothing to re-index after a clean write"
        assert memory.count() == 50
    finally:
        store.close()


def test_held_rows_are_bounded(tmp_path: Path) -> None:
    store, memory = _memory(tmp_path)
    try:
        memory.add_many(_items(PENDING_ROWS + 10))
        assert memory._pending_rows == 0, "a bulk write past the bound writes its rows"
        assert memory.count() == PENDING_ROWS + 10
    finally:
        store.close()


def test_a_reindexed_shard_keeps_who_wrote_and_what_corrects_what(tmp_path: Path) -> None:
    """The re-index reads an entry's map values without ``extract``: every field the listing
    shows must survive it (a superseded entry surfacing again after a re-index was a bug)."""
    store, memory = _memory(tmp_path)
    try:
        by = {"session": "s-1", "agent": "claude"}
        old = memory.add("release builds are signed on the old box", "fact", [], by=by)
        new = memory.supersede(old["id"], "release signing moved off the old box")
        memory.write_pending()
    finally:
        store.close()
    shutil.rmtree(tmp_path / "runtime")  # Runtime gone: rebuilt from the documents
    store, memory = _memory(tmp_path)
    try:
        assert [e["id"] for e in memory.list(query="release")] == [new["id"]]
        listed = {e["id"]: e for e in memory.list(query="release", include_superseded=True)}
        assert listed[old["id"]]["superseded_by"] == new["id"]
        assert (listed[old["id"]]["session"], listed[old["id"]]["agent"]) == ("s-1", "claude")
        assert listed[new["id"]]["supersedes"] == old["id"]
    finally:
        store.close()


_TAGS = ["a", "b", "project:x", "t" * 64]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.sampled_from(["note", "fact", "skill"]),
                                  st.lists(st.sampled_from(_TAGS), unique=True, max_size=3),
                                  st.text(min_size=1, max_size=40)),
                        min_size=1, max_size=6),
       by=st.sampled_from([None, {"session": "s-1"}, {"session": "s-2", "agent": "claude"}]))
def test_held_rows_equal_the_rows_a_rebuild_reads_from_the_documents(
    tmp_path_factory, entries, by,
) -> None:
    """A local write's index rows are built from what it wrote, not read back (issue 17):
    they must be exactly the rows a rebuild of the Runtime index makes from the documents,
    or a listing would change after a restart."""
    data = tmp_path_factory.mktemp("rows")
    store, memory = _memory(data)
    try:
        items = [{"text": text, "kind": kind, "tags": tags} for kind, tags, text in entries]
        held = {e["id"]: e for e in memory.add_many(items, by=by)}
        old = next(iter(held))
        new = memory.supersede(old, "a correction", by=by)
        held[new["id"]] = new
        memory.write_pending()
        written = {e["id"]: e for e in memory.list(limit=100, include_superseded=True)}
    finally:
        store.close()
    shutil.rmtree(data / "runtime")
    store, memory = _memory(data)
    try:
        rebuilt = {e["id"]: e for e in memory.list(limit=100, include_superseded=True)}
    finally:
        store.close()
    assert written == rebuilt
    for entry_id, row in held.items():
        if entry_id != old:  # the old one was superseded after its row was returned
            assert row == rebuilt[entry_id]


@given(row=st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=40),
              st.lists(st.text(max_size=5))),
    max_size=40),
    doc=st.text(min_size=1, max_size=30))
def test_a_row_packed_with_its_shard_reads_back_as_the_row_and_the_shard(row, doc):
    """Issue 17: the index row's shard is added to the packed map by rewriting its header
    (no copy of the row); every size of map, across the fixmap/map16 border, and a row
    that holds a ``doc`` key already, reads back as the row with ``doc`` set, byte for byte
    what packing the copy gave."""
    import msgpack

    from node.memory.entries import _packed_with

    pack = msgpack.Packer(use_bin_type=True).pack
    out = _packed_with(pack, row, doc, pack("doc") + pack(doc))
    assert msgpack.unpackb(out, raw=False) == {**row, "doc": doc}
    assert out == msgpack.packb({**row, "doc": doc}, use_bin_type=True)


def test_random_id_parts_are_base32_and_use_every_letter_evenly():
    """Issue 17: the random parts of entry ids are drawn in C (one byte per letter, its low 5
    bits); they stay 10 base32 letters with every letter about equally likely, so the shard
    an id falls in (its first letter) spreads writes evenly."""
    from collections import Counter

    from node.memory.entries import _random_parts
    from node.memory.ids import _B32

    parts = _random_parts(20_000)
    assert len(parts) == 20_000 and len(set(parts)) == 20_000
    assert all(len(p) == 10 and set(p) <= set(_B32) for p in parts)
    counts = Counter("".join(parts))
    assert set(counts) == set(_B32)
    expected = 200_000 / 32
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values())


# -- `maia memory import` of crafted files: a clear error naming the line, never a traceback --
CRAFTED = {
    "tags a number": (b'{"text": "ok"}\n{"text": "x", "tags": 5}\n', ":2", "tags"),
    "tags null": (b'{"text": "x", "tags": null}\n', ":1", "tags"),
    "tags a string": (b'{"text": "x", "tags": "abc"}\n', ":1", "tags"),
    "a tag not a string": (b'{"text": "x", "tags": ["a", 7]}\n', ":1", "tags"),
    "nested deeper than the parser goes": (
        b"plain line\n" + b'{"text": "x", "t": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        ":2", "not valid JSON"),
    "bytes that are not UTF-8": (b"one\n" * 3000 + b"caf\xe9\n" + b"two\n", ":3001", "UTF-8"),
    "an unpaired surrogate": (b'{"text": "x\\ud800"}\n', ":1", "Unicode"),
    "a kind that is no kind": (b'{"text": "x", "kind": ["note"]}\n', ":1", "kind"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_import_file_is_refused_naming_the_line(tmp_path: Path, name: str) -> None:
    """SPEC-003 (CLI errors are one sentence): each crafted file raised out of ``maia memory
    import`` (TypeError, RecursionError, UnicodeDecodeError), and ``"tags": "abc"`` became the
    tags a, b and c. Each is refused with the file and line, and nothing is imported."""
    import contextlib
    import io

    from node.cli import main as cli_main
    from tests.nodes import cli

    data = tmp_path / "data"
    assert cli(data, "init", "--new-mesh", "--name", "solo") == 0
    content, line, word = CRAFTED[name]
    path = tmp_path / "crafted.jsonl"
    path.write_bytes(content)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["--data-dir", str(data), "memory", "import", str(path)])
    assert code != 0
    assert f"{path}{line}" in err.getvalue() and word in err.getvalue(), err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["--data-dir", str(data), "memory", "list", "--json"]) == 0
    assert out.getvalue().strip() in ("[]", "")
