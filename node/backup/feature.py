"""Scheduled backups while ``maia up`` runs (SPEC-002 §10), and the backup section of the
node's status (§1.2, §7.4).

Each run (take a backup, verify it by restoring it, prune) happens in a separate low-priority
process, ``maia backup scheduled-run``: it reads the stores through LMDB read transactions
beside the node, so it never blocks the node's writes or its event loop, and stopping the
node simply stops it. One run at a time; a failed run is logged, shown and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.routes import RouteTable
from ..config import ConfigError
from ..features import FeatureBase, cancel_and_wait
from .format import parse_iso, parse_manifest_filename
from .routes import BACKUP_KEY, backup_routes
from .runtime_status import MAX_AHEAD_SECONDS, newer_verification, read_status, update_status
from .settings import ENV_MIN_INTERVAL, BackupSettings, cache_path

if TYPE_CHECKING:
    from crdt import Store

    from ..config import NodeConfig
    from ..node import Node

log = logging.getLogger(__name__)

STOP_GRACE = 10.0


class BackupFeature(FeatureBase):
    """The node's backup schedule and status."""

    name = "backup"

    def __init__(self) -> None:
        self.node: Node | None = None
        self.settings = BackupSettings()
        self._task: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._state: dict[str, Any] = {}
        self.next_run: float | None = None
        self.running = False
        self.why_not_scheduled = ""

    # -- Feature protocol --------------------------------------------------------------------------
    def setup(self, node: Node) -> None:
        self.node = node
        self.settings = BackupSettings.from_config(node.config)  # ConfigError names the key
        if os.environ.get(ENV_MIN_INTERVAL):
            log.warning("%s is set: backup intervals below 15 minutes are allowed (for tests)",
                        ENV_MIN_INTERVAL)

    def route_tables(self) -> Sequence[RouteTable]:
        return [backup_routes]


    def configure_app(self, app: web.Application) -> None:
        app[BACKUP_KEY] = self

    async def start(self) -> None:
        assert self.node is not None
        self._state = read_status(self.node.store)
        if self.settings.target is None:
            self.why_not_scheduled = "no [backup] target in config.toml"
        elif not cache_path(self.node.paths).exists():
            self.why_not_scheduled = "no cached key (maia backup init/create --remember-key)"
        else:
            self._task = asyncio.create_task(self._schedule(), name="backup-schedule")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._stop_worker()

    def offline_status(self, store: Store, config: NodeConfig) -> dict[str, Any]:
        """The backup section of ``maia status`` when no node runs (SPEC-002 §7.4), from
        Runtime."""
        try:
            self.settings = BackupSettings.from_config(config)
        except ConfigError as exc:
            return {"summary": f"WARNING: {exc}", "warning": str(exc)}
        self._state = read_status(store)
        self.why_not_scheduled = "the node is not running"
        return self.status()

    def status(self) -> dict[str, Any]:
        st = self._state
        warning = self._warning()
        scheduled = self._task is not None
        if warning:
            summary = f"WARNING: {warning}"
        else:
            summary = f"last verified backup {st['last_verified'][:19]}Z"
        if scheduled:
            summary += f"; every {_human(self.settings.interval)} to {self.settings.target}"
        else:
            summary += f"; not scheduled ({self.why_not_scheduled})"
        if st.get("last_error"):
            summary += f"; last run failed: {st['last_error']}"
        return {
            "target": str(self.settings.target) if self.settings.target else None,
            "scheduled": scheduled,
            "interval_seconds": self.settings.interval,
            "next_run": _iso_epoch(self.next_run) if scheduled else None,
            "running": self.running,
            "runs": st.get("runs", 0),
            "last_run": _iso_epoch(st.get("last_run_at")),
            "last_manifest": st.get("last_manifest"),
            "last_verified": st.get("last_verified"),
            "last_error": st.get("last_error"),
            "last_error_at": _iso_epoch(st.get("last_error_at")),
            "rollback": self._rollback(),
            "warning": warning,
            "summary": summary,
        }

    # -- status ------------------------------------------------------------------------------------
    def _rollback(self) -> dict[str, Any] | None:
        """SPEC-002 §12.3: a rollback a scheduled run found, shown for warn_after."""
        found = self._state.get("rollback")
        if not isinstance(found, dict) or not isinstance(found.get("at"), int | float):
            return None
        if time.time() - found["at"] > self.settings.warn_after:
            return None
        return {"warning": str(found.get("warning")), "at": _iso_epoch(found["at"])}

    def _warning(self) -> str | None:
        """SPEC-002 §7.4: no verified backup, or the newest one is older than warn_after;
        §12.3: a scheduled run found the target rolled back."""
        rollback = self._rollback()
        if rollback:
            return f"{rollback['warning']} (found by the scheduled backup of {rollback['at']})"
        last = self._state.get("last_verified")
        if not last:
            return "no verified backup exists (maia backup create, then maia backup verify)"
        try:
            age = time.time() - parse_iso(last).timestamp()
        except ValueError:
            return "the time of the last verified backup is unreadable"
        if age < -MAX_AHEAD_SECONDS:  # recorded before that was refused: not to be trusted
            return (f"the last verified backup is recorded at {last}, in the future; verify "
                    "one again (maia backup verify)")
        if age > self.settings.warn_after:
            return f"the newest verified backup is {_human(age)} old"
        return None

    def record_verified(self, manifest_id: str, verified_at: str) -> dict[str, Any]:
        """A verification done outside the schedule (``maia backup verify``), told over the API."""
        assert self.node is not None
        fields = newer_verification(self._state, manifest_id, verified_at)
        if fields:
            self._state = update_status(self.node.store, **fields)
        return self.status()

    # -- the schedule ------------------------------------------------------------------------------
    async def _schedule(self) -> None:
        delay = await asyncio.to_thread(self._first_delay)
        while True:
            self.next_run = time.time() + delay
            await asyncio.sleep(delay)
            ok = await self._run_once()
            delay = self.settings.interval if ok else self.settings.retry_after

    def _first_delay(self) -> float:
        """Due when the last run is an interval ago; a run that is due because the node was
        down starts after the start delay (SPEC-002 §10.1). Without a recorded last run, the
        newest manifest in the repository tells when it was (§10.2)."""
        last = self._state.get("last_run_at")
        if not isinstance(last, int | float):
            last = self._newest_manifest_time()
        if last is None:
            return self.settings.start_delay
        due = last + self.settings.interval
        return max(due - time.time(), self.settings.start_delay)

    def _newest_manifest_time(self) -> float | None:
        assert self.settings.target is not None
        try:
            names = os.listdir(self.settings.target / "manifests")
        except OSError:
            return None
        # Names are not authenticated: a time in the future is ignored, so a renamed manifest
        # can never postpone the schedule (SPEC-002 §10.2).
        now = time.time()
        times = [t for t in (p[0].timestamp() for p in map(parse_manifest_filename, names) if p)
                 if t <= now]
        return max(times) if times else None

    async def _run_once(self) -> bool:
        assert self.node is not None
        started = time.time()
        self.running = True
        try:
            code, result, err = await self._spawn_worker()
        finally:
            self.running = False
        if code == 0 and result.get("ok"):
            fields = {"last_run_at": started, "last_manifest": result.get("id"),
                      "last_error": None, "runs": int(self._state.get("runs", 0)) + 1}
            fields |= newer_verification(self._state, result.get("id", ""),
                                         result.get("verified_at", ""))
            found = result.get("rollback")
            if isinstance(found, dict) and found.get("detected"):
                fields["rollback"] = {"warning": found.get("warning"), "at": started}
                log.warning("scheduled backup: %s", found.get("warning"))
            self._state = update_status(self.node.store, **fields)
            log.info("scheduled backup %s taken, verified and pruned (%s new bytes)",
                     str(result.get("id", ""))[:12], result.get("new_bytes"))
            return True
        error = result.get("error") or err or f"the backup process exited with {code}"
        self._state = update_status(self.node.store, last_error=error, last_error_at=started)
        log.error("scheduled backup failed: %s; retrying in %s", error,
                  _human(self.settings.retry_after))
        return False

    async def _spawn_worker(self) -> tuple[int | None, dict[str, Any], str]:
        assert self.node is not None
        cmd = [sys.executable, "-m", "node.cli", "--data-dir", str(self.node.paths.root),
               "backup", "scheduled-run", "--json"]
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            out, err = await self._proc.communicate()
            code = self._proc.returncode
        except asyncio.CancelledError:
            await self._stop_worker()  # the node is stopping: so does the run, cleanly
            raise
        finally:
            self._proc = None
        result: dict[str, Any] = {}
        for line in reversed(out.decode(errors="replace").splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    result = json.loads(line)
                break
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        return code, result, (lines[-1].removeprefix("maia: ") if lines else "")

    async def _stop_worker(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()  # the worker removes its temporary files and lock, then exits
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def feature() -> BackupFeature:
    """Factory named in node.features.FEATURES."""
    return BackupFeature()


def _iso_epoch(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
