"""Stores written by earlier releases open, migrate, verify and sync on this one (SPEC-001 §5).

Each ``tests/fixtures/golden/format-<N>.tar.gz`` was written by the release that introduced
store format N (``scripts/make_golden_store.py``): a founder (``desk``), a member (``laptop``)
and a revoked device (``phone``) with memory written, edited and deleted on two devices, and an
encrypted backup of ``desk``. ``expected.json`` says what must be read back. A release that
changes a format adds its own golden store; none is ever removed.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from crdt.documents import DOC_SCHEMA, doc_schema
from crdt.identity import get_profile, open_repo
from crdt.keys import DeviceKey, device_id
from crdt.store import Store, format_version
from node.config import NodeConfig
from node.memory import Memory
from tests.nodes import NodeProc, cli, cli_out, wait_for

pytestmark = pytest.mark.golden  # scripts/upgrade-deps runs these first

GOLDEN = sorted((Path(__file__).parent / "fixtures" / "golden").glob("format-*.tar.gz"))


@pytest.fixture(params=GOLDEN, ids=[p.name.removesuffix(".tar.gz") for p in GOLDEN])
def golden(request, tmp_path: Path) -> tuple[Path, dict]:
    with tarfile.open(request.param) as tar:
        tar.extractall(tmp_path, filter="data")
    for name in ("desk", "laptop", "phone"):
        (tmp_path / name).chmod(0o700)
        (tmp_path / name / "keys").chmod(0o700)
        (tmp_path / name / "keys" / "device.key").chmod(0o600)
        cfg = NodeConfig.load(tmp_path / name / "config.toml")
        cfg.static_peers = []  # the ports of the run that wrote it are long gone
        cfg.extra.pop("backup", None)
        cfg.save(tmp_path / name / "config.toml")
    return tmp_path, json.loads((tmp_path / "expected.json").read_text())


def test_there_is_a_golden_store_for_the_current_format() -> None:
    """A format change without its golden store would go untested on the next release."""
    assert f"format-{format_version('memory')}.tar.gz" in {p.name for p in GOLDEN}


def test_a_golden_store_opens_migrates_and_reads_back_the_same(golden) -> None:
    """SPEC-001 §5.5 to §5.7, §6.5: every held change still verifies against the roster
    (nothing is quarantined), every document loads, Memory and Identity read back what the
    writing release read, and a migration leaves a compacted copy of what it migrated."""
    root, expected = golden
    for name in ("desk", "laptop"):
        data = root / name
        store = Store(data)
        try:
            repo = open_repo(store, DeviceKey.load(data / "keys" / "device.key"))
            assert repo.recheck() == {}, f"{name}: changes failed verification"
            for doc_id in store.doc_ids():
                doc = repo.open(doc_id).doc  # loads, or raises
                assert doc_schema(doc) in (None, *range(1, DOC_SCHEMA + 1)), doc_id
            memory = Memory(repo)
            memory.flush_index()
            rows = memory.list(limit=1000)
            got = {e["id"]: {"text": e["text"], "kind": e["kind"], "tags": sorted(e["tags"])}
                   for e in rows}
            assert got == expected["entries"], name
            assert not set(expected["deleted"]) & set(got)
            assert get_profile(repo) == {k: v for k, v in expected["profile"].items()
                                         if isinstance(v, str)}
            members = sorted(k for k in repo.roster.members)
            assert sorted(device_id(k) for k in members) == expected["members"]
            assert sorted(device_id(k) for k in repo.roster.revoked) == \
                expected["revoked"]
        finally:
            store.close()
        for layer, old in expected["store_format"].items():
            if old < format_version(layer):
                assert (data / "pre-migration" / f"{layer}-v{old}" / "data.mdb").is_file()


def test_a_golden_backup_verifies_and_restores(golden, monkeypatch) -> None:
    """SPEC-002 on a repository an earlier release wrote: verify restores it in a scratch
    dir and checks it; a restore into an empty dir reads back the same entries."""
    root, expected = golden
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", expected["backup_passphrase"])
    repo = root / "backup-repo"
    assert cli(root / "desk", "backup", "verify", "--repo", str(repo)) == 0
    restored = root / "restored"
    assert cli(root / "desk", "backup", "restore", "--repo", str(repo), "--to",
               str(restored)) == 0
    out = json.loads(cli_out(restored, "memory", "list", "--json", "--limit", "1000"))
    assert {e["id"]: e["text"] for e in out} == {
        k: v["text"] for k, v in expected["entries"].items()}


@pytest.mark.slow
def test_golden_devices_run_as_nodes_and_sync_again(golden) -> None:
    """The upgraded desk and laptop start as real nodes, find each other and sync a new
    entry both ways; the revoked phone is refused."""
    root, expected = golden
    desk, laptop = NodeProc(root / "desk", "desk"), NodeProc(root / "laptop", "laptop")
    phone = NodeProc(root / "phone", "phone")
    try:
        desk.start()
        laptop.start()
        laptop.add_peer(desk)
        wait_for(lambda: desk.connected() and laptop.connected(), timeout=30,
                 what="desk and laptop connected")
        new = laptop.request("POST", "/v1/memory", {"text": "written after the upgrade"})
        wait_for(lambda: any(e["id"] == new["id"] for e in desk.request(
            "GET", "/v1/memory?limit=100")["entries"]), timeout=30, what="desk to get it")
        back = desk.request("POST", "/v1/memory", {"text": "and back", "kind": "fact"})
        wait_for(lambda: any(e["id"] == back["id"] for e in laptop.request(
            "GET", "/v1/memory?limit=100")["entries"]), timeout=30, what="laptop to get it")
        phone.start()
        phone.add_peer(desk)
        wait_for(lambda: "revoked" in json.dumps(phone.request("GET", "/v1/peers")),
                 timeout=30, what="the phone to be refused as revoked")
        assert expected["devices"]["phone"] not in desk.connected()
    finally:
        for node in (desk, laptop, phone):
            node.stop()
    os.sync()
