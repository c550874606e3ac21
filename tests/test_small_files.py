"""What the node keeps on disk besides the documents: files outside LMDB are written whole and
private (SPEC-001 §4.6, §9.4: node/files.py), a layer in the wrong directory is refused
(§5.4), and a broken Runtime is set aside and rebuilt (§7.3).

Real files, real stores; a failure is a write that raises part-way (a full disk), the way the
backup's fault tests inject it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from node import files
from node.files import write_atomic
from node.sessions.install import RECORD_FILE
from tests.nodes import cli


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_0600_from_its_first_byte_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "node.json", b"{}")
        write_atomic(tmp_path / "unit.service", "x", mode=0o644)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "node.json") == 0o600
    assert _mode(tmp_path / "unit.service") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.json", "unit.service"]


def test_an_existing_file_keeps_its_mode_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    write_atomic(path, '{"a": 1}', mode=0o600, keep_mode=True)
    assert _mode(path) == 0o640
    assert json.loads(path.read_text()) == {"a": 1}


def test_a_write_that_fails_part_way_leaves_the_old_file_and_no_temporary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    write_atomic(path, "old = 1\n")

    def half_then_fail(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(path, "new = 2\n" * 100, write=half_then_fail)
    assert path.read_text() == "old = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_the_file_and_its_directory_are_fsynced(tmp_path: Path, monkeypatch) -> None:
    """A rename is durable only once the directory is fsynced (§9.4); a cache asks for none."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    monkeypatch.setattr("crdt.store.os.fsync", spy)
    write_atomic(tmp_path / "node.json", b"{}")
    assert len(synced) == 2 and synced[1] == str(tmp_path), synced
    assert synced[0].startswith(str(tmp_path / ".node.json."))
    synced.clear()
    write_atomic(tmp_path / "addresses.cache", b"x", durable=False)
    assert synced == []


def test_hooks_installed_json_is_private(tmp_path: Path, monkeypatch) -> None:
    """001.4.6 lists hooks-installed.json as 0600; it was written with the umask's mode."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MAIA_DATA_DIR", raising=False)
    data = tmp_path / "data"
    old = os.umask(0o022)
    try:
        assert cli(data, "hooks", "install", "claude") == 0
    finally:
        os.umask(old)
    assert _mode(data / RECORD_FILE) == 0o600


def test_a_layer_in_the_wrong_directory_is_refused_naming_both(tmp_path: Path) -> None:
    """SPEC-001 §5.4 on a writable open (it was checked only read-only): the memory store
    copied over the identity directory is refused, nothing written to it."""
    import shutil

    from crdt.store import Store, StoreError

    Store(tmp_path / "a").close()
    shutil.rmtree(tmp_path / "a" / "identity")
    shutil.copytree(tmp_path / "a" / "memory", tmp_path / "a" / "identity")
    before = (tmp_path / "a" / "identity" / "data.mdb").read_bytes()
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "a")
    assert "memory" in str(err.value) and "identity" in str(err.value)
    assert (tmp_path / "a" / "identity" / "data.mdb").read_bytes() == before


@pytest.mark.parametrize("damage", ["garbage", "newer"])
def test_a_broken_runtime_is_set_aside_and_rebuilt(tmp_path: Path, damage: str, caplog) -> None:
    """SPEC-001 §7.3: a runtime store that fails to open, or that a newer version wrote, is
    moved to runtime.broken-<UTC time>/ with a warning, and the node starts with a new one
    rebuilt from Memory (it used to refuse to start)."""
    import lmdb

    from node.memory import Memory
    from tests.trust_helpers import Device

    dev = Device.found(tmp_path, "a")
    added = Memory(dev.repo).add_many([{"text": f"kept {i}", "kind": "note", "tags": []}
                                        for i in range(20)])
    dev.store.close()
    runtime = dev.path / "runtime"
    if damage == "garbage":
        (runtime / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    else:
        env = lmdb.open(str(runtime), max_dbs=16)
        meta = env.open_db(b"meta")
        with env.begin(write=True, db=meta) as txn:
            txn.put(b"format_version", b"999")
        env.close()
    with caplog.at_level("WARNING"):
        dev.reopen()
    try:
        aside = sorted(p.name for p in dev.path.iterdir() if p.name.startswith("runtime.broken-"))
        assert len(aside) == 1, aside
        assert any("moved it to" in r.getMessage() for r in caplog.records)
        listed = Memory(dev.repo).list(limit=100)
        assert sorted(e["id"] for e in listed) == sorted(e["id"] for e in added)
    finally:
        dev.close()


def test_another_layer_in_the_runtime_directory_is_refused_not_set_aside(
    tmp_path: Path,
) -> None:
    """SPEC-001 §5.4 before §7.3 (found by review): the memory layer restored into runtime/ is
    refused naming both layers, not moved aside as a broken Runtime with a warning, and
    nothing is created inside it."""
    import shutil

    from crdt.store import Store, StoreError

    Store(tmp_path / "a").close()
    shutil.rmtree(tmp_path / "a" / "runtime")
    shutil.copytree(tmp_path / "a" / "memory", tmp_path / "a" / "runtime")
    before = (tmp_path / "a" / "runtime" / "data.mdb").read_bytes()
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "a")
    assert "memory" in str(err.value) and "runtime" in str(err.value)
    assert not list((tmp_path / "a").glob("runtime.broken-*"))
    assert (tmp_path / "a" / "runtime" / "data.mdb").read_bytes() == before
