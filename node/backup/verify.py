"""Verification by restore: a backup that was never restored is not trusted (SPEC-002 §7).

The manifest is rebuilt into a fresh temporary data dir with the restore code itself; only
when every check passes is an encrypted verification record written into the repository.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .format import BackupError, iso, utcnow
from .repository import ManifestRef, Repository
from .restore import Progress, rebuild


@dataclass
class VerifyResult:
    manifest_id: str
    verified_at: str
    counts: dict[str, int]
    record: Path
    seconds: float

    def summary(self) -> dict[str, object]:
        return {"id": self.manifest_id, "verified_at": self.verified_at, "counts": self.counts,
                "record": str(self.record), "seconds": round(self.seconds, 3)}


def verify_backup(
    repo: Repository,
    ref: ManifestRef,
    *,
    verifier: str,
    now: datetime | None = None,
    progress: Progress | None = None,
    tmp_root: Path | None = None,
) -> VerifyResult:
    """Restore ``ref`` into a temporary data dir (mode 0700, always deleted), check it, and
    record the success. Raises Corrupt (naming the file and check) or BackupError."""
    started = time.monotonic()
    manifest = repo.load_manifest(ref)
    tmp = Path(tempfile.mkdtemp(prefix="maia-verify-", dir=tmp_root))
    try:
        report = rebuild(repo, manifest, ref, tmp / "data", progress=progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verified = now or utcnow()
    try:
        record = repo.write_record(manifest.id, verified, verifier, report.counts())
    except OSError as exc:
        raise BackupError(f"backup {manifest.id[:12]} verified, but the verification record could "
                          f"not be written into {repo.path} ({exc.strerror or exc})") from None
    return VerifyResult(manifest.id, iso(verified), report.counts(), record,
                        time.monotonic() - started)
