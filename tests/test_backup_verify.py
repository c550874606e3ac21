"""Verification by restore, and the bad-input cases: wrong passphrase, tampered, truncated and
missing files, each named in the error (SPEC-002 §7, §11.1, §11.2, §1.2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgpack
import pytest

from crdt.keys import DeviceKey
from crdt.roster import new_genesis
from node.backup.format import Pack
from node.backup.repository import Repository, WriteLog
from tests.backup_util import (
    PASSPHRASE,
    backup,
    backup_json,
    files,
    make_device,
    set_backup_config,
    tree,
)
from tests.nodes import cli


@pytest.fixture(autouse=True)
def _passphrase(passphrase_and_scratch) -> None:
    """Every test here: passphrase set, scratch files kept in the test's directory."""


@pytest.fixture
def taken(tmp_path) -> tuple[Path, Repository]:
    data = make_device(tmp_path, "a", entries=120)
    assert backup(data, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    assert backup(data, "create") == 0
    return data, Repository.open(tmp_path / "repo", passphrase=PASSPHRASE.encode())


def _fails(capsys, data: Path, *args: str) -> str:
    capsys.readouterr()
    assert backup(data, *args) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after any progress lines
    assert err.startswith("maia: ") and "Traceback" not in err  # one sentence
    return err + "\n"


def test_verify_restores_checks_and_records(taken, tmp_path, capsys):
    """SPEC-002 §7.1, §7.2, §7.3, §1.2: verify restores into a temporary dir (removed after),
    writes an encrypted record naming the manifest, and list shows verified instead of
    unverified; the time lands in Runtime."""
    data, repo = taken
    rows = backup_json(capsys, data, "list")["backups"]
    assert [r["status"] for r in rows] == ["unverified"] and rows[0]["verified_at"] is None
    out = backup_json(capsys, data, "verify")["verified"]
    assert out[0]["counts"]["documents"] == len(repo.load_manifest(repo.latest()).layers[
        "memory"].docs) + 1
    assert out[0]["counts"]["changes"] >= 120
    assert list((tmp_path / "scratch").iterdir()) == []  # the temporary data dir is gone
    (record,) = files(repo.path / "verified", "*.record")
    assert record.name.startswith(repo.latest().id + ".")
    plain = msgpack.unpackb(repo.keys.open(record.read_bytes()), raw=False)
    assert plain["manifest"] == repo.latest().id
    assert plain["verifier"] == DeviceKey.load(data / "keys/device.key").device_id
    assert repo.latest().id.encode() not in record.read_bytes()  # sealed
    rows = backup_json(capsys, data, "list")["backups"]
    assert rows[0]["status"] == "verified" and rows[0]["verified_at"] == plain["verified_at"]
    status = json.loads(_status(capsys, data))
    assert status["backup"]["last_verified"] == plain["verified_at"]
    assert status["backup"]["warning"] is None


def _status(capsys, data: Path) -> str:
    capsys.readouterr()
    assert cli(data, "status", "--json") == 0
    return capsys.readouterr().out


def test_status_warns_without_a_verified_backup_or_an_old_one(taken, capsys):
    """SPEC-002 §7.4, §1.2: maia status warns when no backup is verified, and when the newest
    verified one is older than [backup] warn_after."""
    data, _ = taken
    capsys.readouterr()
    assert cli(data, "status") == 0
    assert "Backup     WARNING: no verified backup exists" in capsys.readouterr().out
    assert backup(data, "verify") == 0
    capsys.readouterr()
    assert cli(data, "status") == 0
    assert "WARNING" not in capsys.readouterr().out
    set_backup_config(data, warn_after="1s")
    time.sleep(1.2)
    capsys.readouterr()
    assert cli(data, "status") == 0
    assert "WARNING: the newest verified backup is" in capsys.readouterr().out


def test_wrong_passphrase_is_clear_and_writes_nothing(taken, capsys, monkeypatch):
    """SPEC-002 §11.1: a wrong passphrase fails to unwrap the master key; the message names the
    repository and nothing is written, anywhere."""
    data, repo = taken
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", "not the passphrase")
    repo_before, data_before = tree(repo.path), tree(data)
    for args in (["create"], ["verify"], ["list"], ["prune"]):
        err = _fails(capsys, data, *args)
        assert err == f"maia: wrong passphrase for backup repository {repo.path}\n"
    restored = data.parent / "restored"
    err = _fails(capsys, data, "restore", "--to", str(restored))
    assert "wrong passphrase" in err and not restored.exists()
    assert tree(repo.path) == repo_before
    assert tree(data) == data_before


def _chunk(repo: Repository) -> Path:
    m = repo.load_manifest(repo.latest())
    name = m.layers["memory"].docs[sorted(m.layers["memory"].docs)[0]].packs[0][0]
    return repo.chunk_path(name)


@pytest.mark.parametrize("damage, check", [
    ("flip", "MAC check"), ("truncate", "size check"), ("delete", "presence check"),
])
def test_damaged_chunk_fails_verify_naming_the_file(taken, capsys, damage, check):
    """SPEC-002 §11.2, §7.1 (a), §7.2: a flipped byte, a truncated file and a deleted chunk each
    fail verification, naming the file and the check; no record is written."""
    data, repo = taken
    path = _chunk(repo)
    raw = path.read_bytes()
    if damage == "flip":
        path.write_bytes(raw[:50] + bytes([raw[50] ^ 0x01]) + raw[51:])
    elif damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.unlink()
    err = _fails(capsys, data, "verify")
    assert f"{path}: {check} failed" in err and "FAILED verification" in err
    assert files(repo.path / "verified", "*") == []
    restored = data.parent / "restored"
    assert f"{path}: {check} failed" in _fails(capsys, data, "restore", "--to", str(restored))
    assert not restored.exists()


def test_tampered_manifest_and_repo_json_are_named(taken, capsys):
    """SPEC-002 §11.2, §5.2, §2.7: a manifest whose bytes or name were altered, and a damaged
    repo.json (told apart from a wrong passphrase), each fail naming the file."""
    data, repo = taken
    ref = repo.latest()
    raw = ref.path.read_bytes()
    ref.path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x80]))
    assert f"{ref.path}: MAC check failed" in _fails(capsys, data, "verify")
    ref.path.write_bytes(raw)
    other_id = "0" * 64
    renamed = ref.path.with_name(ref.path.name.replace(ref.id, other_id))
    ref.path.rename(renamed)
    assert f"{renamed}: id check failed" in _fails(capsys, data, "verify")
    renamed.rename(ref.path)
    repo_json = repo.path / "repo.json"
    info = json.loads(repo_json.read_text())
    info["kdf"]["salt"] = "00" * 16
    repo_json.write_text(json.dumps(info))
    err = _fails(capsys, data, "verify")
    assert f"{repo_json}: checksum check failed" in err and "passphrase" not in err


def test_unreadable_record_leaves_the_backup_unverified(taken, capsys):
    """SPEC-002 §7.3: only a record that decrypts and names the manifest makes it verified."""
    data, repo = taken
    assert backup(data, "verify") == 0
    (record,) = files(repo.path / "verified", "*.record")
    raw = record.read_bytes()
    record.write_bytes(raw[:-3] + b"xyz")
    assert backup_json(capsys, data, "list")["backups"][0]["status"] == "unverified"
    # A valid record that names another manifest does not count either.
    other = repo.keys.seal(msgpack.packb({"v": 1, "manifest": "f" * 64, "verified_at":
                                          "2026-01-01T00:00:00Z", "verifier": "", "counts": {}}))
    record.write_bytes(other)
    assert backup_json(capsys, data, "list")["backups"][0]["status"] == "unverified"


def _forge(repo: Repository, honest, edit) -> str:
    """The honest manifest, altered by ``edit`` and sealed with the right key: what a bug or a
    malicious writer holding the key could produce. Returns the new manifest's id."""
    m = repo.load_manifest(honest)
    edit(m)
    m.created_at = m.created_at.replace("Z", "").rsplit(".", 1)[0] + ".999999999Z"
    m.parent = None
    return repo.write_manifest(m).id


def test_forged_content_fails_the_signature_heads_and_mesh_checks(taken, capsys):
    """SPEC-002 §7.1 (b), (c), (d): a batch whose signature was altered, heads that differ from
    what the packs rebuild, and a roster of another mesh, each fail verification."""
    data, repo = taken
    honest = repo.latest()
    wlog = WriteLog()

    def bad_signature(m) -> None:
        doc_id = sorted(m.layers["memory"].docs)[0]
        names = m.layers["memory"].docs[doc_id].packs[0]
        pack = Pack.decode(repo.get_content(names, m.chunks), "-")
        record = msgpack.unpackb(pack.batches[0], raw=False)
        record[5] = bytes([record[5][0] ^ 1]) + record[5][1:]
        pack.batches[0] = msgpack.packb(record, use_bin_type=True)
        new, sizes = repo.put_content(pack.encode(), wlog)
        m.layers["memory"].docs[doc_id].packs = [new]
        m.chunks.update(sizes)

    forged = _forge(repo, honest, bad_signature)
    err = _fails(capsys, data, "verify", forged[:16])
    assert "signature check failed" in err and "bad_signature" in err and "chunks/" in err

    def wrong_heads(m) -> None:
        e = m.layers["memory"].docs[sorted(m.layers["memory"].docs)[0]]
        e.heads = ["ab" * 32]

    forged = _forge(repo, honest, wrong_heads)
    err = _fails(capsys, data, "verify", forged[:16])
    assert "heads check failed" in err and forged in err

    def other_mesh(m) -> None:
        stranger = new_genesis(DeviceKey.generate(), "other", "x")
        names, sizes = repo.put_content(msgpack.packb([stranger.encode()], use_bin_type=True),
                                        wlog)
        m.certs = names
        m.chunks.update(sizes)

    forged = _forge(repo, honest, other_mesh)
    assert "mesh check failed" in _fails(capsys, data, "verify", forged[:16])
    assert files(repo.path / "verified", "*") == []
    assert backup(data, "verify", honest.id) == 0  # the honest one still verifies
