"""The backup repository on disk: a directory on a local disk, a removable drive or a NAS
(SPEC-002 §2.1).

Every write is atomic (temporary file, fsync, rename, directory fsync) and a manifest is
written last, so a backup is complete if and only if its manifest exists (§4.3). Every read
is checked (presence, size, MAC, name) and a failure names the file and the check (§11.2).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nacl.exceptions import CryptoError

from crdt import fsync_path as fsync_dir  # one fsync helper: files and directories

from ..cli.client import pid_alive
from ..files import write_all
from ..files import write_atomic as write_file_atomic
from .crypto import KDF_LIMITS, RepoKeys, check_kdf_limits, derive_kek, new_master, unwrap, wrap
from .format import (
    CHUNK_RAW,
    CHUNK_ZLIB,
    MAX_CHUNK_FILE,
    MAX_CHUNK_PLAINTEXT,
    MAX_FUTURE,
    MAX_LOCK_FILE,
    MAX_MANIFEST_FILE,
    MAX_RECORD_FILE,
    MAX_REPO_JSON,
    REPO_FORMAT,
    REPO_VERSION,
    BackupError,
    Corrupt,
    Manifest,
    decode_record,
    encode_record,
    iso,
    manifest_filename,
    parse_manifest_filename,
    parse_record_filename,
    record_filename,
    stamp,
    utcnow,
)

log = logging.getLogger(__name__)

REPO_JSON = "repo.json"
LOCK = "lock"
STALE_LOCK_SECONDS = 24 * 3600
STALE_TEMP_SECONDS = 24 * 3600


class TargetMissing(BackupError):
    """The repository directory is absent (an unmounted drive): never created silently."""


class RepoLocked(BackupError):
    """Another backup or prune holds the repository's lock (SPEC-002 §4.4)."""


# -- the file-writing seam ------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    write_all(fd, data)


def write_atomic(
    path: Path, data: bytes, *, tmp: Path | None = None, sync_dir: bool = True
) -> None:
    """Write ``data`` to ``tmp``, fsync, rename over ``path``; the temporary file never
    survives a failure (SPEC-001 §9.4, SPEC-002 §4.3, §11.3). Through this module's
    ``_write_all``, which the fault tests replace."""
    write_file_atomic(path, data, tmp=tmp, sync_dir=sync_dir,
                      write=lambda fd, chunk: _write_all(fd, chunk))


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else
    :class:`Corrupt` ("file check"; "presence check" when absent). Anyone who can write to the
    target can put a directory, a FIFO, a symlink to ``/dev/zero`` or a huge sparse file under
    a name the reader lists: it is never followed, never waited on and never read whole
    (SPEC-002 §2.9)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Corrupt(path, "presence check", f"the {what} is missing") from None
    except OSError as exc:  # ELOOP: a symlink; others: unreadable
        kind = "a symbolic link" if os.path.islink(path) else (exc.strerror or str(exc))
        raise Corrupt(path, "file check", f"not a regular file: {kind}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt(path, "file check", f"the {what} is not a regular file")
        if st.st_size > limit:
            raise Corrupt(path, "file check",
                          f"{st.st_size} bytes, more than a {what} may hold ({limit})")
        data = bytearray()
        while len(data) <= limit:
            piece = os.read(fd, min(1 << 20, limit + 1 - len(data)))
            if not piece:
                break
            data += piece
        if len(data) > limit:  # it grew while read
            raise Corrupt(path, "file check", f"more than a {what} may hold ({limit} bytes)")
        return bytes(data)
    except OSError as exc:
        raise Corrupt(path, "file check", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def _check(info: dict[str, Any]) -> str:
    """Checksum of repo.json's other fields: tells a damaged file apart from a wrong passphrase."""
    body = {k: v for k, v in info.items() if k != "check"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _key_check(master: bytes) -> str:
    """A commitment to the master key, so a cached key can be checked without the passphrase."""
    return hashlib.blake2b(b"", key=master, person=b"maia-bk-check", digest_size=16).hexdigest()




@dataclass(frozen=True, order=True)
class ManifestRef:
    """A manifest file found in the repository, known by its name alone (nothing decrypted)."""

    created: datetime
    id: str
    path: Path = field(compare=False)


@dataclass
class Catalog:
    """Every manifest of a repository, read and checked (SPEC-002 §5.2, §5.5, §5.6): the
    accepted ones in authenticated order (``created_at``, then id), oldest first, and the
    refused or unreadable ones with the reason."""

    accepted: list[tuple[ManifestRef, Manifest]] = field(default_factory=list)
    refused: list[tuple[ManifestRef, BackupError]] = field(default_factory=list)

    @property
    def newest(self) -> tuple[ManifestRef, Manifest] | None:
        return self.accepted[-1] if self.accepted else None

    def of_device(self, device: str) -> list[Manifest]:
        return [m for _, m in self.accepted if m.device == device]


@dataclass
class WriteLog:
    """What one operation wrote: new chunks and their bytes; directories still to fsync."""

    new_chunks: int = 0
    new_bytes: int = 0
    dirs: set[Path] = field(default_factory=set)


class Repository:
    """An opened (unlocked) repository: its keys, and checked reads and atomic writes."""

    def __init__(self, path: Path, info: dict[str, Any], master: bytes) -> None:
        self.path = path
        self.info = info
        self._master = master
        self.keys = RepoKeys.from_master(master)

    def __repr__(self) -> str:
        return f"Repository({self.path})"

    @property
    def repo_id(self) -> str:
        return str(self.info["repo_id"])

    @property
    def master_key(self) -> bytes:
        """Only for caching in ``keys/backup.key`` (SPEC-002 §2.6); never logged."""
        return self._master

    # -- creating and opening ----------------------------------------------------------------------
    @classmethod
    def init(cls, path: Path, passphrase: bytes, kdf: str = "moderate") -> Repository:
        path = Path(path).absolute()
        if not path.parent.is_dir():
            raise TargetMissing(
                f"{path.parent} does not exist (is the drive mounted?); maia-node does not "
                "create a missing target's parent directories"
            )
        if path.exists():
            if not path.is_dir():
                raise BackupError(f"{path} is a file, not a directory")
            if (path / REPO_JSON).exists():
                raise BackupError(f"{path} is already a backup repository")
            if any(path.iterdir()):
                raise BackupError(f"{path} is not empty; a new backup repository needs an "
                                  "empty (or new) directory")
        ops, mem = KDF_LIMITS[kdf]
        salt, master = os.urandom(16), new_master()
        kek = derive_kek(passphrase, salt, ops, mem)
        info: dict[str, Any] = {
            "format": REPO_FORMAT,
            "v": REPO_VERSION,
            "repo_id": os.urandom(16).hex(),
            "created_at": iso(utcnow()),
            "kdf": {"alg": "argon2id", "salt": salt.hex(), "opslimit": ops, "memlimit": mem},
            "master_key": wrap(kek, master).hex(),
            "key_check": _key_check(master),
        }
        info["check"] = _check(info)
        created = not path.exists()
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            for sub in ("chunks", "manifests", "verified"):
                (path / sub).mkdir(mode=0o700, exist_ok=True)
            write_atomic(path / REPO_JSON, json.dumps(info, indent=1).encode())
        except OSError as exc:
            if created:
                _remove_tree_quietly(path)
            raise BackupError(f"cannot create the backup repository at {path}: "
                              f"{exc.strerror or exc}") from None
        return cls(path, info, master)

    @staticmethod
    def read_info(path: Path) -> dict[str, Any]:
        path = Path(path)
        if not path.is_dir():
            raise TargetMissing(
                f"backup repository {path} does not exist (is the drive mounted?)"
            )
        f = path / REPO_JSON
        if not f.exists() and not f.is_symlink():
            raise BackupError(f"{path} is not a maia-node backup repository (no {REPO_JSON}); "
                              f"create one with: maia backup init --to {path}")
        raw = read_regular(f, MAX_REPO_JSON, "repository description")
        try:
            info = json.loads(raw)
            version = info["v"]
        except (ValueError, KeyError, TypeError) as exc:
            raise Corrupt(f, "format check", str(exc)) from None
        if not isinstance(info, dict) or info.get("format") != REPO_FORMAT:
            raise Corrupt(f, "format check", "not a maia-node repository description")
        if not isinstance(version, int) or version > REPO_VERSION:
            raise BackupError(f"{f} was written by a newer maia-node (version {version}, this "
                              f"version reads up to {REPO_VERSION}); upgrade maia-node")
        if info.get("check") != _check(info):
            raise Corrupt(f, "checksum check", "the file was altered or damaged")
        return info

    @classmethod
    def open(
        cls, path: Path, *, passphrase: bytes | None = None, master: bytes | None = None
    ) -> Repository:
        """Unlock with the passphrase, or with a cached master key (SPEC-002 §2.6)."""
        path = Path(path).absolute()
        info = cls.read_info(path)
        f = path / REPO_JSON
        if master is None:
            if passphrase is None:
                raise BackupError("a passphrase is needed to open the backup repository")
            try:
                kdf = info["kdf"]
                salt, ops, mem = bytes.fromhex(kdf["salt"]), int(kdf["opslimit"]), int(
                    kdf["memlimit"])
                wrapped = bytes.fromhex(info["master_key"])
            except (KeyError, TypeError, ValueError) as exc:
                raise Corrupt(f, "format check", f"field {exc}") from None
            check_kdf_limits(ops, mem)
            master = unwrap(derive_kek(passphrase, salt, ops, mem), wrapped,
                            f"backup repository {path}")
        if info.get("key_check") != _key_check(master):
            raise BackupError(f"the cached key does not open backup repository {path}")
        return cls(path, info, master)

    def change_passphrase(self, passphrase: bytes) -> None:
        """Re-wrap the master key under a new passphrase (new salt, same limits); no chunk is
        touched (SPEC-002 §2.6). repo.json is replaced atomically, under the lock."""
        kdf = dict(self.info["kdf"])
        ops, mem = int(kdf["opslimit"]), int(kdf["memlimit"])
        salt = os.urandom(16)
        kdf["salt"] = salt.hex()
        info = dict(self.info, kdf=kdf,
                    master_key=wrap(derive_kek(passphrase, salt, ops, mem), self._master).hex())
        info["check"] = _check(info)
        with self.lock():
            write_atomic(self.path / REPO_JSON, json.dumps(info, indent=1).encode())
        self.info = info

    # -- chunks ------------------------------------------------------------------------------------
    def chunk_path(self, name: str) -> Path:
        return self.path / "chunks" / name[:2] / name

    def put_content(self, content: bytes, wlog: WriteLog) -> tuple[list[str], dict[str, int]]:
        """Store content as consecutive chunks (each at most 8 MiB of plaintext). A chunk whose
        name already exists is not written again (SPEC-002 §3.4)."""
        step = MAX_CHUNK_PLAINTEXT - 1
        names: list[str] = []
        sizes: dict[str, int] = {}
        for start in range(0, max(len(content), 1), step):
            piece = content[start:start + step]
            name = self.keys.name(piece)
            path = self.chunk_path(name)
            try:
                sizes[name] = path.stat().st_size
            except FileNotFoundError:
                packed = zlib.compress(piece, 6)
                plain = (bytes([CHUNK_ZLIB]) + packed if len(packed) < len(piece) * 0.9
                         else bytes([CHUNK_RAW]) + piece)
                sealed = self.keys.seal(plain)
                path.parent.mkdir(mode=0o700, exist_ok=True)
                write_atomic(path, sealed, sync_dir=False)
                wlog.new_chunks += 1
                wlog.new_bytes += len(sealed)
                wlog.dirs.add(path.parent)
                sizes[name] = len(sealed)
            names.append(name)
        return names, sizes

    def check_chunk_file(self, name: str, size: int) -> None:
        """Present, a regular file (a symlink is not followed) and of the listed size."""
        path = self.chunk_path(name)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise Corrupt(path, "presence check", "the chunk is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt(path, "file check", "the chunk is not a regular file")
        actual = st.st_size
        if actual != size:
            raise Corrupt(path, "size check", f"{actual} bytes, the manifest lists {size}")

    def read_chunk(self, name: str, size: int) -> bytes:
        """A chunk's content, after checking its size, its MAC and its name."""
        path = self.chunk_path(name)
        self.check_chunk_file(name, size)
        sealed = read_regular(path, min(size, MAX_CHUNK_FILE), "chunk")
        if len(sealed) != size:
            raise Corrupt(path, "size check", f"{len(sealed)} bytes, the manifest lists {size}")
        try:
            plain = self.keys.open(sealed)
        except CryptoError:
            raise Corrupt(path, "MAC check", "the file was altered or damaged") from None
        fmt, body = plain[:1], plain[1:]
        if fmt == bytes([CHUNK_ZLIB]):
            try:
                inflater = zlib.decompressobj()
                payload = inflater.decompress(body, MAX_CHUNK_PLAINTEXT)
                if inflater.unconsumed_tail or not inflater.eof:
                    raise zlib.error("over-long or truncated stream")
            except zlib.error as exc:
                raise Corrupt(path, "format check", str(exc)) from None
        elif fmt == bytes([CHUNK_RAW]):
            payload = body
        else:
            raise Corrupt(path, "format check", "unknown chunk format")
        if self.keys.name(payload) != name:
            raise Corrupt(path, "name check", "its content does not match its name")
        return payload

    def get_content(self, names: list[str], sizes: dict[str, int]) -> bytes:
        return b"".join(self.read_chunk(n, sizes[n]) for n in names)

    def chunk_files(self) -> Iterator[Path]:
        root = self.path / "chunks"
        for sub in sorted(root.iterdir()) if root.is_dir() else ():
            if sub.is_dir():
                for f in sub.iterdir():
                    if not f.name.startswith("."):
                        yield f

    def sync_written(self, wlog: WriteLog) -> None:
        for d in sorted(wlog.dirs):
            fsync_dir(d)
        if wlog.dirs:
            fsync_dir(self.path / "chunks")
        wlog.dirs.clear()

    # -- manifests ---------------------------------------------------------------------------------
    def manifests(self) -> list[ManifestRef]:
        """Complete backups, oldest first (a manifest under its final name is one)."""
        out = []
        d = self.path / "manifests"
        for f in d.iterdir() if d.is_dir() else ():
            parsed = parse_manifest_filename(f.name)
            if parsed:
                out.append(ManifestRef(parsed[0], parsed[1], f))
        return sorted(out)

    def catalog(self) -> Catalog:
        """Read every manifest: order by the authenticated ``created_at`` (never by file name,
        which anyone who can write to the target can change) and set the refused apart
        (SPEC-002 §5.5)."""
        cat = Catalog()
        accepted = []
        for ref in self.manifests():
            try:
                m = self.load_manifest(ref)
            except BackupError as exc:
                log.info("refusing backup manifest %s", exc)
                cat.refused.append((ref, exc))
                continue
            accepted.append((m.created, m.id, ref, m))
        cat.accepted = [(ref, m) for _, _, ref, m in sorted(accepted, key=lambda t: t[:2])]
        return cat

    def latest(self) -> ManifestRef | None:
        """The newest backup that is not refused, by authenticated ``created_at`` (§5.5)."""
        newest = self.catalog().newest
        return newest[0] if newest else None

    def find(self, prefix: str) -> ManifestRef:
        refs = [r for r in self.manifests() if r.id.startswith(prefix.lower())]
        if not refs:
            raise BackupError(f"no backup in {self.path} has an id starting with {prefix!r}")
        if len(refs) > 1:
            raise BackupError(f"{prefix!r} matches {len(refs)} backups; give more of the id")
        return refs[0]

    def load_manifest(self, ref: ManifestRef) -> Manifest:
        """Read and check one manifest; every failure is a refusal (SPEC-002 §5.2, §5.6)."""
        sealed = read_regular(ref.path, MAX_MANIFEST_FILE, "manifest")
        try:
            plain = self.keys.open(sealed)
        except CryptoError:
            raise Corrupt(ref.path, "MAC check", "the file was altered or damaged") from None
        if self.keys.name(plain) != ref.id:
            raise Corrupt(ref.path, "id check", "its content does not match its name")
        manifest = Manifest.decode(plain, ref.path)
        manifest.id = ref.id
        # SPEC-002 §5.2: the name's time is the authenticated created_at (to the second), so a
        # renamed old manifest never passes for a newer one.
        if stamp(manifest.created) != stamp(ref.created):
            raise Corrupt(ref.path, "name check",
                          f"its name says {stamp(ref.created)} but it was created at "
                          f"{manifest.created_at}; refused (renamed)")
        # SPEC-002 §5.6: a version 2 manifest names its repository.
        if manifest.repo and manifest.repo != self.repo_id:
            raise Corrupt(ref.path, "repository check",
                          f"it belongs to repository {manifest.repo[:12]}, not "
                          f"{self.repo_id[:12]}; refused")
        # SPEC-002 §5.2: a manifest from the future would be "the newest" (restored, the parent,
        # the rollback anchor) for as long as it pleases whoever holds the key.
        if manifest.created > utcnow() + MAX_FUTURE:
            raise Corrupt(ref.path, "time check",
                          f"it was created at {manifest.created_at}, more than a day ahead of "
                          "this clock; refused")
        return manifest

    def write_manifest(self, manifest: Manifest) -> ManifestRef:
        """The last write of a backup: once this rename lands, the backup is complete."""
        plain = manifest.encode()
        manifest.id = self.keys.name(plain)
        d = self.path / "manifests"
        final = d / manifest_filename(manifest.created, manifest.id)
        write_atomic(final, self.keys.seal(plain), tmp=d / f".{manifest.id}.tmp")
        return ManifestRef(manifest.created, manifest.id, final)

    def delete_manifest(self, ref: ManifestRef) -> None:
        with contextlib.suppress(FileNotFoundError):
            ref.path.unlink()
        for rec in self.record_files().get(ref.id, []):
            with contextlib.suppress(FileNotFoundError):
                rec.unlink()

    # -- verification records ----------------------------------------------------------------------
    def write_record(
        self, manifest_id: str, verified: datetime, verifier: str, counts: dict[str, int]
    ) -> Path:
        d = self.path / "verified"
        d.mkdir(mode=0o700, exist_ok=True)
        path = d / record_filename(manifest_id, verified)
        plain = encode_record(manifest_id, iso(verified), verifier, counts)
        write_atomic(path, self.keys.seal(plain))
        return path

    def record_files(self) -> dict[str, list[Path]]:
        """Record files by manifest id, newest first (from names only)."""
        out: dict[str, list[tuple[datetime, Path]]] = {}
        d = self.path / "verified"
        for f in d.iterdir() if d.is_dir() else ():
            parsed = parse_record_filename(f.name)
            if parsed:
                out.setdefault(parsed[0], []).append((parsed[1], f))
        return {k: [p for _, p in sorted(v, reverse=True)] for k, v in out.items()}

    def verified_at(self, manifest_id: str, files: list[Path] | None = None) -> str | None:
        """A manifest is verified iff a record that decrypts names it (SPEC-002 §7.3)."""
        for path in files if files is not None else self.record_files().get(manifest_id, []):
            try:
                sealed = read_regular(path, MAX_RECORD_FILE, "verification record")
                rec = decode_record(self.keys.open(sealed), path)
            except (CryptoError, Corrupt, OSError):
                log.warning("ignoring an unreadable verification record %s", path)
                continue
            if rec["manifest"] == manifest_id:
                return str(rec["verified_at"])
        return None

    def verified_ids(self) -> dict[str, str]:
        """manifest id -> verified_at, for every manifest with a valid record."""
        out = {}
        for mid, files in self.record_files().items():
            at = self.verified_at(mid, files)
            if at:
                out[mid] = at
        return out

    # -- the writer's lock (SPEC-002 §4.4) ---------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, break_lock: bool = False) -> Iterator[None]:
        path = self.path / LOCK
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": iso(utcnow()),
              "started": time.time()}
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                holder = _read_lock(path)
                if attempt == 0 and self._may_break(holder, break_lock):
                    log.warning("removing a stale backup lock held by %s pid %s",
                                holder.get("host"), holder.get("pid"))
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                raise RepoLocked(
                    f"backup repository {self.path} is in use by {holder.get('host', '?')} "
                    f"pid {holder.get('pid', '?')} since {holder.get('started_at', '?')}"
                    + ("" if holder.get("host") == me["host"] else
                       "; if that backup is gone for more than 24 h, add --break-lock")
                ) from None
            try:
                try:
                    _write_all(fd, json.dumps(me).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
            break
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @staticmethod
    def _may_break(holder: dict[str, Any], break_lock: bool) -> bool:
        """A lock of a dead process on this host is stale; another host's needs --break-lock
        and 24 h of age."""
        same_host = holder.get("host") == socket.gethostname()
        pid = holder.get("pid")
        if same_host and isinstance(pid, int):
            return not pid_alive(pid)
        started = holder.get("started")
        old = isinstance(started, int | float) and time.time() - started > STALE_LOCK_SECONDS
        return break_lock and old

    # -- upkeep ------------------------------------------------------------------------------------
    def temp_files(self) -> list[Path]:
        out = []
        for d in (self.path, self.path / "manifests", self.path / "verified"):
            out.extend(f for f in d.glob(".*.tmp"))
        root = self.path / "chunks"
        out.extend(root.glob("*/.*.tmp"))
        return out


def _read_lock(path: Path) -> dict[str, Any]:
    """The lock's holder, or {} when the lock is unreadable (or not a small regular file)."""
    try:
        data = json.loads(read_regular(path, MAX_LOCK_FILE, "lock"))
        return data if isinstance(data, dict) else {}
    except (Corrupt, ValueError):
        return {}


def _remove_tree_quietly(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
