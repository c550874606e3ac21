"""The LMDB store, one environment per layer, so each can be backed up or wiped on its own.

Identity and Memory environments hold documents: a compacted snapshot, the change chunks
accepted since, the signed batch records (kept forever so signatures can be forwarded) and a
hash -> batch index. The Runtime environment holds only what can be rebuilt. Every accepted
write is one LMDB transaction, committed (fsync) before it is acknowledged (SPEC-001, SPEC-005).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb
import msgpack
from automerge.core import Document

from .batches import SignedBatch
from .chunks import ChangeInfo
from .docids import valid_doc_id

log = logging.getLogger(__name__)

LAYERS = ("identity", "memory", "runtime")
DOC_LAYERS = ("identity", "memory")
_MAP_SIZE = {"identity": 1 << 30, "memory": 64 << 30, "runtime": 8 << 30}
_DOC_DBS = (
    b"meta", b"docs", b"snapshots", b"changes", b"index", b"batches", b"certs", b"quarantine",
    b"actors",
)
_RUNTIME_DBS = (b"meta", b"kv", b"entries", b"events", b"peers")

Migration = Callable[[lmdb.Environment, lmdb.Transaction], None]


def _runtime_v1_to_v2(env: lmdb.Environment, txn: lmdb.Transaction) -> None:
    """Memory index rows became keyed by shard; the index is Runtime, so drop it to rebuild."""
    txn.drop(env.open_db(b"entries", txn=txn), delete=False)
    kv = env.open_db(b"kv", txn=txn)
    stale = [k for k, _ in txn.cursor(db=kv) if k.startswith(b"heads:")]
    for k in stale:
        txn.delete(k, db=kv)


def _docs_v1_to_v2(env: lmdb.Environment, txn: lmdb.Transaction) -> None:
    """Format 2 adds ``actors`` ((doc, actor) -> highest seq held), which verification needs
    to refuse a second change with an (actor, seq) already held (SPEC-005 §6.1 d)."""
    dbs = {name: env.open_db(name, txn=txn) for name in (b"docs", b"snapshots", b"changes",
                                                          b"actors", b"quarantine")}
    for doc_key in [bytes(k) for k in txn.cursor(db=dbs[b"docs"]).iternext(values=False)]:
        doc_id = doc_key.decode()
        if not valid_doc_id(doc_id):
            _set_aside(txn, dbs, doc_id)
            continue
        snap = bytes(txn.get(doc_key, db=dbs[b"snapshots"]) or b"")
        prefix = _key(doc_id)
        cur = txn.cursor(db=dbs[b"changes"])
        chunks = []
        if cur.set_range(prefix):
            for k, v in cur:
                if not bytes(k).startswith(prefix):
                    break
                chunks.append(bytes(v))
        data = snap + b"".join(chunks)
        if not data:
            continue
        try:
            held = Document.load(data).get_changes([])
        except Exception as exc:  # e.g. a duplicate (actor, seq) stored by format 1
            log.warning("%s does not load (%s)", doc_id, exc)
            _set_aside(txn, dbs, doc_id)
            continue
        top: dict[bytes, tuple[int, int]] = {}
        for change in held:
            seq, size = top.get(change.actor_id, (0, 0))
            top[change.actor_id] = (max(seq, change.seq), size + len(change.bytes))
        for actor, (seq, size) in top.items():
            txn.put(_key(doc_id, actor), _actor_row(seq, size), db=dbs[b"actors"])


def _set_aside(txn: lmdb.Transaction, dbs: dict[bytes, object], doc_id: str) -> None:
    """A document format 1 accepted under an invented kind or month (listed by no reader, issue
    18.5): its snapshot and changes move to ``quarantine`` (kept, never synced) and it is gone
    from ``docs``. Its index rows and batch records stay, so re-sending it changes nothing."""
    prefix = _key(doc_id)
    snap = txn.get(doc_id.encode(), db=dbs[b"snapshots"])
    if snap is not None:
        txn.put(_key(doc_id, b"snapshot"), bytes(snap), db=dbs[b"quarantine"])
        txn.delete(doc_id.encode(), db=dbs[b"snapshots"])
    cur = txn.cursor(db=dbs[b"changes"])
    if cur.set_range(prefix):
        while cur.key().startswith(prefix):
            txn.put(_key(doc_id, b"change" + bytes(cur.key()[len(prefix):])), bytes(cur.value()),
                    db=dbs[b"quarantine"])
            if not cur.delete():
                break
    txn.delete(doc_id.encode(), db=dbs[b"docs"])
    log.warning("set aside %s (kept in quarantine): it no longer loads, or no reader lists "
                "documents of that kind or month", doc_id)


#: Key suffix of a dropped document's tombstone in ``quarantine`` (SPEC-005 §6.7): 7 bytes,
#: so it never meets a change hash (32 bytes) or a row a migration set aside.
DROPPED = b"dropped"


def _delete_prefixed(txn: lmdb.Transaction, db: object, prefix: bytes) -> list[bytes]:
    """Delete every row whose key starts with ``prefix``; returns their values."""
    values = []
    cur = txn.cursor(db=db)
    if cur.set_range(prefix):
        while cur.key().startswith(prefix):
            values.append(bytes(cur.value()))
            if not cur.delete():
                break
    return values


def _drop_in(txn: lmdb.Transaction, dbs: dict[bytes, object], doc_id: str) -> int:
    """One document's rows gone from a layer (see :meth:`Store.drop_documents`); its size."""
    prefix = _key(doc_id)
    for batch_id in set(_delete_prefixed(txn, dbs[b"index"], prefix)):
        txn.delete(batch_id, db=dbs[b"batches"])  # a batch names its one document (§4.1)
    size = sum(_actor_size(v) for v in _delete_prefixed(txn, dbs[b"actors"], prefix))
    _delete_prefixed(txn, dbs[b"changes"], prefix)
    txn.delete(doc_id.encode(), db=dbs[b"snapshots"])
    txn.delete(doc_id.encode(), db=dbs[b"docs"])
    return size


# MIGRATIONS[layer][n] upgrades format n+1 to n+2. FORMAT_VERSION = len(list) + 1.
MIGRATIONS: dict[str, list[Migration]] = {
    "identity": [_docs_v1_to_v2],
    "memory": [_docs_v1_to_v2],
    "runtime": [_runtime_v1_to_v2],
}


def format_version(layer: str) -> int:
    return len(MIGRATIONS[layer]) + 1


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreError(Exception):
    """The store cannot be opened or used (user-facing: says what to do)."""


class WrongLayer(StoreError):
    """A layer's directory holds another layer's environment (SPEC-001 §5.4)."""


def _nearly_full(path: Path, margin: int = 4 << 20) -> bool:
    try:
        return shutil.disk_usage(path).free < margin
    except OSError:
        return False


class StorageFull(StoreError):
    """The disk (or the store's map) is full: nothing of the write was stored."""

    def __init__(self, data_dir: Path, detail: str) -> None:
        try:
            free = shutil.disk_usage(data_dir).free
        except OSError:
            free = 0
        self.data_dir, self.free_bytes = Path(data_dir), free
        super().__init__(
            f"the data dir {data_dir} is full ({free / 1e6:.1f} MB free): nothing of this "
            f"write was stored; free some space and try again ({detail})"
        )


@dataclass(frozen=True, slots=True)
class DocMeta:
    doc_id: str
    heads: tuple[bytes, ...]
    changes: int
    pending: int

    def encode(self) -> bytes:
        return msgpack.packb([list(self.heads), self.changes, self.pending], use_bin_type=True)

    @classmethod
    def decode(cls, doc_id: str, raw: bytes) -> DocMeta:
        heads, changes, pending = msgpack.unpackb(raw, raw=False)
        return cls(doc_id, tuple(heads), changes, pending)


def layer_of(doc_id: str) -> str:
    return "identity" if doc_id == "identity" else "memory"


def _key(doc_id: str, h: bytes = b"") -> bytes:
    return doc_id.encode() + b"\x00" + h


def _actor_row(seq: int, size: int) -> bytes:
    """``actors`` value: the highest seq held (u32) and the bytes of its changes held (u64)."""
    return seq.to_bytes(4, "big") + size.to_bytes(8, "big")


def _actor_seq(raw: bytes) -> int:
    return int.from_bytes(raw[:4], "big")


def _actor_size(raw: bytes) -> int:
    return int.from_bytes(raw[4:12], "big")


class Store:
    """All persistent state of one node, by layer. Not thread-safe: one event loop owns it.

    ``readonly=True`` opens existing environments without ever writing them (no creation, no
    migration), so another process (a backup) can read beside a running node (SPEC-001 §3.4).
    ``layers`` limits which environments are opened.
    """

    def __init__(
        self, data_dir: Path, *, readonly: bool = False, layers: Sequence[str] = LAYERS
    ) -> None:
        self.data_dir = Path(data_dir)
        self.readonly = readonly
        self.envs: dict[str, lmdb.Environment] = {}
        self.dbs: dict[str, dict[bytes, object]] = {}
        try:
            for layer in layers:
                self._open_layer(layer)
        except BaseException:
            self.close()
            raise

    # -- opening and migration -----------------------------------------------------------------
    def _open_layer(self, layer: str) -> None:
        if self.readonly:
            self._open_layer_readonly(layer)
            return
        try:
            self._open_layer_writable(layer)
        except WrongLayer:
            raise  # another layer's data: never moved aside as a broken Runtime (§5.4)
        except StoreError as exc:
            if layer != "runtime":
                raise
            # SPEC-001 §7.3: Runtime is derived from the other layers; a damaged one, or one a
            # newer version wrote, is set aside and rebuilt rather than stopping the node.
            env = self.envs.pop(layer, None)
            self.dbs.pop(layer, None)
            if env is not None:
                env.close()
            aside = self.data_dir / time.strftime("runtime.broken-%Y%m%dT%H%M%SZ", time.gmtime())
            try:
                os.replace(self.data_dir / layer, aside)
            except OSError as move:
                raise StoreError(f"{exc}; moving it aside to {aside} failed too: {move}") from exc
            log.warning("the runtime store could not be used (%s); moved it to %s and starting "
                        "a new one (it is rebuilt from identity and memory)", exc, aside)
            self._open_layer_writable(layer)

    def _open_layer_writable(self, layer: str) -> None:
        path = self.data_dir / layer
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        names = _RUNTIME_DBS if layer == "runtime" else _DOC_DBS
        try:
            env = lmdb.open(
                str(path), map_size=_MAP_SIZE[layer], max_dbs=len(names) + 2, subdir=True
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the {layer} store at {path}: {exc}") from exc
        try:
            # the layer is checked before anything is created in the environment (§5.4)
            self._check_layer(layer, env, env.open_db(b"meta"))
            dbs = {name: env.open_db(name) for name in names}
        except WrongLayer:
            env.close()
            raise
        except (lmdb.Error, ValueError) as exc:
            env.close()
            raise StoreError(f"cannot open the {layer} store at {path}: {exc}") from exc
        self.envs[layer], self.dbs[layer] = env, dbs
        try:
            self._migrate(layer, env, dbs[b"meta"])
        except (lmdb.Error, ValueError) as exc:  # a damaged meta record: said, not a traceback
            raise StoreError(f"cannot read the {layer} store at {path}: {exc}") from exc

    def _check_layer(self, layer: str, env: lmdb.Environment, meta: object) -> None:
        with env.begin(db=meta) as txn:
            stored_layer = bytes(txn.get(b"layer") or b"").decode(errors="replace")
        if stored_layer and stored_layer != layer:
            # SPEC-001 §5.4: a directory copied or restored into the wrong place
            raise WrongLayer(f"{self.data_dir / layer} holds the {stored_layer} layer, not "
                             f"{layer}; move it back to {self.data_dir / stored_layer}")

    def _migrate(self, layer: str, env: lmdb.Environment, meta: object) -> None:
        target = format_version(layer)
        with env.begin(db=meta) as txn:
            raw = txn.get(b"format_version")
        if raw is not None and int(raw) < target and layer != "runtime":
            self._copy_before_migration(layer, env, int(raw))
        with env.begin(write=True, db=meta) as txn:
            raw = txn.get(b"format_version")
            if raw is None:
                txn.put(b"format_version", str(target).encode())
                txn.put(b"layer", layer.encode())
                return
            current = int(raw)
            if current > target:
                raise StoreError(
                    f"the {layer} store was written by a newer maia-node (format {current}, this "
                    f"version reads up to {target}); upgrade maia-node to open it"
                )
            for step in range(current, target):
                log.info("migrating %s store from format %d to %d", layer, step, step + 1)
                MIGRATIONS[layer][step - 1](env, txn)
            txn.put(b"format_version", str(target).encode())

    def _copy_before_migration(self, layer: str, env: lmdb.Environment, old: int) -> None:
        """SPEC-001 §5.7: a compacted, fsynced copy of the environment before its migration,
        so a bug in a migration can never cost irreplaceable data. Older copies of the same
        layer go once the new one is complete; a failed copy stops the migration."""
        base = self.data_dir / "pre-migration"
        dest = base / f"{layer}-v{old}"
        partial = base / f".{layer}-v{old}.partial"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (dest / "data.mdb").is_file():
            return  # taken by an earlier attempt that stopped before the migration committed
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        try:
            env.copy(str(partial), compact=True)
            fsync_path(partial / "data.mdb")
            partial.rename(dest)
            fsync_path(base)
        except (OSError, lmdb.Error) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise StoreError(f"could not copy the {layer} store to {dest} before migrating it "
                             f"({exc}); nothing was changed") from exc
        for older in base.glob(f"{layer}-v*"):
            if older != dest and older.name.removeprefix(f"{layer}-v").isdigit() and int(
                    older.name.removeprefix(f"{layer}-v")) < old:
                shutil.rmtree(older, ignore_errors=True)
        log.info("copied the %s store (format %d) to %s before migrating it", layer, old, dest)

    def _open_layer_readonly(self, layer: str) -> None:
        path = self.data_dir / layer
        names = _RUNTIME_DBS if layer == "runtime" else _DOC_DBS
        if not (path / "data.mdb").is_file():
            raise StoreError(f"there is no {layer} store at {path}")
        try:
            env = lmdb.open(
                str(path), map_size=_MAP_SIZE[layer], max_dbs=len(names) + 2, subdir=True,
                readonly=True,
            )
            dbs = {}
            for name in names:
                try:
                    dbs[name] = env.open_db(name, create=False)
                except lmdb.NotFoundError:
                    if name in (b"meta", b"docs"):
                        raise
                    # A sub-database added after this store was last opened for writing
                    # (e.g. quarantine); a read-only view simply does without it.
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the {layer} store at {path}: {exc}") from exc
        self.envs[layer], self.dbs[layer] = env, dbs
        with env.begin(db=dbs[b"meta"]) as txn:
            current = int(txn.get(b"format_version") or b"0")
            stored_layer = bytes(txn.get(b"layer") or b"").decode()
        if stored_layer != layer:
            raise StoreError(f"{path} holds the {stored_layer or 'unknown'} layer, not {layer}")
        if current != format_version(layer):
            raise StoreError(
                f"the {layer} store at {path} has format {current}, this maia-node reads "
                f"format {format_version(layer)}"
                + ("; upgrade maia-node" if current > format_version(layer) else
                   "; start the node once so it migrates the store")
            )

    @contextmanager
    def read_layer(self, layer: str) -> Iterator[LayerView]:
        """A consistent view of one document layer: everything read through it comes from ONE
        LMDB read transaction, i.e. one committed state, while writers carry on (SPEC-002 §4.1).
        Safe to use from a worker thread; the view is only valid inside the ``with`` block."""
        if layer not in DOC_LAYERS:
            raise ValueError(f"{layer} holds no documents")
        env = self.envs[layer]
        with env.begin(buffers=False) as txn:
            yield LayerView(layer, txn, self.dbs[layer])

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()

    def layer_format(self, layer: str) -> int:
        with self.envs[layer].begin(db=self.dbs[layer][b"meta"]) as txn:
            return int(txn.get(b"format_version"))

    def layer_size(self, layer: str) -> int:
        info, stat = self.envs[layer].info(), self.envs[layer].stat()
        return (info["last_pgno"] + 1) * stat["psize"]

    # -- documents -------------------------------------------------------------------------------
    def _db(self, doc_id: str, name: bytes):
        layer = layer_of(doc_id)
        return self.envs[layer], self.dbs[layer][name]

    def doc_ids(self, layer: str | None = None) -> list[str]:
        out = []
        for lay in (layer,) if layer else DOC_LAYERS:
            env, db = self.envs[lay], self.dbs[lay][b"docs"]
            with env.begin(db=db) as txn:
                out.extend(k.decode() for k in txn.cursor().iternext(values=False))
        return out

    def doc_meta(self, doc_id: str) -> DocMeta | None:
        env, db = self._db(doc_id, b"docs")
        with env.begin(db=db) as txn:
            raw = txn.get(doc_id.encode())
        return DocMeta.decode(doc_id, raw) if raw else None

    def load_doc(self, doc_id: str) -> tuple[bytes, list[bytes]]:
        """The snapshot (or b"") and the change chunks accepted since, in acceptance order."""
        env = self.envs[layer_of(doc_id)]
        dbs = self.dbs[layer_of(doc_id)]
        with env.begin() as txn:
            snap = txn.get(doc_id.encode(), db=dbs[b"snapshots"]) or b""
            prefix = _key(doc_id)
            cur = txn.cursor(db=dbs[b"changes"])
            chunks = []
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    chunks.append(bytes(v))
        # Keys are (doc, seqno) so iteration order is acceptance order.
        return bytes(snap), chunks

    def known_hashes(self, doc_id: str, hashes: Sequence[bytes]) -> set[bytes]:
        env, db = self._db(doc_id, b"index")
        with env.begin(db=db) as txn:
            return {h for h in hashes if txn.get(_key(doc_id, h)) is not None}

    def actor_seqs(self, doc_id: str, actors: Iterable[bytes]) -> dict[bytes, int]:
        """The highest seq held of each of ``actors`` in ``doc_id`` (absent: none held)."""
        wanted = set(actors)
        return {a: seq for a, seq in self.doc_actors(doc_id).items() if a in wanted}

    def _actor_rows(self, doc_id: str) -> list[tuple[bytes, bytes]]:
        """(actor, ``actors`` row) of every actor with changes held in ``doc_id``."""
        env, db = self._db(doc_id, b"actors")
        prefix = _key(doc_id)
        out = []
        with env.begin(db=db) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append((bytes(k[len(prefix):]), bytes(v)))
        return out

    def doc_actors(self, doc_id: str) -> dict[bytes, int]:
        """Every actor with changes held in ``doc_id`` and its highest seq."""
        return {actor: _actor_seq(row) for actor, row in self._actor_rows(doc_id)}

    def doc_bytes(self, doc_id: str) -> int:
        """Bytes of every change held in ``doc_id`` as accepted, compacted or not: what a
        loaded document's memory follows (a compacted snapshot is several times smaller)."""
        return sum(_actor_size(row) for _, row in self._actor_rows(doc_id))

    def bytes_by_key(self) -> dict[bytes, int]:
        """Bytes of changes held per device key (the first 32 bytes of each actor), over every
        document: who fills this node's disk (``maia status``, issue 18.5)."""
        out: dict[bytes, int] = {}
        for layer in DOC_LAYERS:
            env, db = self.envs[layer], self.dbs[layer][b"actors"]
            with env.begin(db=db) as txn:
                for k, v in txn.cursor():
                    actor = bytes(k[bytes(k).index(b"\x00") + 1:])
                    out[actor[:32]] = out.get(actor[:32], 0) + _actor_size(v)
        return out

    def batch_ids_for(self, doc_id: str, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        env, db = self._db(doc_id, b"index")
        out = {}
        with env.begin(db=db) as txn:
            for h in hashes:
                bid = txn.get(_key(doc_id, h))
                if bid is not None:
                    out[h] = bytes(bid)
        return out

    def batches(self, doc_id: str, batch_ids: Sequence[bytes]) -> list[bytes]:
        env, db = self._db(doc_id, b"batches")
        with env.begin(db=db) as txn:
            return [bytes(txn.get(b)) for b in batch_ids if txn.get(b) is not None]

    def commit_changes(
        self,
        doc_id: str,
        changes: Sequence[ChangeInfo],
        batches: Sequence[SignedBatch],
        heads: Sequence[bytes],
    ) -> DocMeta:
        """Persist verified changes and their batches in ONE transaction (the durability point)."""
        return self.commit_many([(doc_id, changes, batches, heads)])[doc_id]

    def commit_many(
        self,
        writes: Sequence[tuple[str, Sequence[ChangeInfo], Sequence[SignedBatch], Sequence[bytes]]],
        *, fresh: bool = False,
    ) -> dict[str, DocMeta]:
        """Persist changes to several documents of ONE layer in one transaction: a bulk write
        that touches many shards is stored whole or not at all (issue 18.4). A full disk
        raises :class:`StorageFull` and leaves the store as it was.

        ``fresh``: the changes were just made on this device (each depends on the heads of
        a document loaded from this store, so none can be held yet): their hashes are not
        looked up one by one first. Should one be held after all, the whole transaction is
        refused (:class:`StoreError`), nothing written."""
        layers = {layer_of(doc_id) for doc_id, *_ in writes}
        if len(layers) != 1:
            raise ValueError("one transaction covers documents of one layer")
        layer = layers.pop()
        env, dbs = self.envs[layer], self.dbs[layer]
        out: dict[str, DocMeta] = {}
        try:
            with env.begin(write=True) as txn:
                for doc_id, changes, batches, heads in writes:
                    out[doc_id] = self._commit_in(txn, dbs, doc_id, changes, batches, heads,
                                                  fresh=fresh)
        except (lmdb.MapFullError, lmdb.DiskError) as exc:
            raise StorageFull(self.data_dir, str(exc)) from exc
        except lmdb.Error as exc:
            # LMDB reports a write that ran out of space as ENOSPC, or as EIO when part of a
            # page was written: judge by what is left on the device.
            if "No space" in str(exc) or _nearly_full(self.data_dir):
                raise StorageFull(self.data_dir, str(exc)) from exc
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StorageFull(self.data_dir, str(exc)) from exc
            raise
        return out

    @staticmethod
    def _commit_in(txn, dbs, doc_id: str, changes: Sequence[ChangeInfo],
                   batches: Sequence[SignedBatch], heads: Sequence[bytes],
                   *, fresh: bool = False) -> DocMeta:
        """One document's share of a write transaction (see :meth:`commit_many`)."""
        raw = txn.get(doc_id.encode(), db=dbs[b"docs"])
        meta = DocMeta.decode(doc_id, raw) if raw else DocMeta(doc_id, (), 0, 0)
        for batch in batches:
            txn.put(batch.batch_id, batch.encode(), db=dbs[b"batches"], overwrite=False)
        by_hash = {h: b.batch_id for b in batches for h in b.hashes}
        seqno = meta.changes
        top: dict[bytes, tuple[int, int]] = {}
        prefix = _key(doc_id)
        index_rows, change_rows, seen = [], [], set()
        get = txn.get
        index_db = dbs[b"index"]
        for change in changes:
            ikey = prefix + change.hash
            if ikey in seen or (not fresh and get(ikey, db=index_db) is not None):
                continue  # already held: idempotent
            seen.add(ikey)
            index_rows.append((ikey, by_hash[change.hash]))
            seq, size = top.get(change.actor, (0, 0))
            top[change.actor] = (max(seq, change.seq), size + len(change.chunk))
            change_rows.append((prefix + seqno.to_bytes(8, "big"), change.chunk))
            seqno += 1
        # Rows in bulk: per row, ``put`` costs more Python than LMDB (issue 17).
        _, added = txn.cursor(db=index_db).putmulti(index_rows, overwrite=False)
        if added != len(index_rows):  # only when ``fresh`` was wrong: abort the transaction
            raise StoreError(f"{doc_id}: a change said to be new is held already")
        txn.cursor(db=dbs[b"changes"]).putmulti(change_rows)
        for actor, (seq, size) in top.items():
            akey = _key(doc_id, actor)
            held = txn.get(akey, db=dbs[b"actors"])
            if held is not None:
                seq, size = max(seq, _actor_seq(held)), size + _actor_size(held)
            txn.put(akey, _actor_row(seq, size), db=dbs[b"actors"])
        new = DocMeta(doc_id, tuple(heads), seqno, meta.pending + (seqno - meta.changes))
        txn.put(doc_id.encode(), new.encode(), db=dbs[b"docs"])
        return new

    def write_snapshot(self, doc_id: str, saved: bytes, upto: int, heads: Sequence[bytes]) -> None:
        """Replace the change log up to change number ``upto`` by a compacted snapshot."""
        layer = layer_of(doc_id)
        env, dbs = self.envs[layer], self.dbs[layer]
        with env.begin(write=True) as txn:
            raw = txn.get(doc_id.encode(), db=dbs[b"docs"])
            meta = DocMeta.decode(doc_id, raw) if raw else DocMeta(doc_id, (), 0, 0)
            txn.put(doc_id.encode(), saved, db=dbs[b"snapshots"])
            cur = txn.cursor(db=dbs[b"changes"])
            prefix = _key(doc_id)
            removed = 0
            if cur.set_range(prefix):
                while cur.key().startswith(prefix):
                    if int.from_bytes(cur.key()[len(prefix) :], "big") >= upto:
                        break
                    if not cur.delete():
                        break
                    removed += 1
            meta = DocMeta(doc_id, meta.heads, meta.changes, max(0, meta.pending - removed))
            txn.put(doc_id.encode(), meta.encode(), db=dbs[b"docs"])

    def replace_document(
        self,
        doc_id: str,
        saved: bytes,
        heads: Sequence[bytes],
        removed: Sequence[tuple[bytes, bytes]],
        actor_seqs: Mapping[bytes, tuple[int, int]],
    ) -> None:
        """Swap a document for a rebuilt snapshot, moving ``removed`` (hash, chunk) changes and
        their batch references into ``quarantine`` — one transaction (SPEC-005 §5.10).
        ``actor_seqs`` is the highest seq of each actor in what remains, and its bytes."""
        layer = layer_of(doc_id)
        env, dbs = self.envs[layer], self.dbs[layer]
        with env.begin(write=True) as txn:
            raw = txn.get(doc_id.encode(), db=dbs[b"docs"])
            meta = DocMeta.decode(doc_id, raw) if raw else DocMeta(doc_id, (), 0, 0)
            for h, chunk in removed:
                ikey = _key(doc_id, h)
                batch_id = txn.get(ikey, db=dbs[b"index"]) or b""
                txn.delete(ikey, db=dbs[b"index"])
                txn.put(ikey, msgpack.packb([bytes(batch_id), chunk]), db=dbs[b"quarantine"])
            cur = txn.cursor(db=dbs[b"changes"])
            prefix = _key(doc_id)
            if cur.set_range(prefix):
                while cur.key().startswith(prefix):
                    if not cur.delete():
                        break
            txn.put(doc_id.encode(), saved, db=dbs[b"snapshots"])
            txn.put(doc_id.encode(), DocMeta(doc_id, tuple(heads), meta.changes, 0).encode(),
                    db=dbs[b"docs"])
            cur = txn.cursor(db=dbs[b"actors"])
            if cur.set_range(prefix):
                while cur.key().startswith(prefix):
                    if not cur.delete():
                        break
            for actor, (seq, size) in actor_seqs.items():
                txn.put(_key(doc_id, actor), _actor_row(seq, size), db=dbs[b"actors"])

    def drop_documents(self, authors: Mapping[str, Iterable[bytes]], at: float) -> int:
        """Remove whole documents, keeping a tombstone with each one's authors (SPEC-005
        §6.7): snapshot, changes, hash index rows, batch records and actor rows go in ONE
        transaction per layer. Returns the bytes of changes freed."""
        freed = 0
        by_layer: dict[str, list[str]] = {}
        for doc_id in authors:
            by_layer.setdefault(layer_of(doc_id), []).append(doc_id)
        for layer, ids in by_layer.items():
            env, dbs = self.envs[layer], self.dbs[layer]
            with env.begin(write=True) as txn:
                for doc_id in ids:
                    size = _drop_in(txn, dbs, doc_id)
                    freed += size
                    txn.put(_key(doc_id, DROPPED),
                            msgpack.packb([sorted(authors[doc_id]), at, size]),
                            db=dbs[b"quarantine"])
        return freed

    def dropped_keys(self, doc_id: str) -> frozenset[bytes]:
        """The device keys ``doc_id`` was dropped as the unseen documents of, if its tombstone
        is held and the document is absent (a local write may have made it again)."""
        env = self.envs[layer_of(doc_id)]
        dbs = self.dbs[layer_of(doc_id)]
        with env.begin() as txn:
            raw = txn.get(_key(doc_id, DROPPED), db=dbs[b"quarantine"])
            if raw is None or txn.get(doc_id.encode(), db=dbs[b"docs"]) is not None:
                return frozenset()
        try:
            return frozenset(bytes(k) for k in msgpack.unpackb(bytes(raw))[0])
        except Exception:
            return frozenset()

    def lift_drop(self, doc_id: str) -> None:
        """Forget a dropped document's tombstone: another author's work now needs it."""
        env, db = self._db(doc_id, b"quarantine")
        with env.begin(write=True, db=db) as txn:
            txn.delete(_key(doc_id, DROPPED))

    def quarantined_changes(self, layer: str) -> dict[str, list[tuple[bytes, bytes, bytes]]]:
        """Changes moved to quarantine by a re-check, per document: (hash, batch id, chunk).
        Rows set aside whole by a migration (no hash) are not listed."""
        env, db = self.envs[layer], self.dbs[layer][b"quarantine"]
        out: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
        with env.begin(db=db) as txn:
            for k, v in txn.cursor():
                doc, _, digest = bytes(k).partition(b"\x00")
                if len(digest) != 32:
                    continue
                try:
                    batch_id, chunk = msgpack.unpackb(bytes(v))
                except Exception:
                    continue
                out.setdefault(doc.decode(), []).append((digest, bytes(batch_id), bytes(chunk)))
        return out

    def quarantine_counts(self) -> dict[str, int]:
        """What is set aside, for ``maia status`` (SPEC-005 §5.10, §6.7): changes a roster
        re-check moved out (and the documents they were in), and documents dropped by the
        owner."""
        changes, docs, dropped = 0, set(), 0
        for layer in DOC_LAYERS:
            env, db = self.envs[layer], self.dbs[layer][b"quarantine"]
            with env.begin(db=db) as txn:
                for k in txn.cursor().iternext(values=False):
                    doc, _, suffix = bytes(k).partition(b"\x00")
                    if len(suffix) == 32:
                        changes += 1
                        docs.add(doc)
                    elif suffix == DROPPED and txn.get(doc, db=self.dbs[layer][b"docs"]) is None:
                        dropped += 1
        return {"changes": changes, "documents": len(docs), "dropped_documents": dropped}

    def release_quarantined(self, doc_id: str, hashes: Sequence[bytes]) -> None:
        """Forget quarantine rows of changes that are held again."""
        env, db = self._db(doc_id, b"quarantine")
        with env.begin(write=True, db=db) as txn:
            for h in hashes:
                txn.delete(_key(doc_id, h))

    # -- roster certificates (identity layer) -----------------------------------------------------
    def put_certs(self, certs: Sequence[tuple[str, bytes]]) -> int:
        env, db = self.envs["identity"], self.dbs["identity"][b"certs"]
        added = 0
        with env.begin(write=True, db=db) as txn:
            for cert_id, raw in certs:
                added += bool(txn.put(cert_id.encode(), raw, overwrite=False))
        return added

    def certs(self) -> list[bytes]:
        env, db = self.envs["identity"], self.dbs["identity"][b"certs"]
        with env.begin(db=db) as txn:
            return [bytes(v) for v in txn.cursor().iternext(keys=False)]

    def get_identity_value(self, key: str) -> bytes | None:
        env, db = self.envs["identity"], self.dbs["identity"][b"meta"]
        with env.begin(db=db) as txn:
            raw = txn.get(b"id:" + key.encode())
        return bytes(raw) if raw is not None else None

    def set_identity_value(self, key: str, value: bytes) -> None:
        env, db = self.envs["identity"], self.dbs["identity"][b"meta"]
        with env.begin(write=True, db=db) as txn:
            txn.put(b"id:" + key.encode(), value)

    # -- runtime key/value (rebuildable) --------------------------------------------------------
    def runtime_db(self, name: str):
        return self.envs["runtime"], self.dbs["runtime"][name.encode()]

    def runtime_items(self, name: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        env, db = self.runtime_db(name)
        with env.begin(db=db) as txn:
            cur = txn.cursor()
            if not cur.set_range(prefix):
                return
            for k, v in cur:
                if not k.startswith(prefix):
                    return
                yield bytes(k), bytes(v)


class LayerView:
    """Read-only access to one document layer inside a single read transaction (see
    :meth:`Store.read_layer`): documents, their batch records and the roster certificates."""

    def __init__(self, layer: str, txn: lmdb.Transaction, dbs: dict[bytes, object]) -> None:
        self.layer = layer
        self._txn = txn
        self._dbs = dbs

    @property
    def format_version(self) -> int:
        return int(self._txn.get(b"format_version", db=self._dbs[b"meta"]))

    def doc_ids(self) -> list[str]:
        cur = self._txn.cursor(db=self._dbs[b"docs"])
        return [bytes(k).decode() for k in cur.iternext(values=False)]

    def doc_meta(self, doc_id: str) -> DocMeta | None:
        raw = self._txn.get(doc_id.encode(), db=self._dbs[b"docs"])
        return DocMeta.decode(doc_id, bytes(raw)) if raw else None

    def load_doc(self, doc_id: str) -> tuple[bytes, list[bytes]]:
        """The snapshot (or b"") and the change chunks stored after it, in acceptance order."""
        snap = self._txn.get(doc_id.encode(), db=self._dbs[b"snapshots"]) or b""
        return bytes(snap), [bytes(v) for _, v in self._prefixed(b"changes", _key(doc_id))]

    def batch_index(self, doc_id: str) -> dict[bytes, bytes]:
        """change hash -> batch id, for every change of the document ever accepted."""
        prefix = _key(doc_id)
        return {bytes(k[len(prefix):]): bytes(v) for k, v in self._prefixed(b"index", prefix)}

    def batch(self, batch_id: bytes) -> bytes | None:
        raw = self._txn.get(batch_id, db=self._dbs[b"batches"])
        return bytes(raw) if raw is not None else None

    def certs(self) -> list[bytes]:
        """Roster certificates (identity layer), in cert-id order."""
        cur = self._txn.cursor(db=self._dbs[b"certs"])
        return [bytes(v) for v in cur.iternext(keys=False)]

    def identity_value(self, key: str) -> bytes | None:
        raw = self._txn.get(b"id:" + key.encode(), db=self._dbs[b"meta"])
        return bytes(raw) if raw is not None else None

    def _prefixed(self, db: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        cur = self._txn.cursor(db=self._dbs[db])
        if not cur.set_range(prefix):
            return
        for k, v in cur:
            if not k.startswith(prefix):
                return
            yield k, v

