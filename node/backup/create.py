"""Taking a backup: Identity and Memory, each read inside ONE LMDB read transaction (so each
layer is captured at one committed point while the node keeps running and syncing), written
as encrypted content-addressed packs, only what the repository lacks, manifest last
(SPEC-002 §3, §4).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import msgpack
from automerge.core import Document

from crdt import CHUNK_CHANGE, LayerView, Store, inflate_change

from .anchors import check_rollback, remember
from .format import (
    BACKED_UP_LAYERS,
    MAX_PACKS,
    BackupError,
    Cancelled,
    Corrupt,
    DocEntry,
    LayerEntry,
    Manifest,
    Pack,
    iso,
    utcnow,
)
from .repository import ManifestRef, Repository, WriteLog

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class CreateResult:
    manifest: Manifest
    ref: ManifestRef
    new_chunks: int
    new_bytes: int
    changed_docs: int
    unchanged_docs: int
    seconds: float
    rollback: dict[str, object] | None = field(default=None)  # SPEC-002 §12.3

    def summary(self) -> dict[str, object]:
        return {
            "id": self.manifest.id,
            "created_at": self.manifest.created_at,
            "parent": self.manifest.parent,
            "new_chunks": self.new_chunks,
            "new_bytes": self.new_bytes,
            "total_bytes": self.manifest.stored_bytes,
            "changed_documents": self.changed_docs,
            "unchanged_documents": self.unchanged_docs,
            "device_key": self.manifest.device_key is not None,
            "seconds": round(self.seconds, 3),
            "rollback": self.rollback,
        }


def node_version() -> str:
    try:
        return metadata.version("maia-node")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_error(target: Path, exc: OSError) -> BackupError:
    """One clear sentence naming the target (SPEC-002 §11.3)."""
    tail = "the backup was abandoned: no manifest was written and earlier backups are untouched"
    if exc.errno == errno.ENOSPC:
        return BackupError(f"the backup target {target} is full (no space left on device); {tail}")
    return BackupError(f"cannot write to the backup target {target} "
                       f"({exc.strerror or exc}); {tail}")


def create_backup(
    store: Store,
    repo: Repository,
    *,
    device: str,
    config_path: Path | None = None,
    sealed_device_key: bytes | None = None,
    forget_device_key: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    break_lock: bool = False,
    anchor_root: Path | None = None,
) -> CreateResult:
    """Back up Identity and Memory of ``store`` into ``repo``; returns what was written.

    ``sealed_device_key`` (already sealed under its own passphrase) adds the device key; else
    the parent's device-key chunk is carried forward unless ``forget_device_key`` (§6.2).
    With ``anchor_root`` (the data dir), the target is first checked for a rollback, and the
    new manifest is then remembered there (§12.1, §12.3), both under the repository lock.
    """
    started = time.monotonic()
    config = config_path.read_bytes() if config_path and config_path.is_file() else None
    try:
        with repo.lock(break_lock=break_lock):
            creator = _Creator(store, repo, device, progress, cancel)
            rollback = None
            if anchor_root is not None:
                check = check_rollback(repo, creator.catalog, anchor_root)
                rollback = check.as_json()
                if check.detected:
                    log.warning("%s", check.warning)
            result = creator.run(
                config, sealed_device_key, forget_device_key, now or utcnow(), started
            )
            result.rollback = rollback
            if anchor_root is not None:
                remember(anchor_root, repo, result.manifest)
            return result
    except OSError as exc:
        raise write_error(repo.path, exc) from None


class _Creator:
    def __init__(
        self,
        store: Store,
        repo: Repository,
        device: str,
        progress: Progress | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.device = device
        self.progress = progress or (lambda what, done, total: None)
        self.cancel = cancel or (lambda: False)
        self.wlog = WriteLog()
        self.chunks: dict[str, int] = {}
        self.changed = 0
        self.unchanged = 0
        self.catalog = repo.catalog()  # every manifest, read and checked once (§5.5)

    def run(
        self,
        config: bytes | None,
        sealed_device_key: bytes | None,
        forget_device_key: bool,
        now: datetime,
        started: float,
    ) -> CreateResult:
        with self.store.read_layer("identity") as view:
            mesh = view.identity_value("mesh_id")
        if mesh is None:
            raise BackupError("this device belongs to no mesh yet, so there is nothing to back up")
        parent = self._parent(mesh.hex())
        layers: dict[str, LayerEntry] = {}
        certs: list[bytes] = []
        for layer in BACKED_UP_LAYERS:
            with self.store.read_layer(layer) as view:
                if layer == "identity":
                    if view.identity_value("mesh_id") != mesh:
                        raise BackupError("the mesh of this device changed during the backup")
                    certs = view.certs()
                prev = parent.layers.get(layer) if parent else None
                layers[layer] = self._layer(view, prev, parent.chunks if parent else {})
        cert_names = self._put(msgpack.packb(sorted(certs), use_bin_type=True))
        config_name = self._put(config)[0] if config is not None else None
        key_name = self._device_key(parent, sealed_device_key, forget_device_key)
        manifest = Manifest(
            created_at=iso(now),
            device=self.device,
            mesh=mesh.hex(),
            node_version=node_version(),
            repo=self.repo.repo_id,
            parent=parent.id if parent else None,
            layers=layers,
            certs=cert_names,
            config=config_name,
            device_key=key_name,
            chunks=dict(sorted(self.chunks.items())),
        )
        if self.cancel():
            raise Cancelled("the backup was stopped before it completed; nothing was recorded")
        self.repo.sync_written(self.wlog)
        ref = self.repo.write_manifest(manifest)
        log.info("backup %s: %d new chunk(s), %d bytes", manifest.id[:12],
                 self.wlog.new_chunks, self.wlog.new_bytes)
        return CreateResult(manifest, ref, self.wlog.new_chunks, self.wlog.new_bytes,
                            self.changed, self.unchanged, time.monotonic() - started)

    # -- parent and chunks -------------------------------------------------------------------------
    def _parent(self, mesh: str) -> Manifest | None:
        """The newest accepted manifest of this device and mesh, by authenticated
        ``created_at``: the base of an increment (§3.3, §5.5). Refused ones are never used."""
        for ref, exc in self.catalog.refused:
            log.warning("not using %s as a parent: %s", ref.path.name, exc)
        same = [m for m in self.catalog.of_device(self.device) if m.mesh == mesh]
        return same[-1] if same else None

    def _put(self, content: bytes) -> list[str]:
        names, sizes = self.repo.put_content(content, self.wlog)
        self.chunks.update(sizes)
        return names

    def _reuse(self, names: list[str], parent_chunks: dict[str, int]) -> bool:
        """Carry chunks of the parent forward, if they are still all there."""
        try:
            for name in names:
                self.repo.check_chunk_file(name, parent_chunks[name])
        except (Corrupt, KeyError):
            return False
        self.chunks.update({n: parent_chunks[n] for n in names})
        return True

    def _device_key(
        self, parent: Manifest | None, sealed: bytes | None, forget: bool
    ) -> str | None:
        if sealed is not None:
            return self._put(sealed)[0]
        if forget or parent is None or parent.device_key is None:
            return None
        if self._reuse([parent.device_key], parent.chunks):
            return parent.device_key
        log.warning("the backed-up device key of the previous backup is missing; not carried")
        return None

    # -- documents ---------------------------------------------------------------------------------
    def _layer(
        self, view: LayerView, prev: LayerEntry | None, parent_chunks: dict[str, int]
    ) -> LayerEntry:
        entry = LayerEntry(view.format_version)
        doc_ids = view.doc_ids()
        for done, doc_id in enumerate(doc_ids, 1):
            if self.cancel():
                raise Cancelled("the backup was stopped before it completed; nothing was recorded")
            doc_entry = self._doc(view, doc_id, prev.docs.get(doc_id) if prev else None,
                                  parent_chunks)
            if doc_entry is not None:
                entry.docs[doc_id] = doc_entry
            self.progress(view.layer, done, len(doc_ids))
        return entry

    def _doc(
        self,
        view: LayerView,
        doc_id: str,
        prev: DocEntry | None,
        parent_chunks: dict[str, int],
    ) -> DocEntry | None:
        snapshot, changes = view.load_doc(doc_id)
        if not snapshot and not changes:
            return None
        doc = Document.load(snapshot + b"".join(changes))
        heads = sorted(h.hex() for h in doc.get_heads())
        meta = view.doc_meta(doc_id)
        count = meta.changes if meta else len(changes)
        prev_names = [n for pack in prev.packs for n in pack] if prev else []
        if prev is not None and sorted(prev.heads) == heads and self._reuse(prev_names,
                                                                              parent_chunks):
            self.unchanged += 1  # SPEC-002 §3.3: the parent's pack list, unchanged
            return DocEntry(heads, count, prev.packs, prev.bytes, prev.full_bytes)
        self.changed += 1
        index = view.batch_index(doc_id)
        if (
            prev is not None
            and len(prev.packs) < MAX_PACKS
            and all(bytes.fromhex(h) in index for h in prev.heads)
        ):
            base = [bytes.fromhex(h) for h in prev.heads]
            delta = doc.get_changes(base)
            payload = Pack(
                doc_id, "delta", base, _batches(view, doc_id, index, [c.hash for c in delta]),
                changes=[_uncompressed(c.bytes) for c in delta],
            ).encode()
            deltas = prev.bytes - prev.full_bytes + len(payload)
            if deltas <= prev.full_bytes and self._reuse(prev_names, parent_chunks):
                names = self._put(payload)
                return DocEntry(heads, count, [*prev.packs, names], prev.bytes + len(payload),
                                prev.full_bytes)
        # First backup of the document, or consolidation (SPEC-002 §3.3): one full pack.
        payload = Pack(
            doc_id, "full", [], _batches(view, doc_id, index, list(index)),
            # A compacted document with nothing after its snapshot IS its save(): reuse it.
            snapshot=snapshot if not changes else doc.save(),
        ).encode()
        return DocEntry(heads, count, [self._put(payload)], len(payload), len(payload))


def _uncompressed(chunk: bytes) -> bytes:
    """The change in its uncompressed chunk form: the same change and hash (SPEC-005 §3.2),
    but the pack's zlib can now compress across changes (about 3x smaller than chunks that
    Automerge deflated one by one)."""
    return chunk if chunk[8] == CHUNK_CHANGE else chunk[:8] + inflate_change(chunk)


def _batches(
    view: LayerView, doc_id: str, index: dict[bytes, bytes], hashes: list[bytes]
) -> list[bytes]:
    """The batch records covering ``hashes``, byte for byte as stored (SPEC-005 §4.6)."""
    out = []
    try:
        ids = dict.fromkeys(index[h] for h in hashes)
    except KeyError as exc:
        raise BackupError(f"the store holds a change of {doc_id} ({exc.args[0].hex()[:16]}) "
                          "without its batch record") from None
    for bid in ids:
        raw = view.batch(bid)
        if raw is None:
            raise BackupError(f"the store lacks batch record {bid.hex()[:16]} of {doc_id}")
        out.append(raw)
    return out
