"""Files planted in a backup target by whoever can write to it (SPEC-002 §2.9): a directory, a
symlink or an oversized sparse file under a name the reader lists is refused as damaged, never
followed or read whole; a listing goes on, naming it. Real repositories, the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.backup.format import MAX_MANIFEST_FILE, MAX_REPO_JSON
from node.backup.repository import Repository
from tests.backup_util import PASSPHRASE, backup, backup_json, entries_of, make_device


@pytest.fixture(autouse=True)
def _passphrase(passphrase_and_scratch) -> None:
    """Every test here: passphrase set, scratch files kept in the test's directory."""


@pytest.fixture
def taken(tmp_path) -> tuple[Path, Repository]:
    data = make_device(tmp_path, "a", entries=10)
    assert backup(data, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    assert backup(data, "create") == 0
    return data, Repository.open(tmp_path / "repo", passphrase=PASSPHRASE.encode())


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)


def _planted(manifests: Path, n: int) -> Path:
    return manifests / f"2026010{n}T000000Z-{str(n) * 64}.manifest"


def test_planted_manifests_are_refused_and_the_rest_goes_on(taken, tmp_path, capsys):
    """SPEC-002 §2.9, §5.5: a directory, a symlink and a sparse file larger than a manifest
    may be, each named like a manifest, are listed as refused by the file check; list and
    restore go on with the honest backup."""
    data, repo = taken
    honest = repo.latest().id
    d = repo.path / "manifests"
    _planted(d, 1).mkdir()
    os.symlink("/dev/null", _planted(d, 2))
    _sparse(_planted(d, 3), MAX_MANIFEST_FILE + 1)
    rows = backup_json(capsys, data, "list")["backups"]
    refused = {r["file"]: r["error"] for r in rows if r["status"] == "refused"}
    assert set(refused) == {str(_planted(d, n)) for n in (1, 2, 3)}
    assert all("file check failed" in e for e in refused.values()), refused
    assert [r["id"] for r in rows if r["status"] != "refused"] == [honest]
    target = tmp_path / "restored"
    assert backup_json(capsys, data, "restore", "--to", str(target))["id"] == honest
    assert entries_of(target) == entries_of(data)


def test_a_symlinked_chunk_or_repo_json_is_refused(taken, capsys):
    """SPEC-002 §2.9, §11.2: a chunk replaced by a symlink (even to its own bytes) fails the
    file check, naming it; a repo.json that is a symlink, or too large, likewise."""
    data, repo = taken
    m = repo.load_manifest(repo.latest())
    chunk = repo.chunk_path(next(iter(m.chunks)))
    copy = repo.path.parent / "elsewhere"
    copy.write_bytes(chunk.read_bytes())
    chunk.unlink()
    os.symlink(copy, chunk)
    capsys.readouterr()
    assert backup(data, "verify") == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert f"{chunk}: file check failed" in err and "Traceback" not in err

    info = repo.path / "repo.json"
    saved = repo.path.parent / "repo.json.saved"
    os.rename(info, saved)
    os.symlink(saved, info)
    assert backup(data, "list") == 1
    assert f"{info}: file check failed" in capsys.readouterr().err
    info.unlink()
    _sparse(info, MAX_REPO_JSON + 1)
    assert backup(data, "list") == 1
    assert f"{info}: file check failed" in capsys.readouterr().err
