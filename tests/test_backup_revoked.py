"""A revoked device that still holds a shared repository's key (SPEC-002 §2.10, §5.2, §8.6,
§8.7, §7.1 c): it can write manifests there, so a restore must not let one re-admit it, plant
its config, swap the mesh, or travel to the future; and its changes never count without their
cutoff head. Real meshes made with the real CLI, real repositories, the real commands."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import msgpack
import pytest
from automerge.core import Document

from crdt.identity import open_repo
from crdt.keys import DeviceKey
from crdt.roster import new_tombstone
from crdt.store import Store
from node.backup.anchors import load_anchors, remember
from node.backup.format import Pack, iso, utcnow
from node.backup.repository import Repository, WriteLog
from node.config import NodeConfig
from node.memory import Memory
from tests.backup_util import (
    PASSPHRASE,
    add_entries,
    backup,
    backup_json,
    entries_of,
    make_device,
    roster_of,
    tree,
)
from tests.nodes import cli, make_mesh


@pytest.fixture(autouse=True)
def _passphrase(passphrase_and_scratch) -> None:
    """Every test here: passphrase set, scratch files kept in the test's directory."""


def _key(data: Path) -> DeviceKey:
    return DeviceKey.load(data / "keys" / "device.key")


def _plant_peer(data: Path, peer: str) -> None:
    cfg = NodeConfig.load(data / "config.toml")
    cfg.static_peers = [peer]
    cfg.save(data / "config.toml")


@pytest.fixture
def shared(tmp_path) -> tuple[Path, Path, Path]:
    """Devices a and b of one mesh backing up into one repository, both with the key."""
    a, b = (n.data_dir for n in make_mesh(tmp_path, ["a", "b"]))
    add_entries(a, 10, prefix="from a")
    repo = tmp_path / "repo"
    assert backup(a, "init", "--to", str(repo), "--kdf", "interactive") == 0
    assert backup(a, "create") == 0
    assert backup(b, "create", "--repo", str(repo)) == 0
    return a, b, repo


def test_revoke_warns_that_the_device_keeps_the_backup_key(shared, capsys):
    """SPEC-002 §2.10: revoking a device says that it still holds a shared repository's key,
    which a passphrase change does not take away."""
    a, b, _ = shared
    capsys.readouterr()
    assert cli(a, "device", "revoke", _key(b).device_id, "--keep-all") == 0
    err = capsys.readouterr().err
    assert "still holds that repository's key" in err and "change-passphrase" in err
    assert "maia backup init --to NEW_DIR" in err


def test_a_revoked_devices_newest_manifest_neither_readmits_it_nor_plants_its_config(
        shared, capsys):
    """SPEC-002 §8.7, §8.6: a revokes b; b, still holding the key, writes the newest manifest
    (its own roster, entries written after the revocation, a planted static peer). Restoring
    it over a with --force keeps a's tombstone (b stays revoked), quarantines b's changes
    after its cutoff and keeps a's own config.toml, saying so."""
    a, b, repo = shared
    assert cli(a, "device", "revoke", _key(b).device_id, "--keep-all") == 0
    planted = add_entries(b, 5, prefix="planted by the thief")
    _plant_peer(b, "evil.example:7412")
    assert backup(b, "create", "--repo", str(repo)) == 0
    config_before = (a / "config.toml").read_bytes()

    out = backup_json(capsys, a, "restore", "--to", str(a), "--force")
    assert out["lost_device"] == _key(b).device_id  # the thief's manifest was the newest
    assert (a / "config.toml").read_bytes() == config_before
    assert out["config_kept"] and not out["config_restored"]
    assert out["merged_certs"] >= 1 and out["quarantined"] >= len(planted)
    roster = roster_of(a)
    assert _key(b).public_key in roster.revoked and not roster.is_member(_key(b).public_key)
    assert roster.is_member(_key(a).public_key)
    assert not set(planted) & set(entries_of(a))
    assert "evil.example" not in (a / "config.toml").read_text()

    capsys.readouterr()
    assert backup(a, "restore", "--to", str(a), "--force") == 0
    assert "keeps its own config.toml" in capsys.readouterr().out


def _data(data: Path) -> dict[str, tuple[int, int]]:
    """Every file but LMDB's reader tables (``lock.mdb``, touched by reading the roster)."""
    return {k: v for k, v in tree(data).items() if not k.endswith("lock.mdb")}


def test_a_backup_of_another_mesh_is_refused_unless_allowed(tmp_path, capsys):
    """SPEC-002 §8.7: restoring over a data dir of another mesh is refused, writing nothing,
    unless --allow-other-mesh is given."""
    x = make_device(tmp_path, "x", entries=5)
    assert backup(x, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    assert backup(x, "create") == 0
    a = make_device(tmp_path, "a", entries=3)
    mesh_a = roster_of(a).mesh_id
    before = _data(a)
    capsys.readouterr()
    args = ("restore", "--repo", str(tmp_path / "repo"), "--to", str(a), "--force")
    assert backup(a, *args) == 1
    err = capsys.readouterr().err
    assert "belongs to mesh" in err and "--allow-other-mesh" in err and "Traceback" not in err
    assert _data(a) == before
    assert backup(a, *args, "--allow-other-mesh") == 0
    assert roster_of(a).mesh_id != mesh_a and roster_of(a).mesh_id == roster_of(x).mesh_id


def test_a_manifest_from_the_future_is_refused(tmp_path, capsys):
    """SPEC-002 §5.2, §12.1: a manifest created more than a day ahead is refused (listed as
    such, never the newest, never restored), and it cannot push the rollback anchor ahead."""
    data = make_device(tmp_path, "a", entries=5)
    assert backup(data, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    honest = backup_json(capsys, data, "create")["id"]
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE.encode())
    m = repo.load_manifest(repo.latest())
    m.created_at = iso(utcnow() + timedelta(days=2))
    m.parent = None
    future = repo.write_manifest(m)

    rows = backup_json(capsys, data, "list")["backups"]
    (row,) = [r for r in rows if r["id"] == future.id]
    assert row["status"] == "refused" and "time check" in row["error"]
    target = tmp_path / "restored"
    assert backup_json(capsys, data, "restore", "--to", str(target))["id"] == honest
    assert not remember(data, repo, m)
    assert load_anchors(data)[0][repo.repo_id].manifest == honest


def _newest_of(changes, key: bytes) -> dict[bytes, tuple[int, bytes]]:
    """actor -> (seq, hash) of ``key``'s newest change per actor among ``changes``."""
    out: dict[bytes, tuple[int, bytes]] = {}
    for c in changes:
        if bytes(c.actor_id)[:32] == key and c.seq > out.get(bytes(c.actor_id), (0, b""))[0]:
            out[bytes(c.actor_id)] = (c.seq, c.hash)
    return out


def _two_changes_each(data: Path) -> None:
    """Two writes by one process (one actor): its memory documents get changes 1 and 2."""
    store = Store(data)
    try:
        memory = Memory(open_repo(store, _key(data)))
        for round_ in ("first", "second"):
            memory.add_many([{"text": f"{round_} {i}", "kind": "note"} for i in range(16)])
    finally:
        store.close()


def test_a_revoked_devices_changes_without_their_cutoff_head_fail_verify(shared, capsys):
    """SPEC-002 §7.1 (c): a revoked device's changes count only as ancestors of its cutoff
    head; a backup holding them without that head (the head dropped from the pack) fails
    verification, even though the changes arrive in slices that defer the head."""
    a, b, repo_dir = shared
    _two_changes_each(b)
    assert backup(b, "create", "--repo", str(repo_dir)) == 0
    repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
    m = repo.load_manifest(repo.latest())
    assert m.device == _key(b).device_id
    b_pub, a_key = _key(b).public_key, _key(a)
    cutoff: dict[str, list[tuple[bytes, int, bytes]]] = {}
    victim = None
    for layer in m.layers.values():
        for doc_id, entry in layer.docs.items():
            (names,) = entry.packs
            pack = Pack.decode(repo.get_content(names, m.chunks), "-")
            changes = Document.load(pack.snapshot).get_changes([])
            newest = _newest_of(changes, b_pub)
            if newest:
                cutoff[doc_id] = [(actor, s, h) for actor, (s, h) in sorted(newest.items())]
            if victim is None and doc_id.startswith("memory/") and any(
                    s >= 2 for s, _ in newest.values()):
                victim = (layer, doc_id, entry, pack, changes, newest)
    assert victim is not None
    layer, doc_id, entry, pack, changes, newest = victim
    head = max(h for _, h in newest.values())
    kept = [c for c in changes if c.hash != head]
    assert all(head not in c.deps for c in kept)  # nothing else builds on it
    wlog = WriteLog()
    delta = Pack(doc_id, "delta", [], pack.batches, changes=[c.bytes for c in kept])
    names, sizes = repo.put_content(delta.encode(), wlog)
    deps = {d for c in kept for d in c.deps}
    entry.packs = [names]
    entry.heads = sorted(c.hash.hex() for c in kept if c.hash not in deps)
    m.chunks.update(sizes)
    tomb = new_tombstone(a_key, bytes.fromhex(m.mesh), b_pub, cutoff)
    certs = [*msgpack.unpackb(repo.get_content(m.certs, m.chunks), raw=False), tomb.encode()]
    m.certs, sizes = repo.put_content(msgpack.packb(certs, use_bin_type=True), wlog)
    m.chunks.update(sizes)
    m.created_at, m.parent = iso(utcnow()), None
    forged = repo.write_manifest(m)

    capsys.readouterr()
    assert backup(a, "verify", forged.id) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert "signature check failed" in err and "cutoff head" in err and doc_id in err
    assert err.startswith("maia: ") and "Traceback" not in err  # one sentence
