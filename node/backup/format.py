"""What a backup repository holds, byte for byte: manifests, packs, verification records and
file names (SPEC-002 §2.1, §3.2, §5, §7.2). Every format carries a version, and a reader
refuses a version newer than it knows (SPEC-001 §5.10)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack

REPO_FORMAT = "maia-backup-repo"
REPO_VERSION = 1
MANIFEST_FORMAT = "maia-backup-manifest"
MANIFEST_VERSION = 2  # v2 adds `repo` (SPEC-002 §5.6); v1 is still read
PACK_VERSION = 1
RECORD_VERSION = 1

MAX_CHUNK_PLAINTEXT = 8 << 20  # SPEC-002 §2.5
MAX_PACKS = 16  # SPEC-002 §3.3
# SPEC-002 §2.9: the most a reader takes of each file of a repository (or of the data dir's
# anchors file); anything larger is refused before it is read, so a planted sparse file or a
# device node cannot exhaust memory.
MAX_CHUNK_FILE = MAX_CHUNK_PLAINTEXT + 4096  # format byte, nonce, MAC and zlib's overhead
MAX_MANIFEST_FILE = 32 << 20
MAX_RECORD_FILE = 64 << 10
MAX_REPO_JSON = 64 << 10
MAX_LOCK_FILE = 4 << 10
# SPEC-002 §5.2: a manifest created more than this ahead of the reader's clock is refused.
MAX_FUTURE = timedelta(days=1)
CHUNK_RAW = 0
CHUNK_ZLIB = 1

BACKED_UP_LAYERS = ("identity", "memory")  # SPEC-002 §1: Substrate and Runtime never are

_MANIFEST_NAME = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{64})\.manifest\Z")
_RECORD_NAME = re.compile(r"^([0-9a-f]{64})\.(\d{8}T\d{6}Z)\.record\Z")
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


# -- errors ---------------------------------------------------------------------------------------
class BackupError(Exception):
    """A backup operation failed in a way the owner can understand and act on (one sentence)."""


class WrongPassphrase(BackupError):
    """The passphrase does not unwrap the repository's (or the device key's) seal."""


class Corrupt(BackupError):
    """A file of the repository failed a check; names the file and the check (SPEC-002 §11.2)."""

    def __init__(self, path: Path | str, check: str, detail: str = "") -> None:
        self.path = str(path)
        self.check = check
        super().__init__(f"{path}: {check} failed" + (f" ({detail})" if detail else ""))


class Cancelled(BackupError):
    """The backup was asked to stop (the node is shutting down)."""


# -- time ------------------------------------------------------------------------------------------
def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """SPEC-001 §10.1 timestamp with 9 fractional digits."""
    dt = dt.astimezone(UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}000Z"


def parse_iso(text: str) -> datetime:
    """Accept 0 to 9 fractional digits and ``Z`` or ``+00:00`` (SPEC-001 §10.1)."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|\+00:00)", text)
    if not m:
        raise ValueError(f"not a UTC timestamp: {text!r}")
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    frac = (m.group(2) or "0").ljust(9, "0")
    return base.replace(microsecond=int(frac[:6]))


def stamp(dt: datetime) -> str:
    """The compact form used in file names: ``YYYYMMDDTHHMMSSZ``."""
    return dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


# -- file names ------------------------------------------------------------------------------------
def manifest_filename(created: datetime, manifest_id: str) -> str:
    return f"{stamp(created)}-{manifest_id}.manifest"


def parse_manifest_filename(name: str) -> tuple[datetime, str] | None:
    m = _MANIFEST_NAME.match(name)
    return (parse_stamp(m.group(1)), m.group(2)) if m else None


def record_filename(manifest_id: str, verified: datetime) -> str:
    return f"{manifest_id}.{stamp(verified)}.record"


def parse_record_filename(name: str) -> tuple[str, datetime] | None:
    m = _RECORD_NAME.match(name)
    return (m.group(1), parse_stamp(m.group(2))) if m else None


# -- manifest --------------------------------------------------------------------------------------
@dataclass
class DocEntry:
    """One document in a manifest: its heads and the packs that rebuild it, in order."""

    heads: list[str]
    changes: int
    packs: list[list[str]]
    bytes: int
    full_bytes: int

    def encode(self) -> dict[str, Any]:
        return {"heads": self.heads, "changes": self.changes, "packs": self.packs,
                "bytes": self.bytes, "full_bytes": self.full_bytes}


@dataclass
class LayerEntry:
    format_version: int
    docs: dict[str, DocEntry] = field(default_factory=dict)


@dataclass
class Manifest:
    """Everything one backup needs to be restored; self-contained (SPEC-002 §5.3)."""

    created_at: str
    device: str
    mesh: str
    node_version: str
    parent: str | None
    layers: dict[str, LayerEntry]
    certs: list[str]
    config: str | None
    device_key: str | None
    chunks: dict[str, int]
    id: str = ""
    repo: str = ""  # the repository's repo_id (SPEC-002 §5.6); "" in a version 1 manifest

    @property
    def created(self) -> datetime:
        return parse_iso(self.created_at)

    @property
    def stored_bytes(self) -> int:
        return sum(self.chunks.values())

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "format": MANIFEST_FORMAT,
                "v": MANIFEST_VERSION,
                "repo": self.repo,
                "created_at": self.created_at,
                "device": self.device,
                "mesh": self.mesh,
                "node_version": self.node_version,
                "parent": self.parent,
                "layers": {
                    name: {
                        "format_version": layer.format_version,
                        "docs": {d: e.encode() for d, e in layer.docs.items()},
                    }
                    for name, layer in self.layers.items()
                },
                "certs": self.certs,
                "config": self.config,
                "device_key": self.device_key,
                "chunks": self.chunks,
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, plaintext: bytes, path: Path | str) -> Manifest:
        try:
            m = msgpack.unpackb(plaintext, raw=False)
        except Exception as exc:
            raise Corrupt(path, "manifest format check", str(exc)) from None
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
            raise Corrupt(path, "manifest format check", "not a maia-node backup manifest")
        if not isinstance(m.get("v"), int) or m["v"] > MANIFEST_VERSION:
            raise BackupError(
                f"{path} was written by a newer maia-node (manifest version {m.get('v')}, this "
                f"version reads up to {MANIFEST_VERSION}); upgrade maia-node to read it"
            )
        try:
            layers = {}
            for name, layer in m["layers"].items():
                docs = {
                    str(doc_id): DocEntry(
                        heads=[str(h) for h in e["heads"]],
                        changes=int(e["changes"]),
                        packs=[[str(n) for n in pack] for pack in e["packs"]],
                        bytes=int(e["bytes"]),
                        full_bytes=int(e.get("full_bytes", 0)),
                    )
                    for doc_id, e in layer["docs"].items()
                }
                layers[str(name)] = LayerEntry(int(layer["format_version"]), docs)
            manifest = cls(
                created_at=str(m["created_at"]),
                device=str(m["device"]),
                mesh=str(m["mesh"]),
                node_version=str(m.get("node_version", "")),
                parent=m.get("parent"),
                layers=layers,
                certs=[str(n) for n in m["certs"]],
                config=m.get("config"),
                device_key=m.get("device_key"),
                chunks={str(k): int(v) for k, v in m["chunks"].items()},
                repo=str(m["repo"]) if m["v"] >= 2 else "",
            )
            manifest.created  # noqa: B018 - validates the timestamp
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Corrupt(path, "manifest format check", f"field {exc}") from None
        names = [n for layer in layers.values() for e in layer.docs.values()
                 for pack in e.packs for n in pack] + manifest.certs
        names += [n for n in (manifest.config, manifest.device_key) if n]
        unlisted = [n for n in names if n not in manifest.chunks or not HEX64.match(n)]
        if unlisted:
            raise Corrupt(path, "manifest format check", f"chunk {unlisted[0]} is not listed")
        return manifest


# -- packs -----------------------------------------------------------------------------------------
@dataclass
class Pack:
    """A document's changes since ``base_heads`` (delta) or its whole saved state (full)."""

    doc: str
    kind: str
    base_heads: list[bytes]
    batches: list[bytes]
    changes: list[bytes] = field(default_factory=list)
    snapshot: bytes = b""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": PACK_VERSION, "doc": self.doc, "kind": self.kind,
                                "base_heads": self.base_heads}
        if self.kind == "full":
            body["snapshot"] = self.snapshot
        else:
            body["changes"] = self.changes
        body["batches"] = self.batches
        return msgpack.packb(body, use_bin_type=True)

    @classmethod
    def decode(cls, plaintext: bytes, path: Path | str) -> Pack:
        try:
            p = msgpack.unpackb(plaintext, raw=False)
            if p["v"] > PACK_VERSION:
                raise BackupError(f"{path} holds a pack from a newer maia-node; upgrade maia-node")
            kind = p["kind"]
            if kind not in ("full", "delta"):
                raise ValueError(f"unknown pack kind {kind!r}")
            pack = cls(
                doc=str(p["doc"]),
                kind=kind,
                base_heads=list(p["base_heads"]),
                batches=list(p["batches"]),
                changes=list(p.get("changes") or []),
                snapshot=bytes(p.get("snapshot") or b""),
            )
        except BackupError:
            raise
        except Exception as exc:
            raise Corrupt(path, "pack format check", str(exc)) from None
        if not all(isinstance(x, bytes) for x in pack.batches + pack.changes):
            raise Corrupt(path, "pack format check", "non-binary change or batch")
        return pack


# -- verification records --------------------------------------------------------------------------
def encode_record(
    manifest_id: str, verified_at: str, verifier: str, counts: dict[str, int]
) -> bytes:
    return msgpack.packb(
        {"v": RECORD_VERSION, "manifest": manifest_id, "verified_at": verified_at,
         "verifier": verifier, "counts": counts},
        use_bin_type=True,
    )


def decode_record(plaintext: bytes, path: Path | str) -> dict[str, Any]:
    try:
        rec = msgpack.unpackb(plaintext, raw=False)
        if not isinstance(rec, dict) or not isinstance(rec.get("manifest"), str):
            raise ValueError("not a verification record")
        parse_iso(rec["verified_at"])
    except Exception as exc:
        raise Corrupt(path, "record format check", str(exc)) from None
    if rec.get("v", 0) > RECORD_VERSION:
        raise BackupError(f"{path} was written by a newer maia-node; upgrade maia-node")
    return rec
