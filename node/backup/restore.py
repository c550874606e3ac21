"""Restoring a backup: rebuild Identity and Memory from a manifest in a staging directory,
checking every chunk, signature, roster membership and head on the way, and only then move
the result into place (SPEC-002 §8). Verification runs exactly this rebuild into a temporary
data dir (§7.1), so a backup that verifies is one that restores.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from automerge.core import Document

from crdt import (
    CertError,
    DeviceKey,
    Rejected,
    Repo,
    Roster,
    Store,
    cutoff_heads,
    decode_cert,
    device_id,
    format_version,
    layer_of,
    new_endorsement,
    new_tombstone,
    open_repo,
    record_certs,
    valid_doc_id,
    verify_changes,
)

from ..datadir import DataDirBusy, DataDirLock
from .anchors import remember
from .crypto import unseal_device_key
from .format import BACKED_UP_LAYERS, BackupError, Corrupt, Manifest, Pack, stamp, utcnow
from .repository import ManifestRef, Repository, fsync_dir

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
VERIFY_SLICE = 50_000  # changes verified and stored per transaction while rebuilding
OCCUPYING = ("identity", "memory", "keys")  # SPEC-002 §8.1


@dataclass
class RebuildReport:
    """What a rebuild restored, and the highest seq of each author per document."""

    mesh_id: bytes
    documents: int = 0
    changes: int = 0
    batches: int = 0
    certs: int = 0
    chunks: int = 0
    bytes: int = 0
    max_seq: dict[str, dict[bytes, int]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"documents": self.documents, "changes": self.changes, "batches": self.batches,
                "certs": self.certs, "chunks": self.chunks, "bytes": self.bytes}


def rebuild(
    repo: Repository,
    manifest: Manifest,
    ref: ManifestRef,
    dest: Path,
    *,
    progress: Progress | None = None,
) -> RebuildReport:
    """Build ``dest/identity`` and ``dest/memory`` from ``manifest``, checking SPEC-002 §7.1
    (a) to (e). The first failure raises :class:`Corrupt` naming the file and the check."""
    progress = progress or (lambda what, done, total: None)
    # (a) every listed chunk is there, at its listed size, before any heavy work.
    for name, size in manifest.chunks.items():
        repo.check_chunk_file(name, size)
    # (d) the roster's genesis yields the manifest's mesh.
    mesh_id = bytes.fromhex(manifest.mesh)
    certs_at = repo.chunk_path(manifest.certs[0]) if manifest.certs else ref.path
    try:
        raws = msgpack.unpackb(repo.get_content(manifest.certs, manifest.chunks), raw=False)
        certs = [decode_cert(raw) for raw in raws]
    except CertError as exc:
        raise Corrupt(certs_at, "certificate check", str(exc)) from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Corrupt(certs_at, "certificate check", f"unreadable certificates: {exc}") from None
    roster = Roster.build(mesh_id, certs)
    if roster.founder is None:
        raise Corrupt(ref.path, "mesh check", "no genesis certificate yields the backup's mesh id")
    # (e) formats this code can restore.
    for layer in BACKED_UP_LAYERS:
        if layer not in manifest.layers:
            raise Corrupt(ref.path, "manifest format check", f"no {layer} layer")
        if manifest.layers[layer].format_version > format_version(layer):
            raise BackupError(
                f"backup {manifest.id[:12]} holds a {layer} layer of format "
                f"{manifest.layers[layer].format_version}; this maia-node reads up to "
                f"{format_version(layer)}: upgrade maia-node"
            )
    report = RebuildReport(mesh_id, certs=len(certs), chunks=len(manifest.chunks),
                           bytes=manifest.stored_bytes)
    dest.mkdir(mode=0o700, exist_ok=True)
    store = Store(dest, layers=BACKED_UP_LAYERS)
    try:
        store.put_certs([(c.cert_id, c.encode()) for c in certs])
        store.set_identity_value("mesh_id", mesh_id)
        total = sum(len(manifest.layers[layer].docs) for layer in BACKED_UP_LAYERS)
        for layer in BACKED_UP_LAYERS:
            for doc_id, entry in manifest.layers[layer].docs.items():
                if not valid_doc_id(doc_id) or layer_of(doc_id) != layer:
                    raise Corrupt(ref.path, "manifest format check",
                                  f"document id {doc_id!r} in the {layer} layer")
                _rebuild_doc(repo, manifest, ref, store, roster, doc_id, entry.packs,
                             entry.heads, report)
                report.documents += 1
                progress("documents", report.documents, total)
    finally:
        store.close()
    # (e) the rebuilt environments open, read-only, at this code's format versions.
    Store(dest, readonly=True, layers=BACKED_UP_LAYERS).close()
    return report


def _rebuild_doc(
    repo: Repository,
    manifest: Manifest,
    ref: ManifestRef,
    store: Store,
    roster: Roster,
    doc_id: str,
    packs: list[list[str]],
    heads: list[str],
    report: RebuildReport,
) -> None:
    seqs = report.max_seq.setdefault(doc_id, {})
    deferred: dict[bytes, bytes] = {}  # cutoff head -> its actor, for heads a slice deferred
    where = ref.path
    for names in packs:
        where = repo.chunk_path(names[0])
        pack = Pack.decode(repo.get_content(names, manifest.chunks), where)
        if pack.doc != doc_id:
            raise Corrupt(where, "pack check", f"the pack belongs to {pack.doc!r}, not {doc_id!r}")
        if pack.kind == "full":
            try:
                chunks = [c.bytes for c in Document.load(pack.snapshot).get_changes([])]
            except Exception as exc:
                raise Corrupt(where, "document check", f"{doc_id} does not load: {exc}") from None
        else:
            chunks = pack.changes
        for start in range(0, len(chunks), VERIFY_SLICE):
            # (c) signed by the change's actor, a batch that verifies, valid under the roster.
            try:
                verified = verify_changes(
                    store=store, roster=roster, mesh_id=roster.mesh_id, doc_id=doc_id,
                    chunks=chunks[start:start + VERIFY_SLICE], batch_records=pack.batches,
                    defer_heads=True,  # the manifest heads check below settles a cutoff
                )
            except Rejected as exc:
                raise Corrupt(where, "signature check",
                              f"{doc_id}: {exc.code}: {exc.detail}") from None
            if verified.unsettled:
                deferred |= _cutoffs_needed(roster, doc_id, verified.changes)
            store.commit_changes(doc_id, verified.changes, verified.batches, ())
            report.changes += len(verified.changes)
            report.batches += len(verified.batches)
            for info in verified.changes:
                if info.seq > seqs.get(info.actor, 0):
                    seqs[info.actor] = info.seq
        if pack.kind == "full":
            # The saved document whose changes were just verified becomes the snapshot: the
            # restored node then loads it at once instead of replaying every change.
            meta = store.doc_meta(doc_id)
            store.write_snapshot(doc_id, pack.snapshot, meta.changes if meta else 0, ())
    _check_cutoffs(store, doc_id, deferred, where)
    # (b) the document loads from what was stored, at exactly the manifest's heads.
    snapshot, stored = store.load_doc(doc_id)
    try:
        doc = Document.load(snapshot + b"".join(stored))
    except Exception as exc:
        raise Corrupt(ref.path, "document check", f"{doc_id} does not load: {exc}") from None
    got = doc.get_heads()
    if sorted(h.hex() for h in got) != sorted(heads):
        raise Corrupt(ref.path, "heads check",
                      f"{doc_id} rebuilt at other heads than the manifest records")
    meta = store.commit_changes(doc_id, [], [], got)
    if stored:  # deltas after the full pack: fold them into the snapshot too
        store.write_snapshot(doc_id, doc.save(), meta.changes, got)


def _cutoffs_needed(roster: Roster, doc_id: str, changes: list) -> dict[bytes, bytes]:
    """The cutoff heads (hash -> actor) that let a revoked device's changes of one slice in
    (SPEC-005 §5.4)."""
    out: dict[bytes, bytes] = {}
    for info in changes:
        head = roster.may_author(info.actor, doc_id, info.seq).needs
        if head is not None:
            out[head.hash] = head.actor
    return out


def _check_cutoffs(store: Store, doc_id: str, deferred: dict[bytes, bytes],
                   where: Path) -> None:
    """After every pack of a document: a revoked device's changes count only as ancestors of
    its cutoff head, so each head a slice deferred must now be held (SPEC-002 §7.1 c)."""
    if not deferred:
        return
    held = store.known_hashes(doc_id, list(deferred))
    missing = [h for h in deferred if h not in held]
    if missing:
        raise Corrupt(where, "signature check",
                      f"{doc_id}: revoked: changes of revoked device "
                      f"{device_id(deferred[missing[0]][:32])} without its cutoff head "
                      f"{missing[0].hex()[:16]}")


# -- restore into a data dir -------------------------------------------------------------------
@dataclass
class RestoreResult:
    target: Path
    manifest_id: str
    device_id: str
    lost_device: str
    counts: dict[str, int]
    kept_existing_key: bool
    handed_over: bool
    moved_aside: Path | None
    config_restored: bool
    config_kept: bool = False  # the target's own config.toml stayed; the backup held one too
    merged_certs: int = 0  # certificates of the target's roster the backup did not hold
    quarantined: int = 0  # restored changes the grown roster no longer allows


@dataclass
class ExistingIdentity:
    """What the target data dir already knows about its mesh: the mesh id and every roster
    certificate it holds (tombstones included). A backup must not make it forget them."""

    mesh_id: bytes | None
    certs: list[bytes]


def occupied(target: Path) -> list[str]:
    return [n for n in OCCUPYING if (target / n).exists()]


def restore_backup(
    repo: Repository,
    ref: ManifestRef,
    target: Path,
    *,
    force: bool = False,
    allow_other_mesh: bool = False,
    device_key_passphrase: bytes | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore ``ref`` into the data dir ``target`` (SPEC-002 §8). Nothing is written to the
    target unless every check passed; an existing data dir is only moved aside, with force.
    The target's roster only grows (§8.7): its certificates join the restored ones and the
    restored documents are re-checked against them, as the node does at start."""
    target = Path(target).absolute()
    manifest = repo.load_manifest(ref)
    _refuse_occupied(target, force)
    old_key = _escrowed_key(repo, manifest, device_key_passphrase)
    created = not target.exists()
    lock = _lock(target)
    staging = target.parent / f".{target.name}.restore-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        existing = _existing_identity(target)
        _refuse_other_mesh(target, existing, manifest, allow_other_mesh)
        staging.mkdir(mode=0o700)
        report = rebuild(repo, manifest, ref, staging, progress=progress)
        new_key, kept_key = _device_key(staging, target, force)
        merged, quarantined = _merge_roster(staging, report.mesh_id, existing, new_key)
        if old_key is not None:
            _hand_over(staging, report, old_key, new_key)
        config_restored = _restore_config(repo, manifest, staging, target)
        aside = _move_aside(target) if force else None
        for name in ("identity", "memory", "config.toml", "keys"):
            if (staging / name).exists():
                os.rename(staging / name, target / name)
        fsync_dir(target)
    except BaseException:
        lock.release()
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:  # the restored data dir now knows this target (SPEC-002 §12.1)
        remember(target, repo, manifest)
    except OSError as exc:
        log.warning("restored, but %s could not record the backup it came from (%s)", target,
                    exc.strerror or exc)
    finally:
        lock.release()
    return RestoreResult(
        target=target,
        manifest_id=manifest.id,
        device_id=new_key.device_id,
        lost_device=manifest.device,
        counts=report.counts(),
        kept_existing_key=kept_key,
        handed_over=old_key is not None,
        moved_aside=aside,
        config_restored=config_restored,
        config_kept=bool(manifest.config) and not config_restored,
        merged_certs=merged,
        quarantined=quarantined,
    )


def _refuse_occupied(target: Path, force: bool) -> None:
    taken = occupied(target)
    if taken and not force:
        raise BackupError(
            f"{target} already holds a data dir ({', '.join(t + '/' for t in taken)}); restore "
            "refuses to overwrite it (with --force the existing data is moved to "
            "pre-restore-<time>/, never deleted)"
        )


def _escrowed_key(repo: Repository, manifest, passphrase: bytes | None) -> DeviceKey | None:
    """The lost device's key from the backup (only when asked for, with its passphrase)."""
    if passphrase is None:
        return None
    if manifest.device_key is None:
        raise BackupError(f"backup {manifest.id[:12]} holds no device key (one is added "
                          "only by maia backup create --include-device-key)")
    sealed = repo.get_content([manifest.device_key], manifest.chunks)
    return DeviceKey.from_key_file_bytes(
        unseal_device_key(sealed, passphrase), "the backed-up device key")


def _lock(target: Path) -> DataDirLock:
    """The node's own data-dir lock: no node may run on the target while it is restored."""
    lock = DataDirLock(target)
    try:
        lock.acquire()
    except DataDirBusy:
        raise BackupError(f"a maia node is running on {target}; stop it before restoring") from None
    return lock


def _device_key(staging: Path, target: Path, force: bool) -> tuple[DeviceKey, bool]:
    """The restored node's key: the target's own with --force, else a new one (staged)."""
    existing = target / "keys" / "device.key"
    if force and existing.exists():
        return DeviceKey.load(existing), True
    (staging / "keys").mkdir(mode=0o700)
    new_key = DeviceKey.generate()
    new_key.save(staging / "keys" / "device.key")
    return new_key, False


def _existing_identity(target: Path) -> ExistingIdentity | None:
    """The target's mesh and roster certificates, read before anything moves (None when it
    holds no identity). One that cannot be read is refused rather than dropped: its tombstones
    are what keeps a revoked device out (SPEC-002 §8.7)."""
    if not (target / "identity").exists():
        return None
    try:
        store = Store(target, readonly=True, layers=("identity",))
        try:
            with store.read_layer("identity") as view:
                return ExistingIdentity(view.identity_value("mesh_id"), view.certs())
        finally:
            store.close()
    except Exception as exc:  # a damaged or foreign store: say so, never a traceback
        raise BackupError(
            f"cannot read the roster of the data dir {target} ({exc}); restore will not replace "
            f"an identity whose revocations it cannot carry over: move {target / 'identity'} "
            "away yourself first") from None


def _refuse_other_mesh(target: Path, existing: ExistingIdentity | None, manifest: Manifest,
                       allow: bool) -> None:
    """SPEC-002 §8.7: a data dir of one mesh is not silently turned into a member of another
    (whoever holds the repository key could otherwise swap the mesh with its roster)."""
    if existing is None or existing.mesh_id is None or allow:
        return
    if existing.mesh_id.hex() != manifest.mesh:
        raise BackupError(
            f"backup {manifest.id[:12]} is of mesh {manifest.mesh[:16]}, but {target} belongs "
            f"to mesh {existing.mesh_id.hex()[:16]}; restore refused, nothing was written (add "
            "--allow-other-mesh to replace this data dir's mesh)")


def _merge_roster(staging: Path, mesh_id: bytes, existing: ExistingIdentity | None,
                  key: DeviceKey) -> tuple[int, int]:
    """Add the target's certificates of the same mesh to the restored roster (it only grows:
    a tombstone there still counts), then re-check every restored document against it exactly
    as the node does at start, quarantining what it no longer allows (SPEC-002 §8.7,
    SPEC-005 §5.10). Returns (certificates added, changes quarantined)."""
    store = Store(staging, layers=BACKED_UP_LAYERS)
    try:
        added = 0
        if existing is not None and existing.mesh_id == mesh_id:
            rows = []
            for raw in existing.certs:
                try:
                    rows.append((decode_cert(raw).cert_id, raw))
                except CertError:  # unreadable here too; the node ignores it as well
                    continue
            added = store.put_certs(rows)
        removed = open_repo(store, key).recheck()
        return added, sum(removed.values())
    finally:
        store.close()


def _restore_config(repo: Repository, manifest, staging: Path, target: Path) -> bool:
    """Stage the backed-up config.toml only for a target without one: a data dir's own config
    (its peers, its API) is never replaced by what the repository holds (SPEC-002 §8.6)."""
    if not manifest.config or (target / "config.toml").exists():
        return False
    fd = os.open(staging / "config.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(repo.get_content([manifest.config], manifest.chunks))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _move_aside(target: Path) -> Path | None:
    """With --force: the existing layers and runtime go to pre-restore-<time>/ (config.toml
    stays, §8.6). Runtime goes too because its index describes the old data; it is rebuilt."""
    present = [n for n in ("identity", "memory", "runtime") if (target / n).exists()]
    if not present:
        return None
    base = target / f"pre-restore-{stamp(utcnow())}"
    aside, n = base, 1
    while True:  # two restores within one second each keep what they moved
        try:
            aside.mkdir(mode=0o700)
            break
        except FileExistsError:
            n += 1
            aside = base.with_name(f"{base.name}-{n}")
    for name in present:
        os.rename(target / name, aside / name)
    return aside


def _hand_over(staging: Path, report: RebuildReport, old: DeviceKey, new: DeviceKey) -> None:
    """SPEC-002 §8.5: the old key issues exactly two certificates, an endorsement of the new
    key and a tombstone of itself (cutoff: its highest seq per restored document), and is then
    dropped. It never signs a document change."""
    store = Store(staging, layers=BACKED_UP_LAYERS)
    try:
        repo = Repo(store, new, report.mesh_id)
        if not repo.roster.is_member(old.public_key):
            raise BackupError("the backed-up device key is no longer a member of the mesh "
                              "(was it revoked?); restore without --with-device-key and pair")
        name = repo.roster.members[old.public_key]
        endorse = new_endorsement(old, report.mesh_id, new.public_key, f"{name} (restored)")
        tomb = new_tombstone(old, report.mesh_id, old.public_key,
                             cutoff_heads(repo, old.public_key), [endorse.cert_id],
                             reason="device restored from a backup onto a new key")
        record_certs(repo, [endorse, tomb])
    finally:
        store.close()
