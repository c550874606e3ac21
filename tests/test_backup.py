"""Taking backups (SPEC-002 §1 to §6): what goes in, how it is sealed and named, how increments
reuse what is there, the lock, and the device key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
from pathlib import Path

import msgpack
import nacl.pwhash
import pytest
from automerge.core import ROOT, ScalarType

from crdt.identity import open_repo
from crdt.keys import DeviceKey
from crdt.store import Store, format_version
from node.backup.create import create_backup
from node.backup.crypto import SEAL_OVERHEAD, unseal_device_key
from node.backup.format import MANIFEST_VERSION, MAX_CHUNK_PLAINTEXT, BackupError, Pack
from node.backup.repository import RepoLocked, Repository, WriteLog
from node.memory import Memory
from tests.backup_util import (
    KEY_PASSPHRASE,
    PASSPHRASE,
    add_entries,
    backup,
    backup_json,
    doc_heads,
    entries_of,
    make_device,
    tree,
)
from tests.nodes import NodeProc, wait_for


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch):
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("MAIA_DEVICE_KEY_PASSPHRASE", KEY_PASSPHRASE)


def _init(data: Path, repo: Path) -> Repository:
    assert backup(data, "init", "--to", str(repo), "--kdf", "interactive") == 0
    return Repository.open(repo, passphrase=PASSPHRASE.encode())


def _latest(repo: Repository):
    return repo.load_manifest(repo.latest())


def _plaintexts(repo: Repository) -> list[bytes]:
    """Every chunk's content, decrypted with the repository key."""
    out = []
    for f in repo.chunk_files():
        out.append(repo.read_chunk(f.name, f.stat().st_size))
    return out


# -- the whole story: a node that syncs while it is backed up -----------------------------------
def test_backup_of_a_syncing_node_restores_identical(mesh_factory, tmp_path, capsys):
    """SPEC-002 §4.1, §4.2, §3.1, §1.1: backups taken from a running node while it syncs with a
    peer verify, and the last one restores elsewhere with identical heads and entries."""
    a, b = mesh_factory("a", "b")
    a.add_peer(b)
    wait_for(lambda: a.connected() and b.connected(), what="a and b connected")
    stop = threading.Event()
    written: list[int] = []

    def writer(node: NodeProc, tag: str) -> None:
        n = 0
        while not stop.is_set() and n < 250:
            node.add_memory(f"{tag} note {n}")
            n += 1
            time.sleep(0.01)
        written.append(n)

    threads = [threading.Thread(target=writer, args=(n, n.name)) for n in (a, b)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(e["text"].startswith("b ") for e in a.entries()) >= 20,
                 what="entries of b synced to a")
        repo_dir = tmp_path / "repo"
        _init(a.data_dir, repo_dir)
        mid = backup_json(capsys, a.data_dir, "create")  # while both write and sync
        assert mid["changed_documents"] >= 2
        assert backup(a.data_dir, "verify", mid["id"]) == 0
        state = a.request("GET", "/v1/backup")  # the CLI told the running node (§7.2)
        assert state["last_verified"] and state["warning"] is None
        with pytest.raises(urllib.error.HTTPError) as bad:
            a.request("POST", "/v1/backup/verified", {"manifest": "nope", "verified_at": "x"})
        assert bad.value.code == 400
        # found by an attacker's read: a time dated 2999 silenced the old-backup warning for
        # good (SPEC-002 §7.4); one ahead of this clock is refused
        with pytest.raises(urllib.error.HTTPError) as ahead:
            a.request("POST", "/v1/backup/verified",
                      {"manifest": mid["id"], "verified_at": "2999-01-01T00:00:00Z"})
        assert ahead.value.code == 400
        assert a.request("GET", "/v1/backup")["last_verified"] == state["last_verified"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(n > 0 for n in written)
    wait_for(lambda: {e["id"] for e in a.entries()} == {e["id"] for e in b.entries()},
             what="a and b converged")
    expected = {e["id"]: e["text"] for e in a.entries()}
    assert any(t.startswith("b ") for t in expected.values())
    a.stop()  # a's store is now quiet, so its heads can be compared exactly
    last = backup_json(capsys, a.data_dir, "create")
    assert last["parent"] == mid["id"]
    restored = tmp_path / "restored"
    assert backup(a.data_dir, "restore", "--to", str(restored)) == 0
    assert doc_heads(restored) == doc_heads(a.data_dir)
    assert entries_of(restored) == expected
    # The mid-sync backup holds a consistent subset: every entry it has, a has too.
    earlier = tmp_path / "earlier"
    assert backup(a.data_dir, "restore", mid["id"][:12], "--to", str(earlier)) == 0
    assert set(entries_of(earlier).items()) <= set(expected.items())
    # The restored data dir runs as a node and serves the same entries.
    node = NodeProc(restored, "restored").start()
    try:
        assert {e["id"]: e["text"] for e in node.entries()} == expected
    finally:
        node.stop()


# -- classification --------------------------------------------------------------------------
def test_backup_holds_identity_and_memory_and_nothing_of_runtime(tmp_path, capsys):
    """SPEC-002 §1.1, §3.1: only Identity and Memory (logical content, certificates and config);
    never Runtime, the API token, node.json or the device key; works with Runtime deleted."""
    data = make_device(tmp_path, "a", entries=30)
    repo = _init(data, tmp_path / "repo")
    token = (data / "runtime" / "api.token")
    token.parent.mkdir(exist_ok=True)
    token.write_text("tok-" + os.urandom(16).hex())
    seed_line = (data / "keys" / "device.key").read_bytes().splitlines()[1]
    shutil.rmtree(data / "runtime")  # a backup must not need (or read) Runtime
    assert backup(data, "create") == 0
    m = _latest(repo)
    assert set(m.layers) == {"identity", "memory"}
    assert list(m.layers["identity"].docs) == ["identity"]
    assert all(d.startswith("memory/") for d in m.layers["memory"].docs)
    assert m.config is not None and m.device_key is None
    blobs = _plaintexts(repo)
    assert all(b"tok-" not in blob for blob in blobs)
    assert all(seed_line not in blob for blob in blobs)
    assert all(base64.b64decode(seed_line) not in blob for blob in blobs)
    assert not (data / "runtime").exists()  # and creating it was not the backup's business
    restored = tmp_path / "restored"
    assert backup(data, "restore", "--to", str(restored)) == 0
    assert not (restored / "runtime").exists()


# -- repository, keys and names --------------------------------------------------------------
def test_repository_is_sealed_and_names_reveal_nothing(tmp_path):
    """SPEC-002 §2.1 to §2.5, §2.7: layout, argon2id MODERATE by default, a wrapped master key,
    every object sealed, chunk names keyed hashes of the content."""
    data = make_device(tmp_path, "a")
    secret = "unmistakable-" + os.urandom(6).hex()
    store = Store(data)
    try:
        Memory(open_repo(store, DeviceKey.load(data / "keys/device.key"))).add(secret)
    finally:
        store.close()
    repo_dir = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo_dir)) == 0  # default cost: MODERATE
    assert backup(data, "create") == 0
    info = json.loads((repo_dir / "repo.json").read_text())
    assert info["kdf"]["opslimit"] == nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    assert info["kdf"]["memlimit"] == nacl.pwhash.argon2id.MEMLIMIT_MODERATE
    assert len(bytes.fromhex(info["kdf"]["salt"])) == 16
    assert len(bytes.fromhex(info["master_key"])) == 32 + SEAL_OVERHEAD
    assert {p.name for p in repo_dir.iterdir()} == {"repo.json", "chunks", "manifests", "verified"}
    for f in repo_dir.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
    chunks = list(repo.chunk_files())
    assert chunks
    for f in chunks:
        payload = repo.read_chunk(f.name, f.stat().st_size)
        assert f.parent.name == f.name[:2]
        assert f.name == hashlib.blake2b(payload, key=repo.keys.naming, digest_size=32).hexdigest()
        assert f.name != hashlib.blake2b(payload, digest_size=32).hexdigest()
        assert f.name != hashlib.sha256(payload).hexdigest()
    assert any(secret.encode() in repo.read_chunk(f.name, f.stat().st_size) or secret.encode()
               in _unpacked(repo.read_chunk(f.name, f.stat().st_size)) for f in chunks)


def _unpacked(payload: bytes) -> bytes:
    """A full pack's snapshot is compressed by Automerge; expand it to find the text."""
    from automerge.core import Document

    try:
        pack = Pack.decode(payload, "-")
    except Exception:
        return b""
    if pack.kind != "full":
        return b"".join(pack.changes)
    return b"".join(c.bytes for c in Document.load(pack.snapshot).get_changes([]))


def test_large_content_is_split_into_chunks_of_at_most_8_mib(tmp_path):
    """SPEC-002 §2.5, §3.4: content over 8 MiB becomes consecutive chunks, each at most 8 MiB of
    plaintext, read back in order; storing it again writes nothing."""
    repo = Repository.init(tmp_path / "repo", PASSPHRASE.encode(), kdf="interactive")
    content = os.urandom(MAX_CHUNK_PLAINTEXT * 2 + 12345)
    wlog = WriteLog()
    names, sizes = repo.put_content(content, wlog)
    assert len(names) == 3 and wlog.new_chunks == 3
    for name in names:
        assert sizes[name] - SEAL_OVERHEAD <= MAX_CHUNK_PLAINTEXT
    assert repo.get_content(names, sizes) == content
    again = WriteLog()
    assert repo.put_content(content, again)[0] == names
    assert again.new_chunks == 0 and again.new_bytes == 0


# -- incrementality --------------------------------------------------------------------------
def test_incremental_backup_stores_only_new_data(tmp_path, capsys):
    """SPEC-002 §3.3, §3.4, §5.3: unchanged documents reuse their pack lists; a changed one gets
    exactly one new delta chunk; nothing new when nothing changed; each manifest lists all."""
    data = make_device(tmp_path, "a", entries=400)
    repo = _init(data, tmp_path / "repo")
    first = backup_json(capsys, data, "create")
    m1 = _latest(repo)
    assert first["new_chunks"] == len(m1.chunks)
    added = add_entries(data, 1, prefix="late")
    second = backup_json(capsys, data, "create")
    m2 = _latest(repo)
    assert second["parent"] == first["id"]
    assert second["new_chunks"] == 1
    assert second["new_bytes"] < first["new_bytes"] / 10
    changed = [d for d in m2.layers["memory"].docs
               if m2.layers["memory"].docs[d].heads != m1.layers["memory"].docs.get(d, m2.layers[
                   "memory"].docs[d]).heads or d not in m1.layers["memory"].docs]
    assert len(changed) == 1 and added[0].split("-")[0] in changed[0]
    for doc_id, e in m2.layers["memory"].docs.items():
        before = m1.layers["memory"].docs[doc_id]
        if doc_id in changed:
            assert e.packs[:-1] == before.packs and len(e.packs) == len(before.packs) + 1
            new_chunk = e.packs[-1][0]
            assert new_chunk not in m1.chunks
            delta = Pack.decode(repo.read_chunk(new_chunk, m2.chunks[new_chunk]), "-")
            assert delta.kind == "delta" and len(delta.changes) == 1
            assert sorted(h.hex() for h in delta.base_heads) == before.heads
        else:
            assert e.packs == before.packs
    assert set(m1.chunks) < set(m2.chunks)  # self-contained: lists old chunks too
    third = backup_json(capsys, data, "create")
    assert third["new_chunks"] == 0 and third["new_bytes"] == 0
    assert _latest(repo).chunks == m2.chunks


def test_consolidation_after_16_packs_and_when_deltas_outgrow_the_full_pack(tmp_path):
    """SPEC-002 §3.3: a pack list never exceeds 16 packs, and deltas that outgrow the last full
    pack are replaced by one full pack."""
    from node.memory import shard_of

    data = make_device(tmp_path, "a")
    repo = Repository.init(tmp_path / "repo", PASSPHRASE.encode(), kdf="interactive")
    key = DeviceKey.load(data / "keys/device.key")
    store = Store(data)  # the backup reads the same store the edits go to
    try:
        crdt_repo = open_repo(store, key)
        mem = Memory(crdt_repo)
        big = mem.add_many([{"text": os.urandom(1500).hex(), "kind": "fact"} for _ in range(120)])
        # Entries fall into 8 shards at random: edit the fullest one, so its full pack is large
        # enough (>= 15 entries) that 16 small deltas cannot outgrow it by chance.
        by_shard: dict[str, list[str]] = {}
        for e in big:
            by_shard.setdefault(shard_of(e["id"]), []).append(e["id"])
        doc = max(by_shard, key=lambda d: len(by_shard[d]))
        target = by_shard[doc][0]

        def take(layer: str, doc_id: str):
            create_backup(store, repo, device=key.device_id)
            return _latest(repo).layers[layer].docs[doc_id]

        lengths = [len(take("memory", doc).packs)]
        for i in range(16):
            mem.update(target, text=f"small edit {i}")
            lengths.append(len(take("memory", doc).packs))
        assert lengths == [*range(1, 17), 1]
        # One delta larger than the whole full pack of the identity document.
        before = take("identity", "identity")
        # (a raw signed change: the profile's own fields are bounded, crdt.identity.PROFILE_RULES)
        big = os.urandom(20000).hex()
        crdt_repo.change("identity", lambda tx: tx.put(ROOT, "filler", ScalarType.Str, big))
        after = take("identity", "identity")
    finally:
        store.close()
    assert len(before.packs) == 1 and len(after.packs) == 1
    assert after.packs != before.packs and after.full_bytes > before.full_bytes * 2


# -- the lock and the data dir ------------------------------------------------------------------
def test_lock_names_its_holder_and_stale_locks_go(tmp_path, capsys):
    """SPEC-002 §4.4: a live holder blocks a backup (named in the error); a dead one on this host
    is removed; another host's lock needs --break-lock and 24 h of age."""
    data = make_device(tmp_path, "a", entries=3)
    repo = _init(data, tmp_path / "repo")
    lock = repo.path / "lock"
    host = socket.gethostname()
    lock.write_text(json.dumps({"host": host, "pid": os.getpid(), "started_at": "x",
                                "started": time.time()}))
    assert backup(data, "create") == 1
    assert f"in use by {host} pid {os.getpid()}" in capsys.readouterr().err
    assert repo.manifests() == []
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    lock.write_text(json.dumps({"host": host, "pid": dead, "started_at": "x",
                                "started": time.time()}))
    assert backup(data, "create") == 0
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started_at": "x",
                                "started": time.time() - 3600}))
    with pytest.raises(RepoLocked), repo.lock(break_lock=True):
        pass
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started_at": "x",
                                "started": time.time() - 25 * 3600}))
    assert backup(data, "create") == 1
    assert "--break-lock" in capsys.readouterr().err
    assert backup(data, "create", "--break-lock") == 0
    assert len(repo.manifests()) == 2


def test_taking_a_backup_does_not_modify_the_data_dir(tmp_path):
    """SPEC-002 §4.5, §4.3, §12.1: the data dir's files are untouched (LMDB reader-table files
    aside) but for backup-anchors.json, and the repository gains chunks and exactly one
    manifest, with no temporary file left."""
    data = make_device(tmp_path, "a", entries=50)
    repo = _init(data, tmp_path / "repo")
    before = {k: v for k, v in tree(data).items() if not k.endswith("lock.mdb")}
    assert backup(data, "create") == 0
    after = {k: v for k, v in tree(data).items() if not k.endswith("lock.mdb")}
    anchors = after.pop("backup-anchors.json")
    assert after == before and anchors[0] > 0
    assert len(repo.manifests()) == 1 and repo.temp_files() == []
    assert not (repo.path / "lock").exists()


# -- manifests -------------------------------------------------------------------------------
def test_manifest_fields_id_and_versions(tmp_path):
    """SPEC-002 §5.1, §5.2, §5.4: the manifest's fields; its id is the keyed hash of its
    plaintext and must match the file name; newer manifest or repo.json versions are refused."""
    data = make_device(tmp_path, "a", entries=10)
    repo = _init(data, tmp_path / "repo")
    assert backup(data, "create") == 0
    ref = repo.latest()
    plain = repo.keys.open(ref.path.read_bytes())
    m = msgpack.unpackb(plain, raw=False)
    assert m["format"] == "maia-backup-manifest" and m["v"] == MANIFEST_VERSION == 2
    assert m["repo"] == repo.repo_id  # SPEC-002 §5.6: bound to its repository
    assert m["created_at"].endswith("Z") and len(m["created_at"].split(".")[1]) == 10
    assert m["device"] == DeviceKey.load(data / "keys/device.key").device_id
    assert len(bytes.fromhex(m["mesh"])) == 32 and m["parent"] is None
    for layer in ("identity", "memory"):
        assert m["layers"][layer]["format_version"] == format_version(layer)
        for e in m["layers"][layer]["docs"].values():
            assert set(e) == {"heads", "changes", "packs", "bytes", "full_bytes"}
            assert all(n in m["chunks"] for pack in e["packs"] for n in pack)
    assert ref.id == hashlib.blake2b(plain, key=repo.keys.naming, digest_size=32).hexdigest()
    assert ref.path.name == f"{ref.created:%Y%m%dT%H%M%SZ}-{ref.id}.manifest"
    # A manifest from a newer maia-node (sealed with the right key) is refused, not guessed.
    newer = msgpack.packb({**m, "v": MANIFEST_VERSION + 1}, use_bin_type=True)
    newer_id = hashlib.blake2b(newer, key=repo.keys.naming, digest_size=32).hexdigest()
    path = ref.path.with_name(f"{ref.created:%Y%m%dT%H%M%SZ}-{newer_id}.manifest")
    path.write_bytes(repo.keys.seal(newer))
    with pytest.raises(BackupError, match="newer maia-node"):
        repo.load_manifest(repo.find(newer_id))
    path.unlink()
    info = json.loads((repo.path / "repo.json").read_text())
    info["v"] = 2
    from node.backup.repository import _check

    info["check"] = _check(info)
    (repo.path / "repo.json").write_text(json.dumps(info))
    with pytest.raises(BackupError, match="newer maia-node"):
        Repository.open(repo.path, passphrase=PASSPHRASE.encode())


# -- the device key ----------------------------------------------------------------------------
def test_device_key_only_on_request_sealed_and_carried_forward(tmp_path, capsys):
    """SPEC-002 §6.1, §6.2, §2.6: the device key goes in only with --include-device-key, sealed
    under its own passphrase; later backups carry it until forget-device-key; a scheduled run
    never adds it; the cached repository key alone does not open it."""
    data = make_device(tmp_path, "a", entries=5)
    repo = _init(data, tmp_path / "repo")
    key_file = (data / "keys/device.key").read_bytes()
    assert backup(data, "create", "--remember-key") == 0
    assert _latest(repo).device_key is None
    cache = data / "keys" / "backup.key"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert backup(data, "create", "--include-key") == 0
    m = _latest(repo)
    sealed = repo.read_chunk(m.device_key, m.chunks[m.device_key])
    assert key_file not in sealed and key_file.splitlines()[1] not in sealed
    assert unseal_device_key(sealed, KEY_PASSPHRASE.encode()) == key_file
    from node.backup.format import WrongPassphrase

    with pytest.raises(WrongPassphrase):
        unseal_device_key(sealed, PASSPHRASE.encode())  # the repository's passphrase: no
    add_entries(data, 2)
    assert backup(data, "create") == 0
    assert _latest(repo).device_key == m.device_key  # carried forward
    capsys.readouterr()
    assert backup(data, "forget-device-key") == 0
    assert _latest(repo).device_key is None
    sigterm_before = signal.getsignal(signal.SIGTERM)
    assert backup(data, "scheduled-run", "--json") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ok"] is True
    # run in-process, it gives the caller its SIGTERM handling back (it left its own, which
    # turned a later SIGTERM of the test run into "the node stopped the scheduled backup")
    assert signal.getsignal(signal.SIGTERM) is sigterm_before
    assert _latest(repo).device_key is None
    assert len(repo.manifests()) >= 1


def test_change_passphrase_rewraps_only(tmp_path, monkeypatch):
    """SPEC-002 §2.6, §2.2: a new passphrase re-wraps the master key; no chunk or manifest is
    rewritten and the old passphrase stops working."""
    data = make_device(tmp_path, "a", entries=5)
    repo = _init(data, tmp_path / "repo")
    assert backup(data, "create") == 0
    before = {k: v for k, v in tree(repo.path).items() if k != "repo.json"}
    monkeypatch.setenv("MAIA_BACKUP_NEW_PASSPHRASE", "brand new passphrase")
    assert backup(data, "change-passphrase") == 0
    assert {k: v for k, v in tree(repo.path).items() if k != "repo.json"} == before
    from node.backup.format import WrongPassphrase

    with pytest.raises(WrongPassphrase):
        Repository.open(repo.path, passphrase=PASSPHRASE.encode())
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", "brand new passphrase")
    assert backup(data, "verify") == 0


def test_passphrase_sources(tmp_path, capsys, monkeypatch):
    """SPEC-002 §2.8: --passphrase-file (trailing newline stripped), the environment, the
    cached key; without any and without a terminal, a clear error; never an empty one."""
    import io

    data = make_device(tmp_path, "a", entries=3)
    secret = tmp_path / "secret"
    secret.write_text(PASSPHRASE + "\n")
    monkeypatch.delenv("MAIA_BACKUP_PASSPHRASE")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    repo_dir = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo_dir), "--kdf", "interactive",
                  "--passphrase-file", str(secret)) == 0
    Repository.open(repo_dir, passphrase=PASSPHRASE.encode())  # the newline was not part of it
    capsys.readouterr()
    assert backup(data, "create") == 1
    err = capsys.readouterr().err
    assert "no passphrase given" in err and "MAIA_BACKUP_PASSPHRASE" in err
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", "")
    assert backup(data, "create") == 1
    assert "empty passphrase is not accepted" in capsys.readouterr().err
    monkeypatch.delenv("MAIA_BACKUP_PASSPHRASE")
    assert backup(data, "create", "--passphrase-file", str(secret), "--remember-key") == 0
    assert backup(data, "create") == 0  # the cached key, no passphrase at all
    assert len(Repository.open(repo_dir, passphrase=PASSPHRASE.encode()).manifests()) == 2


def test_verification_times_compare_as_times_and_never_from_the_future() -> None:
    """SPEC-002 §7.4: a newer verification replaces an older one whatever its spelling of UTC
    (``Z`` or ``+00:00``), and a time ahead of this clock is refused."""
    from node.backup.runtime_status import newer_verification

    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    held = {"last_verified": "2027-01-15T07:00:00.5+00:00"}
    assert newer_verification(held, "m", "2027-01-15T07:30:00Z", now=now)["last_verified"] \
        == "2027-01-15T07:30:00Z"
    assert newer_verification(held, "m", "2027-01-15T06:59:59Z", now=now) == {}
    with pytest.raises(ValueError, match="future"):
        newer_verification(held, "m", "2999-01-01T00:00:00Z", now=now)
