"""Backups that fail half-way never look complete (SPEC-002 §4.3, §11.3, §11.4): a full disk
(a real small tmpfs; an injected ENOSPC at the file-writing seam only where mounting is not
permitted), a write error on the manifest itself, a backup killed with SIGKILL, and a target
that is not there."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.backup import repository as repository_module
from node.backup.repository import Repository
from node.backup.verify import verify_backup
from tests.backup_util import PASSPHRASE, add_entries, backup, make_device

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch):
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", PASSPHRASE)


def _err(capsys) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def _mount_small_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True)
    return done.returncode == 0


def _inject_enospc(monkeypatch, after_bytes: int) -> None:
    """Fallback where mounting is not permitted: the seam that writes every file raises ENOSPC
    once ``after_bytes`` have been written, like a disk that fills up."""
    written = [0]
    real = repository_module._write_all

    def filling(fd: int, data: bytes) -> None:
        if written[0] + len(data) > after_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += len(data)
        real(fd, data)

    monkeypatch.setattr(repository_module, "_write_all", filling)


def test_full_disk_leaves_no_backup_that_looks_complete(tmp_path, capsys, monkeypatch):
    """SPEC-002 §11.3, §4.3: ENOSPC during a backup gives a clear error naming the target; no
    manifest, no temporary file and no lock are left; the earlier backup is untouched and
    still restores."""
    data = make_device(tmp_path, "a", entries=20)
    usb = tmp_path / "usb"
    mounted = _mount_small_tmpfs(usb, "384k")
    try:
        repo_dir = usb / "repo"
        assert backup(data, "init", "--to", str(repo_dir), "--kdf", "interactive") == 0
        assert backup(data, "create") == 0
        repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
        (first,) = repo.manifests()
        first_bytes = first.path.read_bytes()
        add_entries(data, 300, noise=1500)  # ~1 MiB of text that hardly compresses
        if not mounted:
            _inject_enospc(monkeypatch, after_bytes=200_000)
        capsys.readouterr()
        assert backup(data, "create") == 1
        err = _err(capsys)
        assert f"the backup target {repo_dir} is full (no space left on device)" in err
        assert "no manifest was written" in err
        assert repo.manifests() == [first] and first.path.read_bytes() == first_bytes
        assert repo.temp_files() == [] and not (repo_dir / "lock").exists()
        copy = tmp_path / "copy"
        shutil.copytree(repo_dir, copy)  # verify writes a record: do it where there is room
        copied = Repository.open(copy, passphrase=PASSPHRASE.encode())
        assert verify_backup(copied, copied.manifests()[0], verifier="test").counts[
            "documents"] >= 2
    finally:
        if mounted:
            subprocess.run(["umount", str(usb)], check=True)
    print("disk full simulated with", "a 384 KiB tmpfs" if mounted else "an injected ENOSPC")


def test_a_write_error_on_the_manifest_itself_leaves_no_manifest(tmp_path, capsys, monkeypatch):
    """SPEC-002 §4.3, §11.3: the manifest is written last through a temporary file; when that
    write fails half-way, neither the manifest nor its temporary file exists afterwards."""
    data = make_device(tmp_path, "a", entries=20)
    repo_dir = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo_dir), "--kdf", "interactive") == 0
    real_atomic, real_write_all = repository_module.write_atomic, repository_module._write_all

    def half_then_eio(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def atomic(path: Path, data: bytes, **kw) -> None:
        if path.name.endswith(".manifest"):
            monkeypatch.setattr(repository_module, "_write_all", half_then_eio)
        try:
            real_atomic(path, data, **kw)
        finally:
            monkeypatch.setattr(repository_module, "_write_all", real_write_all)

    monkeypatch.setattr(repository_module, "write_atomic", atomic)
    capsys.readouterr()
    assert backup(data, "create") == 1
    assert f"cannot write to the backup target {repo_dir} (Input/output error)" in _err(capsys)
    assert list((repo_dir / "manifests").iterdir()) == []
    assert any((repo_dir / "chunks").iterdir())  # chunks were written; prune collects them
    monkeypatch.undo()
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", PASSPHRASE)
    assert backup(data, "create") == 0 and backup(data, "verify") == 0


def test_a_backup_killed_mid_way_is_not_a_backup(tmp_path, capsys):
    """SPEC-002 §4.3, §4.4: SIGKILL after the first chunks leaves no manifest; the dead
    process's lock is stale and the next backup takes it over and completes."""
    data = make_device(tmp_path, "a")
    add_entries(data, 20000)
    repo_dir = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo_dir), "--kdf", "interactive") == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data), "backup", "create"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MAIA_BACKUP_PASSPHRASE": PASSPHRASE},
    )
    try:
        deadline = time.monotonic() + 60
        while not _complete_chunks(repo_dir) and time.monotonic() < deadline:
            assert proc.poll() is None, "the backup finished before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert list((repo_dir / "manifests").iterdir()) == []
    assert (repo_dir / "lock").exists()  # left by the killed process
    written_before = _complete_chunks(repo_dir)
    assert written_before
    capsys.readouterr()
    assert backup(data, "create") == 0
    assert set(written_before) <= set(_complete_chunks(repo_dir))  # whole chunks are reused
    assert backup(data, "verify") == 0
    assert not (repo_dir / "lock").exists()


def test_sigterm_stops_a_scheduled_run_cleanly(tmp_path, capsys):
    """SPEC-002 §10.5, §4.3: the node stops a scheduled run with SIGTERM; the run removes its
    temporary files and its lock, writes no manifest and reports that it stopped."""
    data = make_device(tmp_path, "a")
    add_entries(data, 20000)
    repo_dir = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo_dir), "--kdf", "interactive",
                  "--remember-key") == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data), "backup", "scheduled-run",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _complete_chunks(repo_dir) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run finished before it could be stopped"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    result = json.loads(out.splitlines()[-1])
    assert result["ok"] is False and "stopped" in result["error"]
    assert list((repo_dir / "manifests").iterdir()) == []
    assert not (repo_dir / "lock").exists()
    assert Repository.open(repo_dir, passphrase=PASSPHRASE.encode()).temp_files() == []


def _complete_chunks(repo_dir: Path) -> list[str]:
    return [p.name for p in (repo_dir / "chunks").glob("*/*") if not p.name.startswith(".")]


def test_a_missing_target_is_never_created(tmp_path, capsys):
    """SPEC-002 §11.4: a target that is not there (an unmounted drive) fails clearly, and
    maia-node creates neither it nor its parents."""
    data = make_device(tmp_path, "a", entries=3)
    gone = tmp_path / "media" / "usb" / "maia-backups"
    assert backup(data, "create", "--to", str(gone)) == 1
    assert f"backup repository {gone} does not exist (is the drive mounted?)" in _err(capsys)
    assert backup(data, "init", "--to", str(gone), "--kdf", "interactive") == 1
    assert f"{gone.parent} does not exist (is the drive mounted?)" in _err(capsys)
    assert not (tmp_path / "media").exists()
