"""Retention and prune (SPEC-002 §9): exactly what the rule keeps, never the newest verified
backup, chunks only after manifests, per device."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crdt.identity import open_repo
from crdt.keys import DeviceKey
from crdt.store import DOC_LAYERS, Store
from node.backup.create import create_backup
from node.backup.repository import Repository
from node.backup.retention import Candidate, RetentionRule, select_keep
from node.backup.verify import verify_backup
from node.memory import Memory, shard_of
from tests.backup_util import (
    PASSPHRASE,
    add_entries,
    backup,
    backup_json,
    make_device,
    set_backup_config,
)

# Nine backups, newest first, named by letter. 2026-01-05 is a Monday (ISO week 2);
# 2026-02-01 is a Sunday (ISO week 5) and 2026-02-02 a Monday (ISO week 6).
TIMES = {
    "A": datetime(2026, 2, 2, 12, 0, tzinfo=UTC),
    "B": datetime(2026, 2, 2, 8, 0, tzinfo=UTC),
    "C": datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
    "D": datetime(2026, 1, 13, 8, 0, tzinfo=UTC),
    "E": datetime(2026, 1, 12, 8, 0, tzinfo=UTC),
    "F": datetime(2026, 1, 6, 18, 0, tzinfo=UTC),
    "G": datetime(2026, 1, 6, 9, 0, tzinfo=UTC),
    "H": datetime(2026, 1, 5, 20, 0, tzinfo=UTC),
    "I": datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
}
RULE = RetentionRule(keep_daily=2, keep_weekly=2, keep_monthly=2)


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch):
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", PASSPHRASE)


def _cands() -> list[Candidate]:
    return [Candidate(k, t) for k, t in TIMES.items()]


def test_rule_keeps_the_newest_of_each_day_week_and_month():
    """SPEC-002 §9.1, §9.2: 2 daily keep A (Feb 2) and C (Feb 1); 2 weekly keep A (W06) and
    C (W05); 2 monthly keep A (Feb) and D (Jan); the newest verified one always stays."""
    assert select_keep(_cands(), RULE, set()) == {"A", "C", "D"}
    assert select_keep(_cands(), RULE, {"G"}) == {"A", "C", "D", "G"}
    assert select_keep(_cands(), RULE, {"G", "E"}) == {"A", "C", "D", "E"}
    assert select_keep(_cands(), RetentionRule(0, 0, 0), {"I"}) == {"A", "I"}
    assert select_keep(_cands(), RetentionRule(7, 0, 0), set()) == {"A", "C", "D", "E", "F",
                                                                     "H"}
    assert select_keep(_cands(), RetentionRule(0, 3, 0), set()) == {"A", "C", "D"}
    assert select_keep(_cands(), RetentionRule(0, 4, 0), set()) == {"A", "C", "D", "F"}


def _series(tmp_path: Path) -> tuple[Path, Repository, dict[str, str], str]:
    """A data dir and one real backup per entry of TIMES (an entry added before each).

    Before the second backup (H), one entry of the first (I) grows far beyond its whole shard,
    so H consolidates that shard into one full pack (SPEC-002 §3.3) and the pack I wrote for it
    is needed by I alone. Entries fall into shards at random; without this, whether any shard
    consolidates between I and G (and so whether prune has a chunk to delete) was chance.
    Returns also the name of that pack's chunk of I.
    """
    data = make_device(tmp_path, "a")
    assert backup(data, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE.encode())
    device = DeviceKey.load(data / "keys/device.key").device_id
    ids: dict[str, str] = {}
    first: list[str] = []
    for letter, when in sorted(TIMES.items(), key=lambda kv: kv[1]):
        added = add_entries(data, 3, prefix=letter)
        if letter == "H":
            _outgrow(data, first[0])
        first = first or added
        store = Store(data, readonly=True, layers=DOC_LAYERS)
        try:
            ids[letter] = create_backup(store, repo, device=device, now=when).manifest.id
        finally:
            store.close()
    grown = shard_of(first[0])
    packs = {k: repo.load_manifest(repo.find(ids[k])).layers["memory"].docs[grown].packs
             for k in "IH"}
    assert len(packs["I"]) == len(packs["H"]) == 1, f"H did not consolidate {grown}: {packs}"
    (only_i,) = packs["I"][0]
    assert only_i not in packs["H"][0]
    return data, repo, ids, only_i


def _outgrow(data: Path, entry_id: str) -> None:
    """Replace the entry's text with 16 KB of random hex: far more than its shard's full pack
    of a few short entries, however the entries fell into shards."""
    store = Store(data)
    try:
        repo = open_repo(store, DeviceKey.load(data / "keys" / "device.key"))
        Memory(repo).update(entry_id, text=os.urandom(8192).hex())
    finally:
        store.close()


def test_prune_keeps_exactly_what_the_rule_says(tmp_path, capsys):
    """SPEC-002 §9.1, §9.2, §9.3: prune with the rule from config.toml deletes B, E, F, H and I,
    keeps G because it is the only verified backup, and --dry-run deletes nothing."""
    data, repo, ids, only_i = _series(tmp_path)
    set_backup_config(data, keep_daily=2, keep_weekly=2, keep_monthly=2)
    verify_backup(repo, repo.find(ids["G"]), verifier="test")
    letter = {v: k for k, v in ids.items()}
    chunks = {k: set(repo.load_manifest(repo.find(i)).chunks) for k, i in ids.items()}
    unneeded = set().union(*(chunks[k] for k in "BEFHI")) - set().union(
        *(chunks[k] for k in "ACDG"))
    assert only_i in unneeded
    plan = backup_json(capsys, data, "prune", "--dry-run")
    assert sorted(letter[i] for i in plan["deleted"]) == ["B", "E", "F", "H", "I"]
    assert len(repo.manifests()) == 9
    plan = backup_json(capsys, data, "prune")
    assert sorted(letter[r.id] for r in repo.manifests()) == ["A", "C", "D", "G"]
    assert plan["chunks_deleted"] == len(unneeded)
    assert not any(repo.chunk_path(c).exists() for c in unneeded)
    # What remains is whole: every remaining backup restores, and every chunk left is needed.
    needed = set()
    for ref in repo.manifests():
        needed |= set(repo.load_manifest(ref).chunks)
        verify_backup(repo, ref, verifier="test")
    assert {f.name for f in repo.chunk_files()} == needed


def test_the_only_verified_backup_survives_any_rule(tmp_path, capsys):
    """SPEC-002 §9.2: with every keep_* at 0, prune keeps the newest backup and the one verified
    backup, even though it is the oldest."""
    data, repo, ids, _ = _series(tmp_path)
    set_backup_config(data, keep_daily=0, keep_weekly=0, keep_monthly=0)
    verify_backup(repo, repo.find(ids["I"]), verifier="test")
    assert backup(data, "prune") == 0
    assert {r.id for r in repo.manifests()} == {ids["A"], ids["I"]}


def test_prune_removes_only_old_temporary_files_and_holds_the_lock(tmp_path, capsys):
    """SPEC-002 §9.3, §4.4: temporary files older than 24 h go, fresh ones (a backup in
    progress elsewhere) stay; prune refuses while another process holds the lock."""
    data, repo, _, _ = _series(tmp_path)
    old = repo.path / "chunks" / "ab" / ".abcd.123.tmp"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 25 * 3600,) * 2)
    fresh = repo.path / "manifests" / ".0123.tmp"
    fresh.write_bytes(b"y")
    assert backup_json(capsys, data, "prune")["temp_files_deleted"] == 1
    assert not old.exists() and fresh.exists()
    (repo.path / "lock").write_text(f'{{"host": "{os.uname().nodename}", "pid": {os.getpid()}}}')
    capsys.readouterr()
    assert backup(data, "prune") == 1
    assert "in use by" in capsys.readouterr().err


def test_rules_apply_per_device(tmp_path, capsys):
    """SPEC-002 §9.4: two devices sharing a repository each keep their newest backup."""
    a = make_device(tmp_path, "a", entries=3)
    b = make_device(tmp_path, "b", entries=3)
    repo_dir = tmp_path / "repo"
    assert backup(a, "init", "--to", str(repo_dir), "--kdf", "interactive") == 0
    newest = {}
    set_backup_config(b, target=str(repo_dir))
    for data in (a, b, a, b):
        newest[data.name] = backup_json(capsys, data, "create")["id"]
    set_backup_config(a, keep_daily=0, keep_weekly=0, keep_monthly=0)
    assert backup(a, "prune") == 0
    repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
    assert {r.id for r in repo.manifests()} == set(newest.values())
