"""The memory index reads an entry's fields through a few calls to the binding
(``_entry_fields``) instead of ``extract``; for every shape a member can sign, what it gives
must read as ``extract``'s would, or it must give up (None) and let ``extract`` read it
(SPEC-001 §7.5; issue 14 added facts', skills' and pins' signed fields to the fast path)."""

from __future__ import annotations

import contextlib
from typing import Any

from automerge.core import ROOT, Document, ObjType, ScalarType, extract
from hypothesis import given, settings
from hypothesis import strategies as st

from node.memory.entries import SIGNED_EXTRA_FIELDS, _entry_fields, _public

FIELDS = ("text", "kind", "created_at", "author", "session", "agent", "supersedes",
          "superseded_by", "tags", "log", *SIGNED_EXTRA_FIELDS)

scalars = st.one_of(
    st.tuples(st.just(ScalarType.Str), st.text(max_size=8)),
    st.tuples(st.just(ScalarType.Int), st.integers(-5, 5)),
    st.tuples(st.just(ScalarType.F64), st.floats(allow_nan=False, allow_infinity=False)),
    st.tuples(st.just(ScalarType.Boolean), st.booleans()),
)
# a field: a scalar, a list (of scalars, or holding a map), a map of scalars, a Text
values = st.one_of(
    st.tuples(st.just("scalar"), scalars),
    st.tuples(st.just("list"), st.lists(scalars, max_size=3)),
    st.tuples(st.just("list_with_map"), st.lists(scalars, max_size=2)),
    st.tuples(st.just("map"), st.dictionaries(st.text(min_size=1, max_size=4), scalars,
                                               max_size=3)),
    st.tuples(st.just("text"), st.none()),
)


def _write(tx: Any, obj: Any, key: str, shape: str, value: Any) -> None:
    if shape == "scalar":
        tx.put(obj, key, *value)
    elif shape in ("list", "list_with_map"):
        lst = tx.put_object(obj, key, ObjType.List)
        for i, item in enumerate(value):
            tx.insert(lst, i, *item)
        if shape == "list_with_map":
            rec = tx.insert_object(lst, len(value), ObjType.Map)
            tx.put(rec, "at", ScalarType.Str, "2026-12-04T00:00:00Z")
    elif shape == "map":
        m = tx.put_object(obj, key, ObjType.Map)
        for k, v in value.items():
            tx.put(m, k, *v)
    else:  # an (empty) Text object: the binding's transactions have no splice
        tx.put_object(obj, key, ObjType.Text)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), st.booleans())
def test_fast_read_of_an_entry_equals_extract(fields: dict[str, Any], stamps: bool) -> None:
    doc = Document()
    with doc.transaction() as tx:
        entry = tx.put_object(ROOT, "note-202612-AAAAAAAAAA", ObjType.Map)
        for key, (shape, value) in fields.items():
            _write(tx, entry, key, shape, value)
    obj = doc.get(ROOT, "note-202612-AAAAAAAAAA")[1]
    raw = dict(zip(doc.keys(obj), doc.values(obj), strict=True))
    log_obj = raw.get("log")
    edits = doc.length(log_obj[1]) if log_obj is not None and log_obj[0] == ObjType.List else 0
    fast = _entry_fields(doc, raw, edits, stamps=stamps)
    if fast is None:
        return  # gave up: extract reads it
    slow = extract(doc, obj)
    try:
        expected = _public("x", slow)
    except Exception:  # an odd shape _public cannot read either way
        return
    assert _public("x", fast) == expected


def test_a_member_s_timestamp_field_does_not_hide_the_shard(tmp_path) -> None:
    """A member signs an entry whose field is an Automerge Timestamp (read back as a
    ``datetime``, which msgpack cannot write): before, indexing the shard failed on every
    pass, and every honest entry beside it stayed missing from listings."""
    from datetime import UTC, datetime

    from node.memory import Memory, shard_of
    from tests.trust_helpers import Device

    a = Device.found(tmp_path, "a")
    try:
        memory = Memory(a.repo)
        honest = memory.add_many([{"text": f"heron {i}", "kind": "note"} for i in range(40)])
        target = honest[0]["id"]

        def odd(tx: Any) -> None:
            obj = tx.get(ROOT, target)[1]
            tx.put(obj, "session", ScalarType.Timestamp, datetime(2026, 12, 4, tzinfo=UTC))
            log_list = tx.get(obj, "log")[1]
            rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
            tx.put(rec, "op", ScalarType.Str, "odd")

        a.repo.change(shard_of(target), odd)
        listed = {e["id"] for e in memory.list(query="heron", limit=100)}
        assert listed == {e["id"] for e in honest}
    finally:
        a.close()


def test_an_update_of_an_entry_with_a_member_s_timestamp_field_is_indexed(tmp_path) -> None:
    """A member signs a fact's ``importance`` as an Automerge Timestamp; the owner then edits
    the entry. The edit's index row is held to be written with later ones (``write_pending``),
    and that writer packed rows without the text fallback ``_index_row`` has: every later
    ``write_pending`` failed, no held row of any shard reached the index, and the held rows
    grew with every write until a restart. The rows are written, the field as text."""
    from datetime import UTC, datetime

    from node.memory import Memory, shard_of
    from node.memory.entries import _row_key
    from tests.trust_helpers import Device

    a = Device.found(tmp_path, "a")
    try:
        memory = Memory(a.repo)
        entry = memory.add("heron at the weir", kind="note")
        memory.write_pending()

        def stamped(tx: Any) -> None:  # what a member may sign
            obj = tx.get(ROOT, entry["id"])[1]
            tx.put(obj, "importance", ScalarType.Timestamp, datetime(2026, 12, 4, tzinfo=UTC))

        a.repo.change(shard_of(entry["id"]), stamped)
        memory.list(limit=5)  # the index catches up with the member's change
        memory.update(entry["id"], add_tags=["birds"])
        other = memory.add("kingfisher", kind="note")
        memory.write_pending()
        assert memory._pending == {}  # nothing left held: both rows reached the index
        with memory._env.begin() as txn:
            for e in (entry, other):
                assert txn.get(_row_key(shard_of(e["id"]), e["id"]),
                               db=memory._index_db) is not None
        shown = memory.get(entry["id"])
        assert shown["tags"] == ["birds"]
    finally:
        a.close()


def _forge_copies(a: Any, memory: Any, honest: list[dict[str, Any]],
                  deleted: bool = False) -> tuple[str, str]:
    """What a member can sign into a shard: a map under the id of an honest entry that lives
    in another shard (marked deleted with ``deleted``), and one under an id of no memory
    kind. Returns (the copied id, the shard the forgery went into)."""
    from node.memory import shard_of

    shard = shard_of(honest[0]["id"])
    elsewhere = next(e["id"] for e in honest if shard_of(e["id"]) != shard)

    def forge(tx: Any) -> None:
        copy = tx.put_object(ROOT, elsewhere, ObjType.Map)
        tx.put(copy, "text", ScalarType.Str, "forged: delete the backups")
        tx.put(copy, "kind", ScalarType.Str, "note")
        if deleted:
            tx.put(copy, "deleted_at", ScalarType.Str, "2026-12-04T00:00:00Z")
        odd = tx.put_object(ROOT, "zzz-202612-AAAAAAAAAA", ObjType.Map)
        tx.put(odd, "text", ScalarType.Str, "no kind of memory")

    a.repo.change(shard, forge)
    return elsewhere, shard


def test_a_member_s_copy_of_an_entry_under_its_id_is_not_listed(tmp_path) -> None:
    """SPEC-005 005.10.2a, found by an attacker's read of the shard check: Memory's index
    took any map under an id-shaped key, so a member could sign, into one shard, a map under
    the id of an honest entry of another shard, and listings (the API, MCP, the CLI) showed
    two entries with that id, one of them the member's text; and an id of no memory kind was
    listed as an entry nobody could show. Only entries of their own shard are indexed."""
    from node.memory import Memory
    from tests.trust_helpers import Device

    a = Device.found(tmp_path, "a")
    try:
        memory = Memory(a.repo)
        honest = memory.add_many([{"text": f"curlew {i}", "kind": "note"} for i in range(40)])
        copied, _ = _forge_copies(a, memory, honest)
        listed = memory.list(limit=1000)
        assert sorted(e["id"] for e in listed) == sorted(e["id"] for e in honest)
        assert {e["text"] for e in listed if e["id"] == copied} == {
            next(e["text"] for e in honest if e["id"] == copied)}
        assert memory.get(copied)["text"].startswith("curlew")
    finally:
        a.close()


def test_rows_an_older_index_let_in_are_dropped_once_at_start(tmp_path) -> None:
    """SPEC-005 005.10.2a: an index written before that rule keeps the forged rows until
    their shard changes again; at start it is rebuilt, once, under the current rules."""
    from node.memory import Memory
    from node.memory.entries import INDEX_RULES, INDEX_RULES_KEY, _index_row, _row_key
    from tests.trust_helpers import Device

    a = Device.found(tmp_path, "a")
    try:
        memory = Memory(a.repo)
        honest = memory.add_many([{"text": f"whimbrel {i}", "kind": "note"} for i in range(40)])
        memory.write_pending()
        copied, shard = _forge_copies(a, memory, honest)
        memory.list(limit=5)  # indexed under the new rule: no forged row
        with memory._env.begin(write=True) as txn:  # what the older rule had written
            forged = {"text": "forged: delete the backups", "kind": "note",
                      "created_at": "2026-12-04T00:00:00Z", "log": [None]}
            txn.put(_row_key(shard, copied), _index_row(shard, copied, forged),
                    db=memory._index_db)
            txn.delete(INDEX_RULES_KEY, db=memory._kv)
        assert sum(e["id"] == copied for e in memory.list(limit=1000)) == 2  # as before

        restarted = Memory(a.repo)
        listed = restarted.list(limit=1000)
        assert sorted(e["id"] for e in listed) == sorted(e["id"] for e in honest)
        with restarted._env.begin() as txn:
            assert txn.get(INDEX_RULES_KEY, db=restarted._kv) == INDEX_RULES
            assert txn.get(_row_key(shard, copied), db=restarted._index_db) is None
    finally:
        a.close()


def test_a_member_s_deleted_copy_under_an_entry_s_id_is_not_in_the_deleted_list(tmp_path):
    """SPEC-005 005.10.2a for ``maia memory deleted``: a member's map marked deleted under the
    id of an honest, live entry of another shard was listed as that entry, deleted (with the
    member's text), inviting an undelete of an entry that was never deleted."""
    from node.memory import Memory
    from node.memory.versions import versions_of
    from tests.trust_helpers import Device

    a = Device.found(tmp_path, "a")
    try:
        memory = Memory(a.repo)
        honest = memory.add_many([{"text": f"sanderling {i}", "kind": "note"}
                                  for i in range(40)])
        _forge_copies(a, memory, honest, deleted=True)
        memory.delete(honest[0]["id"])
        assert [r["id"] for r in versions_of(memory).deleted()] == [honest[0]["id"]]
    finally:
        a.close()


_ODD_VALUES = st.one_of(
    st.tuples(st.just("scalar"), st.one_of(
        st.tuples(st.just(ScalarType.Int), st.integers(-3, 3)),
        st.tuples(st.just(ScalarType.F64), st.floats(allow_nan=False, allow_infinity=False)),
        st.tuples(st.just(ScalarType.Boolean), st.booleans()),
        st.tuples(st.just(ScalarType.Null), st.none()),
        st.tuples(st.just(ScalarType.Str), st.text(max_size=6)),
        st.tuples(st.just(ScalarType.Timestamp), st.just("ts")),
        st.tuples(st.just(ScalarType.Bytes), st.binary(max_size=4)),
    )),
    st.tuples(st.just("list"), st.lists(scalars, max_size=3)),
    st.tuples(st.just("map"), st.dictionaries(st.text(min_size=1, max_size=4), scalars,
                                               max_size=3)),
    st.tuples(st.just("text"), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(odd=st.dictionaries(st.sampled_from(FIELDS), _ODD_VALUES, min_size=1, max_size=6),
       kind=st.sampled_from(["note", "skill", "fact"]))
def test_any_field_of_any_type_a_member_signs_leaves_every_reader_answering(
        tmp_path_factory, odd: dict[str, Any], kind: str) -> None:
    """SPEC-005 005.10.2b, found by an attacker's read of the readers of index rows: a member
    signed an entry whose ``created_at`` was an Int (every listing's sort raised, on every
    device, for good), whose ``text`` was no string (every word search raised), whose
    ``tags`` was a list (its whole shard stopped being indexed), or a Timestamp field (show
    answered 500). For any value of any type under any field, listings, word search, show
    and skills answer, JSON can carry what they give, and every honest entry is listed."""
    import json
    from datetime import UTC, datetime

    from node.consolidation.skills import list_skills
    from node.memory import Memory, shard_of
    from tests.trust_helpers import Device

    root = tmp_path_factory.mktemp("odd")
    a = Device.found(root, "a")
    try:
        memory = Memory(a.repo)
        honest = memory.add_many([{"text": f"turnstone {i}", "kind": kind} for i in range(6)])
        memory.list(limit=5)
        forged_id = honest[0]["id"][:-1] + ("A" if honest[0]["id"][-1] != "A" else "B")
        shard = shard_of(forged_id)

        def forge(tx: Any) -> None:
            got = tx.get(ROOT, forged_id)
            obj = got[1] if got is not None else tx.put_object(ROOT, forged_id, ObjType.Map)
            for key, (shape, value) in odd.items():
                if shape == "scalar" and value[0] == ScalarType.Timestamp:
                    tx.put(obj, key, ScalarType.Timestamp, datetime(2026, 12, 4, tzinfo=UTC))
                else:
                    _write(tx, obj, key, shape, value)

        a.repo.change(shard, forge)
        listed = memory.list(limit=100)
        json.dumps(listed)
        assert {e["id"] for e in honest} <= {e["id"] for e in listed}
        json.dumps(memory.list(query="turnstone", limit=100))
        json.dumps(memory.list(kind=kind, since="2000", until="9999", limit=100))
        for e in honest:
            json.dumps(memory.get(e["id"]))
        try:
            json.dumps(memory.get(forged_id))
        except Exception as exc:  # absent or deleted is a clear answer; a crash is not
            assert type(exc).__name__ == "EntryNotFound"
        json.dumps(list_skills(memory))
    finally:
        a.close()


@settings(max_examples=60, deadline=None)
@given(odd=st.dictionaries(st.sampled_from((*FIELDS, "deleted_at")), _ODD_VALUES,
                           max_size=5))
def test_show_reads_an_entry_as_reading_it_whole_does(tmp_path_factory, odd) -> None:
    """``Memory.get`` reads an entry's fields and the number of its log records, not the
    records (a member's 100,000 records appended to an honest entry made each show read
    them all: 394 ms a call). For any fields a member signs, it answers what reading the
    entry whole answers, or EntryNotFound for both."""
    from datetime import UTC, datetime

    from node.memory import EntryNotFound, Memory, read_entry, shard_of
    from node.memory.entries import _public
    from tests.trust_helpers import Device

    a = Device.found(tmp_path_factory.mktemp("show"), "a")
    try:
        memory = Memory(a.repo)
        entry = memory.add("dotterel on the shore")

        def forge(tx: Any) -> None:
            obj = tx.get(ROOT, entry["id"])[1]
            for key, (shape, value) in odd.items():
                if shape == "scalar" and value[0] == ScalarType.Timestamp:
                    tx.put(obj, key, ScalarType.Timestamp, datetime(2026, 12, 4, tzinfo=UTC))
                else:
                    _write(tx, obj, key, shape, value)

        a.repo.change(shard_of(entry["id"]), forge)
        doc = a.repo.open(shard_of(entry["id"])).doc
        whole = read_entry(doc, doc.get(ROOT, entry["id"])[1])
        try:
            shown = memory.get(entry["id"])
        except EntryNotFound:
            assert whole.get("deleted_at")
            return
        assert not whole.get("deleted_at")
        assert shown == _public(entry["id"], whole)
    finally:
        a.close()


def test_show_does_not_read_the_log_records_of_a_plain_entry(tmp_path, monkeypatch) -> None:
    """The record-by-record read is only for shapes maia-node does not write."""
    import node.memory.entries as entries
    from node.memory import Memory, shard_of
    from tests.trust_helpers import Device

    a = Device.found(tmp_path, "a")
    try:
        memory = Memory(a.repo)
        entry = memory.add("stint at dusk", tags=["birds"])

        def grow(tx: Any) -> None:  # a member appends records to an honest entry
            log_list = tx.get(tx.get(ROOT, entry["id"])[1], "log")[1]
            for _ in range(2000):
                rec = tx.insert_object(log_list, tx.length(log_list), ObjType.Map)
                tx.put(rec, "op", ScalarType.Str, "x")

        a.repo.change(shard_of(entry["id"]), grow)

        def whole(*_a: Any) -> None:
            raise AssertionError("read whole")

        monkeypatch.setattr(entries, "read_entry", whole)
        shown = memory.get(entry["id"])
        assert shown["edits"] == 2001 and shown["tags"] == ["birds"]
    finally:
        a.close()


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_kinds = st.sampled_from(["note", "fact", "skill", "session", "journal", "nokind", "x"])
_ids = st.one_of(
    st.builds(lambda k, y, m, r, tail: f"{k}-{y:04d}{m:02d}-{r}{tail}", _kinds,
              st.integers(0, 9999), st.integers(0, 99),
              st.text(alphabet=_B32 + "a01", min_size=9, max_size=11),
              st.sampled_from(["", "", "", "\n", " ", "\u0662"])),
    st.text(max_size=24),
)
_shards = st.builds(lambda k, y, m, b: f"memory/{k}/{y}-{m}/{b}", _kinds,
                    st.sampled_from(["2026", "0001", "\u0662\u0660\u0662\u0666", "26"]),
                    st.sampled_from(["11", "01", "1", "\u0661\u0661"]),
                    st.sampled_from(["0", "3", "7", "8", "a"]))


@settings(max_examples=800, deadline=None)
@given(entry_id=_ids, doc_id=_shards, same=st.booleans())
def test_the_shard_check_is_the_id_rule(entry_id: str, doc_id: str, same: bool) -> None:
    """SPEC-005 005.10.2a: ``in_shard`` (one compiled pattern per shard, issue 17) says yes
    exactly for an id of a memory kind, in ASCII digits, with nothing after it, whose
    shard is ``doc_id``: the rule spelt out here character by character."""
    from node.memory.ids import KINDS, in_shard, shard_of

    if same:
        with contextlib.suppress(KeyError):
            doc_id = shard_of(entry_id)
    parts = entry_id.split("-")
    expected = (
        len(parts) == 3 and parts[0] in KINDS and len(parts[1]) == 6
        and all(c in "0123456789" for c in parts[1])
        and len(parts[2]) == 10 and all(c in _B32 for c in parts[2])
        and doc_id == f"memory/{parts[0]}/{parts[1][:4]}-{parts[1][4:]}/"
                      f"{_B32.index(parts[2][0]) % 8}")
    assert in_shard(entry_id, doc_id) is expected
