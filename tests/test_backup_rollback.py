"""Rollback and renaming attacks on a backup target (SPEC-002 §5.2, §5.5, §5.6, §12): whoever
can write to the drive or the NAS, without the key, renames an old manifest to look newest,
deletes the newest manifests, or copies in a manifest from another repository. Real data dirs,
real repositories, the real CLI (in-process, and as a process where the exit status matters)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.backup.repository import Repository
from tests.backup_util import (
    PASSPHRASE,
    add_entries,
    backup,
    backup_json,
    doc_heads,
    entries_of,
    make_device,
    set_backup_config,
    tree,
)
from tests.nodes import NodeProc, wait_for

FUTURE = "20991231T235959Z"


@pytest.fixture(autouse=True)
def _passphrase(passphrase_and_scratch) -> None:
    """Every test here: passphrase set, scratch files kept in the test's directory."""


@pytest.fixture
def two(tmp_path, capsys) -> tuple[Path, Repository, str, str]:
    """A device with two backups: ``old`` (20 entries) and ``new`` (35 entries)."""
    data = make_device(tmp_path, "a", entries=20)
    assert backup(data, "init", "--to", str(tmp_path / "repo"), "--kdf", "interactive") == 0
    old = backup_json(capsys, data, "create")["id"]
    add_entries(data, 15, prefix="later")
    new = backup_json(capsys, data, "create")["id"]
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE.encode())
    return data, repo, old, new


def _path(repo: Repository, manifest_id: str) -> Path:
    (path,) = (r.path for r in repo.manifests() if r.id == manifest_id)
    return path


def _maia(data: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI as a process, with its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data), "backup", *args],
        capture_output=True, text=True, timeout=120,
        env=os.environ | {"MAIA_BACKUP_PASSPHRASE": PASSPHRASE},
    )


def test_a_renamed_old_manifest_is_refused_not_restored(two, tmp_path, capsys):
    """SPEC-002 §5.5, §5.2: an old manifest renamed to look newest is neither the latest nor
    restored; list shows it refused with the name check, restore warns and restores the real
    newest backup."""
    data, repo, old, new = two
    old_path = _path(repo, old)
    renamed = old_path.with_name(f"{FUTURE}-{old}.manifest")
    old_path.rename(renamed)
    assert repo.latest().id == new
    listing = backup_json(capsys, data, "list")
    rows = {r["id"]: r for r in listing["backups"]}
    assert rows[new]["status"] == "unverified" and listing["backups"][0]["id"] == new
    assert rows[old]["status"] == "refused"
    assert f"{renamed}: name check failed" in rows[old]["error"]
    target = tmp_path / "restored"
    proc = _maia(data, "restore", "--to", str(target))
    assert proc.returncode == 0, proc.stderr
    assert f"{renamed.name} is refused" in proc.stderr and "name check failed" in proc.stderr
    assert new[:12] in proc.stdout
    assert doc_heads(target) == doc_heads(data) and len(entries_of(target)) == 35
    # Named explicitly, it is still refused, naming the file and the check.
    capsys.readouterr()
    assert backup(data, "verify", old) == 1
    assert f"{renamed}: name check failed" in capsys.readouterr().err


def test_a_name_that_disagrees_with_the_content_is_refused(two, capsys):
    """SPEC-002 §5.2, §5.6, §5.5: a manifest re-used under another time, one copied from
    another repository (another passphrase) under a newer name, and one naming another
    repository (sealed with the right key) are each refused; verify fails naming them, and the
    newest honest backup stays the latest."""
    data, repo, old, new = two
    # An old manifest copied under a newer time: its content says otherwise.
    copy = _path(repo, old).with_name(f"{FUTURE}-{old}.manifest")
    shutil.copy(_path(repo, old), copy)
    proc = _maia(data, "verify")
    assert proc.returncode == 1
    assert f"{copy}: name check failed" in proc.stderr.splitlines()[-1]
    assert repo.latest().id == new
    copy.unlink()
    # A manifest of another repository, put in as the newest.
    other = data.parent / "other-repo"
    assert backup(data, "init", "--to", str(other), "--kdf", "interactive",
                  "--passphrase-file", str(_secret(data.parent, "another passphrase"))) == 0
    assert backup(data, "create", "--repo", str(other), "--passphrase-file",
                  str(data.parent / "secret")) == 0
    (foreign,) = (other / "manifests").iterdir()
    planted = repo.path / "manifests" / f"{FUTURE}-{foreign.name.split('-', 1)[1]}"
    shutil.copy(foreign, planted)
    assert repo.latest().id == new
    rows = backup_json(capsys, data, "list")["backups"]
    assert [r["status"] for r in rows if r["id"] != new and r["id"] != old] == ["refused"]
    assert "MAC check failed" in _maia(data, "verify").stderr
    planted.unlink()
    # Sealed with the right key but naming another repository (a writer holding the key).
    m = repo.load_manifest(repo.find(new))
    m.repo = "f" * 32
    m.created_at = m.created_at[:20] + "999999999Z"
    forged = repo.write_manifest(m)
    assert repo.latest().id == new
    proc = _maia(data, "verify")
    assert proc.returncode == 1 and f"{forged.path}: repository check failed" in proc.stderr


def _secret(where: Path, text: str) -> Path:
    path = where / "secret"
    path.write_text(text + "\n")
    return path


def test_deleted_newest_manifests_are_warned_about_and_restore_refuses(two, tmp_path, capsys):
    """SPEC-002 §12.1, §12.2, §12.3, §12.4: after the newest manifest is deleted, list warns
    (JSON field), verify verifies what is left and exits nonzero naming the rollback, and
    restore refuses, writing nothing, unless --allow-rollback; the memory survives deleting
    Runtime."""
    data, repo, old, new = two
    anchors = json.loads((data / "backup-anchors.json").read_text())
    assert anchors["repos"][repo.repo_id]["manifest"] == new
    assert oct((data / "backup-anchors.json").stat().st_mode & 0o777) == "0o600"
    listing = backup_json(capsys, data, "list")
    assert listing["rollback"]["checked"] and not listing["rollback"]["detected"]
    _path(repo, new).unlink()
    shutil.rmtree(data / "runtime", ignore_errors=True)  # Runtime is rebuildable: no excuse
    listing = backup_json(capsys, data, "list")
    rb = listing["rollback"]
    assert rb["detected"] and rb["remembered"]["manifest"] == new
    assert rb["newest"]["manifest"] == old and "ROLLBACK" in rb["warning"]
    assert backup(data, "list") == 0
    assert f"ROLLBACK: backup {new[:12]}" in capsys.readouterr().err
    proc = _maia(data, "verify", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["verified"][0]["id"] == old and out["rollback"]["detected"]
    assert f"ROLLBACK: backup {new[:12]}" in proc.stderr.splitlines()[-1]
    target = tmp_path / "restored"
    proc = _maia(data, "restore", "--to", str(target))
    assert proc.returncode == 1 and "Restore refused" in proc.stderr
    assert "--allow-rollback" in proc.stderr and not target.exists()
    before = tree(data)
    proc = _maia(data, "restore", "--force")  # --force is not consent to a rollback
    assert proc.returncode == 1 and "Restore refused" in proc.stderr
    assert tree(data) == before
    proc = _maia(data, "restore", "--to", str(target), "--allow-rollback", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["id"] == old and out["rollback"]["detected"]
    assert len(entries_of(target)) == 20


def test_a_fresh_machine_cannot_tell_and_says_so(two, tmp_path, capsys):
    """SPEC-002 §12.2, §12.1: a data dir that never wrote to the target reports
    checked: false; after restoring, it remembers the backup it came from."""
    _data, repo, old, new = two
    _path(repo, new).unlink()
    fresh = tmp_path / "fresh"
    proc = _maia(fresh, "restore", "--repo", str(repo.path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["id"] == old and out["rollback"] == {
        "checked": False, "detected": False, "remembered": None, "newest": None,
        "warning": out["rollback"]["warning"]}
    assert "cannot be noticed" in out["rollback"]["warning"]
    remembered = json.loads((fresh / "backup-anchors.json").read_text())["repos"]
    assert remembered[repo.repo_id]["manifest"] == old


def test_a_scheduled_run_reports_the_rollback_in_the_node_status(tmp_path):
    """SPEC-002 §12.3: the scheduled run checks the target before taking its backup, and the
    node shows the rollback in GET /v1/backup (rollback and warning)."""
    data = make_device(tmp_path, "a", entries=10)
    secret = _secret(tmp_path, PASSPHRASE)
    repo_dir = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo_dir), "--kdf", "interactive",
                  "--passphrase-file", str(secret), "--remember-key") == 0
    assert backup(data, "create") == 0
    add_entries(data, 5, prefix="later")
    assert backup(data, "create") == 0
    repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
    newest = repo.latest()
    newest.path.unlink()
    set_backup_config(data, interval="2s")
    node = NodeProc(data, "a", env={"MAIA_BACKUP_MIN_INTERVAL": "1"}).start()
    try:
        state = wait_for(lambda: (s := node.request("GET", "/v1/backup"))["runs"] >= 1 and s,
                         timeout=60, what="a scheduled run")
        assert state["rollback"] and f"ROLLBACK: backup {newest.id[:12]}" in state[
            "rollback"]["warning"]
        assert "ROLLBACK" in state["warning"]
    finally:
        node.stop()
