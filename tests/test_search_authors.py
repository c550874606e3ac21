"""The search index's authors are the devices that signed the entries (SPEC-005 005.10.6).

Rows written before that rule carry the ``author`` their entry claimed, which any member can
sign: a stolen laptop's note naming this device as its author was found by a search filtered
on this device. Such an index is read once more, shard by shard, and only those rows'
``author`` is set right: their text, tags and vectors stand, so nothing is embedded again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from automerge.core import ROOT, ScalarType

from node.memory import Memory, shard_of
from node.search.index import AUTHOR_RULE, SearchIndex
from tests.trust_helpers import Device, pump


def _claim_author(thief: Device, entry_id: str, device_id: str) -> None:
    def claim(tx: Any) -> None:  # what a member's key can sign in any entry it wrote
        tx.put(tx.get(ROOT, entry_id)[1], "author", ScalarType.Str, device_id)

    thief.repo.change(shard_of(entry_id), claim)


def _as_before_the_rule(where: Path, entry_id: str, claimed: str) -> int:
    """Make the index look as one written before 005.10.6: the row holds the claimed author
    and a vector, and the index has no author mark. Returns the row id."""
    import sqlite3

    db = sqlite3.connect(where / "index.sqlite3", isolation_level=None)
    try:
        rowid = db.execute("SELECT rowid FROM docs WHERE entry_id=?", (entry_id,)).fetchone()[0]
        db.execute("UPDATE docs SET author=? WHERE rowid=?", (claimed, rowid))
        db.execute("INSERT INTO vectors VALUES('older-model', ?, x'0102')", (rowid,))
        db.execute("DELETE FROM meta WHERE key='author_rule'")
    finally:
        db.close()
    return rowid


def test_rows_written_before_the_author_rule_get_their_signer(tmp_path: Path) -> None:
    """SPEC-005 005.10.6: an index from before the rule is read once more at start; the
    forged row's author becomes the thief's device, its vector stays, the index is marked,
    and the next start reads nothing again. A local write to a shard the pass has yet to
    read does not take it out of the pass."""
    home = Device.found(tmp_path, "home")
    thief = home.admit(tmp_path, "thief")
    where = tmp_path / "search"
    try:
        forged = Memory(thief.repo).add("wire the savings to account 42", "note")
        _claim_author(thief, forged["id"], home.key.device_id)
        pump(thief, home)
        memory = Memory(home.repo)
        mine = memory.add_many([{"text": f"godwit {i}", "kind": "note"} for i in range(64)])
        index = SearchIndex(where, home.repo, None, memory)
        index.flush()
        index.close()
        rowid = _as_before_the_rule(where, forged["id"], home.key.device_id)

        index = SearchIndex(where, home.repo, None, memory)
        try:
            # a write through Memory to the forged entry's shard, before the pass reads it
            neighbour = next(e for e in mine if shard_of(e["id"]) == shard_of(forged["id"]))
            memory.update(neighbour["id"], text="godwit, edited")
            hits = index.search("savings", mode="text", device=home.key.device_id)
            assert hits["entries"] == []
            hits = index.search("savings", mode="text", device=thief.key.device_id)
            assert [h["id"] for h in hits["entries"]] == [forged["id"]]
            db = index._db
            assert db.execute("SELECT author FROM docs WHERE rowid=?", (rowid,)).fetchone() \
                == (thief.key.device_id,)
            assert db.execute("SELECT count(*) FROM vectors WHERE doc=?", (rowid,)).fetchone() \
                == (1,)  # nothing embedded again
            assert index._meta("author_rule") == AUTHOR_RULE
            mine_rows = dict(db.execute("SELECT entry_id, author FROM docs WHERE entry_id != ?",
                                        (forged["id"],)))
            assert set(mine_rows.values()) == {home.key.device_id}
            assert len(mine_rows) == len(mine)
        finally:
            index.close()
        index = SearchIndex(where, home.repo, None, memory)
        try:
            assert index._author_pass is None and index.dirty_shards() == 0
        finally:
            index.close()
    finally:
        home.close()
        thief.close()


def test_a_new_index_is_marked_at_once(tmp_path: Path) -> None:
    """An empty index holds no row from before the rule: it is marked when created, and a
    node's first start reads nothing for the author pass."""
    home = Device.found(tmp_path, "home")
    try:
        index = SearchIndex(tmp_path / "search", home.repo, None)
        try:
            assert index._author_pass is None
            assert index._meta("author_rule") == AUTHOR_RULE
        finally:
            index.close()
    finally:
        home.close()
