"""Rollback detection: what this data dir remembers about the backups it wrote (SPEC-002 §12).

A backup target is writable by whoever holds the drive or the NAS share, without the key: they
cannot forge a manifest, but they can delete the newest ones, or put back an older copy of the
whole target. The manifests left over still authenticate, so only a memory kept elsewhere
notices. That memory is ``<data>/backup-anchors.json``: for each repository, the newest manifest
this data dir wrote to it (or restored from it). It is device-local, like ``config.toml`` and
``keys/``: not Runtime (deleting Runtime must not silence the check) and not Identity or Memory
(a record kept inside the backup it guards is rolled back with it). A fresh machine remembers
nothing, and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .format import MAX_FUTURE, Corrupt, Manifest, iso, parse_iso, utcnow
from .repository import Catalog, Repository, read_regular, write_atomic

log = logging.getLogger(__name__)

ANCHORS_FILE = "backup-anchors.json"
ANCHORS_FORMAT = "maia-backup-anchors"
ANCHORS_VERSION = 1
MAX_ANCHORS_FILE = 1 << 20  # SPEC-002 §2.9: one small entry per repository


@dataclass(frozen=True)
class Anchor:
    """The newest manifest a data dir wrote to (or restored from) one repository."""

    manifest: str
    created_at: str
    device: str
    target: str = ""

    def order(self) -> tuple[Any, str]:
        return (parse_iso(self.created_at), self.manifest)


def anchors_path(root: Path) -> Path:
    return Path(root) / ANCHORS_FILE


def load_anchors(root: Path) -> tuple[dict[str, Anchor], str | None]:
    """repo id -> Anchor, and a problem (an unreadable file) to report instead of guessing."""
    path = anchors_path(root)
    try:
        raw = read_regular(path, MAX_ANCHORS_FILE, "backup anchors file")
    except Corrupt as exc:
        if exc.check == "presence check":
            return {}, None
        return {}, f"{path} cannot be read ({exc})"
    try:
        data = json.loads(raw)
        if data.get("format") != ANCHORS_FORMAT:
            raise ValueError("not a maia-node backup anchors file")
        if int(data.get("v", 0)) > ANCHORS_VERSION:
            return {}, f"{path} was written by a newer maia-node"
        out = {}
        for repo_id, a in data["repos"].items():
            anchor = Anchor(str(a["manifest"]), str(a["created_at"]), str(a["device"]),
                            str(a.get("target", "")))
            anchor.order()  # validates the time
            out[str(repo_id)] = anchor
        return out, None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"{path} is damaged ({exc})"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise read-modify-write of the anchors file between processes (a CLI backup and a
    scheduled run to two repositories): flock on the data dir itself, no extra file."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remember(root: Path, repo: Repository, manifest: Manifest) -> bool:
    """Record ``manifest`` as the newest this data dir knows in ``repo``, unless a later one is
    already recorded (an entry only moves forward, SPEC-002 §12.1). Returns whether it changed."""
    root = Path(root)
    if not root.is_dir():
        return False
    new = Anchor(manifest.id, manifest.created_at, manifest.device, str(repo.path))
    if _in_future(new):  # never pushed ahead: it would hide every later rollback (§5.2)
        log.warning("not remembering backup %s: created at %s, in the future", manifest.id[:12],
                    manifest.created_at)
        return False
    with _locked(root):
        anchors, problem = load_anchors(root)
        if problem:
            log.warning("rewriting the backup anchors: %s", problem)
        old = anchors.get(repo.repo_id)
        if old is not None and old.order() >= new.order() and not _in_future(old):
            return False
        anchors[repo.repo_id] = new
        body = {"format": ANCHORS_FORMAT, "v": ANCHORS_VERSION, "updated_at": iso(utcnow()),
                "repos": {k: asdict(v) for k, v in sorted(anchors.items())}}
        write_atomic(anchors_path(root), json.dumps(body, indent=1).encode() + b"\n")
    return True


def _in_future(anchor: Anchor) -> bool:
    """An anchor more than a day ahead of this clock: only a forged manifest (or a clock that
    was far ahead) puts one there, and an entry that only moves forward would stay stuck."""
    return parse_iso(anchor.created_at) > utcnow() + MAX_FUTURE


@dataclass
class RollbackCheck:
    """The outcome of SPEC-002 §12.2 for one repository, as shown to the owner."""

    checked: bool
    detected: bool = False
    remembered: Anchor | None = None
    newest: tuple[str, str] | None = None  # (id, created_at) of that device's newest backup
    warning: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "detected": self.detected,
            "remembered": asdict(self.remembered) if self.remembered else None,
            "newest": ({"manifest": self.newest[0], "created_at": self.newest[1]}
                       if self.newest else None),
            "warning": self.warning,
        }


def check_rollback(repo: Repository, catalog: Catalog, *roots: Path) -> RollbackCheck:
    """Compare the target with what the data dirs ``roots`` remember about it (§12.2)."""
    anchor: Anchor | None = None
    problems = []
    for root in dict.fromkeys(Path(r).absolute() for r in roots):
        anchors, problem = load_anchors(root)
        if problem:
            problems.append(problem)
        a = anchors.get(repo.repo_id)
        if a is not None and (anchor is None or a.order() > anchor.order()):
            anchor = a
    if anchor is None:
        why = "; ".join(problems) if problems else (
            f"this data dir remembers no backup written to {repo.path} (a fresh machine, or "
            "backups taken elsewhere)")
        return RollbackCheck(False, warning=f"rollback not checked: {why}, so a target that "
                             "lost its newest backups cannot be noticed")
    same = catalog.of_device(anchor.device)
    newest = (same[-1].id, same[-1].created_at) if same else None
    present = any(m.id == anchor.manifest for m in same)
    if present or (same and same[-1].created >= parse_iso(anchor.created_at)):
        return RollbackCheck(True, False, anchor, newest)
    refused = next((exc for ref, exc in catalog.refused if ref.id == anchor.manifest), None)
    state = ("is there but refused (" + (str(refused) if isinstance(refused, Corrupt)
                                         else f"{refused}") + ")") if refused else "is missing"
    there = (f"the newest backup of that device there is {newest[0][:12]} from {newest[1]}"
             if newest else "the target holds no backup of that device")
    warning = (f"ROLLBACK: backup {anchor.manifest[:12]} from {anchor.created_at}, the newest "
               f"this data dir wrote to {repo.path}, {state}, and {there}: newer backups were "
               "deleted or the target was replaced by an older copy")
    return RollbackCheck(True, True, anchor, newest, warning)
