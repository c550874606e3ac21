"""Restore (SPEC-002 §8): only into an empty data dir unless forced, never under a running node,
built aside and moved into place only when everything checked out, with a new device key or a
handover from the backed-up one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from automerge.core import Document

from crdt.chunks import parse_change
from crdt.keys import DeviceKey
from crdt.store import DOC_LAYERS, Store
from node.backup.repository import Repository
from tests.backup_util import (
    KEY_PASSPHRASE,
    PASSPHRASE,
    add_entries,
    backup,
    doc_heads,
    entries_of,
    make_device,
    roster_of,
    tree,
)
from tests.nodes import NodeProc, cli, cli_out, make_mesh


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch):
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("MAIA_DEVICE_KEY_PASSPHRASE", KEY_PASSPHRASE)


@pytest.fixture
def taken(tmp_path) -> tuple[Path, Path]:
    data = make_device(tmp_path, "a", entries=60)
    repo = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo), "--kdf", "interactive") == 0
    assert backup(data, "create") == 0
    return data, repo


def _err(capsys) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def _key_id(data: Path) -> str:
    return DeviceKey.load(data / "keys" / "device.key").device_id


def test_restore_into_an_empty_dir_with_a_new_key(taken, tmp_path, capsys):
    """SPEC-002 §8.3, §8.4, §8.6: the restored data dir has the same documents and entries, a
    new device key, the backed-up config, no Runtime, and no staging directory is left; the
    CLI names the lost device and how to revoke it."""
    data, _ = taken
    target = tmp_path / "new-laptop"
    capsys.readouterr()
    assert backup(data, "restore", "--to", str(target)) == 0
    out = capsys.readouterr().out
    assert doc_heads(target) == doc_heads(data)
    assert entries_of(target) == entries_of(data) and len(entries_of(target)) == 60
    assert _key_id(target) != _key_id(data)
    assert f"maia device revoke {_key_id(data)}" in out and _key_id(target) in out
    assert (target / "config.toml").read_bytes() == (data / "config.toml").read_bytes()
    assert not (target / "runtime").exists()
    for name in ("identity", "memory", "keys"):
        assert oct((target / name).stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


@pytest.mark.parametrize("present", ["identity", "memory", "keys"])
def test_restore_refuses_a_data_dir_in_use(taken, tmp_path, capsys, present):
    """SPEC-002 §8.1: a target holding identity/, memory/ or keys/ is refused without --force,
    and nothing is written to it."""
    data, _ = taken
    target = tmp_path / "busy"
    (target / present).mkdir(parents=True)
    (target / present / "precious").write_text("mine")
    before = tree(target)
    capsys.readouterr()
    assert backup(data, "restore", "--to", str(target)) == 1
    err = _err(capsys)
    assert f"{target} already holds a data dir ({present}/)" in err and "--force" in err
    assert tree(target) == before
    assert sorted(p.name for p in target.iterdir()) == [present]


def test_force_moves_the_existing_data_aside_and_keeps_the_key(taken, capsys):
    """SPEC-002 §8.1, §8.6: with --force the existing identity, memory and runtime move to
    pre-restore-<time>/ (never deleted), config.toml stays, and the device keeps its key."""
    data, _ = taken
    old_entries = entries_of(data)
    later = add_entries(data, 5, prefix="after the backup")
    key_before = _key_id(data)
    config = (data / "config.toml").read_bytes()
    assert backup(data, "restore", "--to", str(data), "--force") == 0
    assert _key_id(data) == key_before
    assert entries_of(data) == old_entries and not set(later) & set(entries_of(data))
    (aside,) = [p for p in data.iterdir() if p.name.startswith("pre-restore-")]
    assert {p.name for p in aside.iterdir()} == {"identity", "memory", "runtime"}
    assert (data / "config.toml").read_bytes() == config
    assert set(later) <= set(entries_of(aside))  # the newer data is kept, not deleted
    assert backup(data, "restore", "--to", str(data), "--force") == 0  # within the second
    assert len([p for p in data.iterdir() if p.name.startswith("pre-restore-")]) == 2


def test_restore_refused_while_a_node_runs_on_the_target(taken, capsys):
    """SPEC-002 §8.2: even with --force, restore refuses while a node holds the data dir."""
    data, _ = taken
    node = NodeProc(data, "a").start()
    try:
        capsys.readouterr()
        assert backup(data, "restore", "--to", str(data), "--force") == 1
        assert f"a maia node is running on {data}" in _err(capsys)
        assert not [p for p in data.iterdir() if p.name.startswith("pre-restore-")]
        assert node.request("GET", "/v1/status")["device_id"] == _key_id(data)
    finally:
        node.stop()


def test_a_failed_restore_leaves_the_target_unchanged(taken, tmp_path, capsys):
    """SPEC-002 §8.3, §11.2: a damaged chunk found half-way through leaves no target and no
    staging directory behind."""
    data, repo_dir = taken
    repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
    m = repo.load_manifest(repo.latest())
    last_doc = sorted(m.layers["memory"].docs)[-1]
    victim = repo.chunk_path(m.layers["memory"].docs[last_doc].packs[0][0])
    raw = victim.read_bytes()
    victim.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    target = tmp_path / "new-laptop"
    capsys.readouterr()
    assert backup(data, "restore", "--to", str(target)) == 1
    assert f"{victim}: MAC check failed" in _err(capsys)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def _seqs_by(data: Path, key: bytes) -> dict[str, dict[bytes, int]]:
    """Highest seq of each of ``key``'s actors (the key + an incarnation, SPEC-005 §2.2) per
    document, read from the documents."""
    out: dict[str, dict[bytes, int]] = {}
    store = Store(data, readonly=True, layers=DOC_LAYERS)
    try:
        for layer in DOC_LAYERS:
            with store.read_layer(layer) as view:
                for doc_id in view.doc_ids():
                    snap, chunks = view.load_doc(doc_id)
                    doc = Document.load(snap + b"".join(chunks))
                    for c in doc.get_changes([]):
                        info = parse_change(c.bytes)
                        if info.actor[:32] == key:
                            seqs = out.setdefault(doc_id, {})
                            seqs[info.actor] = max(seqs.get(info.actor, 0), info.seq)
        return out
    finally:
        store.close()


def test_with_device_key_the_old_key_endorses_the_new_and_revokes_itself(tmp_path, capsys,
                                                                         monkeypatch):
    """SPEC-002 §8.5, §6.1: the unsealed old key issues exactly an endorsement of the new key and
    a tombstone of itself (cutoff: its highest seq per document, kept: that endorsement), signs
    no document change, and a wrong key passphrase writes nothing."""
    data = make_device(tmp_path, "a", entries=40)
    old = DeviceKey.load(data / "keys/device.key")
    assert backup(data, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    assert backup(data, "create", "--include-device-key") == 0
    target = tmp_path / "replacement"
    monkeypatch.setenv("MAIA_DEVICE_KEY_PASSPHRASE", "wrong")
    capsys.readouterr()
    assert backup(data, "restore", "--to", str(target), "--with-device-key") == 1
    assert "wrong passphrase for the backed-up device key" in _err(capsys)
    assert not target.exists()
    monkeypatch.setenv("MAIA_DEVICE_KEY_PASSPHRASE", KEY_PASSPHRASE)
    assert backup(data, "restore", "--to", str(target), "--with-device-key") == 0
    new = DeviceKey.load(target / "keys/device.key")
    assert new.public_key != old.public_key
    roster = roster_of(target)
    assert roster.is_member(new.public_key) and not roster.is_member(old.public_key)
    cutoff = roster.revoked[old.public_key]
    assert {d: {a: h.seq for a, h in heads.items()} for d, heads in cutoff.items()} == _seqs_by(
        data, old.public_key)
    issued = [c for c in roster.certs.values() if c.signer == old.public_key
              and c.kind != "genesis"]
    assert sorted(c.kind for c in issued) == ["endorse", "revoke"]
    endorse = next(c for c in issued if c.kind == "endorse")
    tomb = next(c for c in issued if c.kind == "revoke")
    assert endorse.body["subject"] == new.public_key and tomb.body["kept"] == [endorse.cert_id]
    # The old key signed no document change: its changes are exactly those of the backup.
    assert _seqs_by(target, old.public_key) == _seqs_by(data, old.public_key)
    assert "identity" in _seqs_by(target, new.public_key)  # the certs went in as the new key
    assert entries_of(target) == entries_of(data)


def test_config_is_restored_only_where_there_is_none(taken, tmp_path):
    """SPEC-002 §8.6: a target with its own config.toml keeps it."""
    data, _ = taken
    target = tmp_path / "configured"
    target.mkdir()
    (target / "config.toml").write_text('[node]\nname = "mine"\n')
    assert backup(data, "restore", "--to", str(target)) == 0
    assert (target / "config.toml").read_text() == '[node]\nname = "mine"\n'
    assert entries_of(target) == entries_of(data)


def test_restored_device_pairs_as_new_and_the_lost_one_is_revoked(tmp_path, capsys):
    """SPEC-002 §8.4: the restored data dir joins through a member as a new device, and the
    member revokes the lost one with the command the restore named."""
    a, b = make_mesh(tmp_path, ["a", "b"])
    add_entries(b.data_dir, 10, prefix="from b")
    repo = tmp_path / "repo"
    assert backup(b.data_dir, "init", "--to", str(repo), "--kdf", "interactive") == 0
    assert backup(b.data_dir, "create") == 0
    c = tmp_path / "c"
    capsys.readouterr()
    assert cli(c, "backup", "restore", "--repo", str(repo), "--to", str(c)) == 0
    revoke_cmd = capsys.readouterr().out.split("revoke the lost device: ")[1].split(" (or")[0]
    request = cli_out(c, "device", "request").split("maia device add ")[1].split()[0]
    invitation = cli_out(a.data_dir, "device", "add", request, "--name", "c").split(
        "maia join ")[1].split()[0]
    assert cli(c, "join", invitation) == 0
    args = revoke_cmd.split()[1:]  # "device revoke <id> --keep-all"
    assert cli(a.data_dir, *args) == 0
    roster = roster_of(a.data_dir)
    assert roster.is_member(DeviceKey.load(c / "keys/device.key").public_key)
    assert DeviceKey.load(b.data_dir / "keys/device.key").public_key in roster.revoked
    assert len(entries_of(c)) == 10 and os.path.isdir(c / "memory")
