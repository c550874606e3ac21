"""Scheduled backups while ``maia up`` runs (SPEC-002 §10): taken, verified and pruned on an
interval from config.toml, failures shown and retried, the schedule recovered from the
repository when Runtime forgot it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from node.backup.format import parse_iso
from node.backup.repository import Repository
from tests.backup_util import PASSPHRASE, backup, make_device, set_backup_config
from tests.nodes import NodeProc, cli_out, wait_for

FAST = {"MAIA_BACKUP_MIN_INTERVAL": "1"}  # SPEC-002 §10.4: short intervals for tests


def _scheduled_device(tmp_path: Path, interval: str) -> tuple[Path, Path]:
    """A data dir with a repository, a cached key (no passphrase anywhere in the node's
    environment) and the given interval."""
    data = make_device(tmp_path, "a", entries=20)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    repo = tmp_path / "repo"
    assert backup(data, "init", "--to", str(repo), "--kdf", "interactive",
                  "--passphrase-file", str(secret), "--remember-key") == 0
    set_backup_config(data, interval=interval, keep_daily=1, keep_weekly=0, keep_monthly=0)
    return data, repo


def _state(node: NodeProc) -> dict:
    return node.request("GET", "/v1/backup")


def test_node_takes_verifies_and_prunes_backups_on_its_interval(tmp_path):
    """SPEC-002 §10.1, §4.2, §6.2: while the node runs and writes, a backup is taken every
    interval, verified by restore (a record in the repository) and pruned by the rule."""
    data, repo_dir = _scheduled_device(tmp_path, "2s")
    node = NodeProc(data, "a", env=FAST).start()
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            written.append(node.add_memory(f"written during backups {len(written)}")["id"])
            time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    try:
        state = wait_for(lambda: (s := _state(node))["runs"] >= 3 and s, timeout=60,
                         what="three scheduled runs")
    finally:
        stop.set()
        t.join()
    try:
        assert state["scheduled"] and state["last_error"] is None and state["warning"] is None
        assert state["interval_seconds"] == 2.0
        repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
        verified = repo.verified_ids()
        assert state["last_manifest"] in verified
        assert verified[state["last_manifest"]] == state["last_verified"]
        assert len(repo.manifests()) <= 2  # keep_daily = 1: the newest (and newest verified)
        newest = repo.load_manifest(repo.latest())
        assert newest.device_key is None
        assert len(written) > 10  # the node kept taking writes while backups ran
        assert "last verified backup" in cli_out(data, "status")
    finally:
        node.stop()


def test_a_failed_run_is_shown_and_retried(tmp_path):
    """SPEC-002 §10.3, §11.4: when the target disappears the run fails, the error shows in
    the status, and the next try (after min(interval, 1 h)) succeeds once it is back."""
    data, repo_dir = _scheduled_device(tmp_path, "2s")
    node = NodeProc(data, "a", env=FAST).start()
    try:
        first = wait_for(lambda: (s := _state(node))["runs"] >= 1 and s, timeout=30,
                         what="a first run")
        away = repo_dir.with_name("unplugged")
        repo_dir.rename(away)
        failed = wait_for(lambda: (s := _state(node))["last_error"] and s, timeout=30,
                          what="a failed run")
        assert f"backup repository {repo_dir} does not exist" in failed["last_error"]
        assert not repo_dir.exists()  # never created behind the owner's back
        assert "last run failed: " in cli_out(data, "status")
        away.rename(repo_dir)
        again = wait_for(lambda: (s := _state(node))["runs"] > first["runs"]
                         and s["last_error"] is None and s, timeout=30, what="a retried run")
        assert again["last_verified"] > first["last_verified"]
    finally:
        node.stop()
    assert "scheduled backup failed" in node.log()


def test_schedule_resumes_from_the_newest_manifest_when_runtime_forgot(tmp_path):
    """SPEC-002 §10.2, §10.1: with no run recorded in Runtime, the next run is due one interval
    after the newest manifest, not at start."""
    data, repo_dir = _scheduled_device(tmp_path, "1h")
    secret = tmp_path / "passphrase"
    assert backup(data, "create", "--passphrase-file", str(secret)) == 0
    repo = Repository.open(repo_dir, passphrase=PASSPHRASE.encode())
    taken = repo.load_manifest(repo.latest()).created.timestamp()
    node = NodeProc(data, "a", env=FAST).start()
    try:
        state = wait_for(lambda: (s := _state(node))["next_run"] and s, what="a schedule")
        assert abs(parse_iso(state["next_run"]).timestamp() - (taken + 3600)) < 5
        time.sleep(3)
        assert _state(node)["runs"] == 0 and len(repo.manifests()) == 1
    finally:
        node.stop()
