"""Retention: which backups a rule keeps, and pruning the rest (SPEC-002 §9).

The rule keeps the newest backup of each of the last N days, ISO weeks and months that have
one, always the newest backup, and never the newest verified one: the only backup proven to
restore is never the one thrown away. Rules apply per device, so devices sharing one
repository never evict each other's backups.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from .format import BackupError
from .repository import STALE_TEMP_SECONDS, ManifestRef, Repository, fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionRule:
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12


@dataclass(frozen=True)
class Candidate:
    id: str
    created: datetime
    device: str = ""


def _periods() -> list[tuple[str, Callable[[datetime], tuple[int, ...]]]]:
    return [
        ("keep_daily", lambda t: (t.year, t.month, t.day)),
        ("keep_weekly", lambda t: tuple(t.isocalendar())[:2]),
        ("keep_monthly", lambda t: (t.year, t.month)),
    ]


def select_keep(
    candidates: Iterable[Candidate], rule: RetentionRule, verified: set[str]
) -> set[str]:
    """Ids the rule keeps (SPEC-002 §9.1, §9.2), per device."""
    by_device: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_device.setdefault(c.device, []).append(c)
    keep: set[str] = set()
    for group in by_device.values():
        newest_first = sorted(group, key=lambda c: (c.created, c.id), reverse=True)
        keep.add(newest_first[0].id)
        for attr, period in _periods():
            limit = getattr(rule, attr)
            seen: list[tuple[int, ...]] = []
            for c in newest_first:
                p = period(c.created)
                if p in seen:
                    continue
                if len(seen) >= limit:
                    break
                seen.append(p)
                keep.add(c.id)  # the first one met is the newest of its period
        newest_verified = next((c for c in newest_first if c.id in verified), None)
        if newest_verified is not None:
            keep.add(newest_verified.id)
    return keep


@dataclass
class PrunePlan:
    delete: list[ManifestRef] = field(default_factory=list)
    keep: list[ManifestRef] = field(default_factory=list)
    chunks: int = 0
    chunk_bytes: int = 0
    temp_files: int = 0

    def summary(self) -> dict[str, object]:
        return {"deleted": [r.id for r in self.delete], "kept": [r.id for r in self.keep],
                "chunks_deleted": self.chunks, "bytes_freed": self.chunk_bytes,
                "temp_files_deleted": self.temp_files}


def prune(
    repo: Repository, rule: RetentionRule, *, dry_run: bool = False, break_lock: bool = False
) -> PrunePlan:
    """Apply the rule. Order (SPEC-002 §9.3): manifests and their records, then chunks no
    remaining manifest references, then temporary files older than 24 h, so a crash midway
    never leaves a manifest pointing at a missing chunk."""
    with repo.lock(break_lock=break_lock):
        refs = repo.manifests()
        manifests = {}
        for ref in refs:
            try:
                manifests[ref.id] = repo.load_manifest(ref)
            except BackupError as exc:
                raise BackupError(f"prune stopped, nothing was deleted: {exc}") from None
        # Authenticated order, never the file names' (SPEC-002 §5.5).
        refs.sort(key=lambda r: (manifests[r.id].created, r.id))
        verified = set(repo.verified_ids())
        keep = select_keep(
            [Candidate(r.id, manifests[r.id].created, manifests[r.id].device) for r in refs],
            rule, verified,
        )
        plan = PrunePlan([r for r in refs if r.id not in keep], [r for r in refs if r.id in keep])
        needed = {name for r in plan.keep for name in manifests[r.id].chunks}
        orphans = [f for f in repo.chunk_files() if f.name not in needed]
        cutoff = time.time() - STALE_TEMP_SECONDS
        temps = [f for f in repo.temp_files() if _mtime(f) < cutoff]
        plan.chunks = len(orphans)
        plan.chunk_bytes = sum(_size(f) for f in orphans)
        plan.temp_files = len(temps)
        if dry_run:
            return plan
        for ref in plan.delete:
            repo.delete_manifest(ref)
        fsync_dir(repo.path / "manifests")
        fsync_dir(repo.path / "verified")
        for f in orphans:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        for f in temps:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        log.info("pruned %d backup(s), %d chunk(s), %d temporary file(s)",
                 len(plan.delete), plan.chunks, plan.temp_files)
        return plan


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _size(path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
