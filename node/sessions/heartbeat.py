"""The heartbeat process a hook starts for its session (SPEC-004 §2.5).

``python -m node.sessions.heartbeat DATA_DIR CACHE_FILE AGENT_PID``, detached from the hook.
Every ``heartbeat_s`` it tells the node the session is alive, and it watches the agent process:
when the agent exits, it ends the session (so Codex, which has no SessionEnd event, and a killed
CLI do not leave sessions behind) and exits. It also exits when its session is gone (ended,
expired, or replaced in the cache file) or when the node stays unreachable longer than the
expiry, since a restarted node starts with no sessions. Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from . import localhttp

UNREACHABLE_EXIT_S = 30.0


def _cache(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_if_mine(path: Path, session_id: str) -> None:
    data = _cache(path)
    if data is not None and data.get("session_id") == session_id:
        with contextlib.suppress(OSError):
            path.unlink()


def run(data_dir: Path, cache: Path, agent_pid: int, *, poll: float = 0.5) -> int:
    first = _cache(cache)
    if first is None:
        return 0
    session_id, token = first["session_id"], first["token"]
    interval = float(first.get("heartbeat_s") or 10)
    unreachable_since: float | None = None
    next_beat = time.monotonic() + interval
    while True:
        time.sleep(poll)
        current = _cache(cache)
        if current is None or current.get("session_id") != session_id:
            return 0  # ended by SessionEnd, or replaced by a new registration
        try:
            address = localhttp.node_address(data_dir)
            if not localhttp.pid_alive(agent_pid):
                localhttp.request(address, "DELETE", f"/v1/sessions/{session_id}", token)
                _remove_if_mine(cache, session_id)
                return 0
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + interval
            status, _ = localhttp.request(
                address, "POST", f"/v1/sessions/{session_id}/heartbeat", token
            )
            unreachable_since = None
            if status in (401, 403, 404):
                _remove_if_mine(cache, session_id)
                return 0
        except localhttp.NodeUnavailable:
            if not localhttp.pid_alive(agent_pid):
                _remove_if_mine(cache, session_id)
                return 0
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > UNREACHABLE_EXIT_S:
                return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[2].isdigit():
        sys.stderr.write("usage: python -m node.sessions.heartbeat DATA_DIR CACHE_FILE AGENT_PID\n")
        return 2
    return run(Path(args[0]), Path(args[1]), int(args[2]))


if __name__ == "__main__":
    sys.exit(main())
