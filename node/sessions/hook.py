"""``maia-hook <cli> <event>``: the command every agent CLI runs on its hook events (SPEC-004 §11).

It reads the CLI's hook JSON from stdin, normalises it (``node/sessions/adapters``), makes one
HTTP call to the local node, and prints the CLI's documented answer. It runs on every tool call
of every agent, so it imports only the standard library: no aiohttp, msgpack, LMDB, automerge or
litellm (SPEC-004 §11.4; ``tests/test_sessions_hooks.py`` checks with ``python -X importtime``).

It degrades gracefully (SPEC-004 §11.5): without a node, or on any error of its own, it prints
only the CLI's "no opinion" answer and exits 0 within its timeouts. It never blocks an agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from node.sessions import localhttp
from node.sessions.adapters import adapter

from ..files import write_atomic

# typing costs ~2.5 ms to import and annotations are never evaluated here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_STDIN = 1024 * 1024
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "fish", "ksh", "mksh", "tcsh", "csh"})
USAGE = "usage: maia-hook [--data-dir DIR] claude|codex|gemini EVENT"


class _Debug:
    def __init__(self) -> None:
        self.on = os.environ.get("MAIA_HOOK_DEBUG") == "1"
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.on:
            ms = (time.perf_counter() - self.t0) * 1000
            sys.stderr.write(f"maia-hook [{ms:6.1f} ms] {message}\n")


def parse_args(argv: list[str]) -> tuple[Path, str, str]:
    data_dir: Path | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--data-dir" and i + 1 < len(argv):
            data_dir = Path(argv[i + 1]).expanduser()
            i += 2
            continue
        if argv[i].startswith("--data-dir="):
            data_dir = Path(argv[i].split("=", 1)[1]).expanduser()
        else:
            rest.append(argv[i])
        i += 1
    if len(rest) != 2:
        raise ValueError(USAGE)
    return data_dir or localhttp.default_data_dir(), rest[0], rest[1]


def main(argv: list[str] | None = None) -> int:
    debug = _Debug()
    out = ""
    try:
        data_dir, cli, cli_event = parse_args(sys.argv[1:] if argv is None else argv)
        mod = adapter(cli)
        out = mod.NO_OPINION
        raw = sys.stdin.buffer.read(MAX_STDIN + 1)
        if len(raw) > MAX_STDIN:
            raise ValueError("the hook input is larger than 1 MiB")
        payload = json.loads(raw.decode("utf-8") or "{}")
        if not isinstance(payload, dict):
            raise ValueError("the hook input is not a JSON object")
        ev = mod.normalise(cli_event, payload)
        if ev is None:
            debug(f"event {cli_event!r} is not one maia-node handles")
        else:
            answer = exchange(data_dir, cli, ev, debug)
            out = mod.render(ev, answer, cli_event)
    except localhttp.NodeUnavailable as exc:
        debug(f"no opinion: {exc}")
    except Exception as exc:  # never let our own failure reach the agent (SPEC-004 §11.5)
        debug(f"no opinion after an error: {type(exc).__name__}: {exc}")
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    debug("done")
    return 0


# -- the one exchange with the node -------------------------------------------------------------
def _sha256(data: bytes):
    """SHA-256 without ``hashlib``, whose OpenSSL binding costs ~6 ms to load per hook call."""
    try:
        # the hook starts per tool call: the built-in module is cheaper than hashlib's OpenSSL
        from _sha256 import sha256  # CPython 3.11 built-in
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            from hashlib import sha256  # the fallback when neither built-in exists
    return sha256(data)


def cache_path(data_dir: Path, cli: str, cli_session_id: str) -> Path:
    """``<data>/runtime/hooks/<cli>-<first 32 hex of sha256(cli_session_id)>.json`` (§11.3)."""
    digest = _sha256(cli_session_id.encode("utf-8", "replace")).hexdigest()[:32]
    return data_dir / "runtime" / "hooks" / f"{cli}-{digest}.json"


def read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("session_id"), str) and isinstance(
        data.get("token"), str
    ):
        return data
    return None


def write_cache(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data), durable=False)  # a cache: no fsync under the flock


def remove_cache(path: Path, session_id: str) -> None:
    """Remove the cache file, unless another hook already replaced it with a newer session."""
    current = read_cache(path)
    if current is not None and current.get("session_id") == session_id:
        with contextlib.suppress(OSError):
            path.unlink()


def exchange(data_dir: Path, cli: str, ev: dict[str, Any], debug: _Debug) -> dict[str, Any] | None:
    address = localhttp.node_address(data_dir)
    agent_pid = agent_process()
    key = ev["cli_session_id"] or f"pid-{agent_pid}"
    cache = cache_path(data_dir, cli, key)
    cached = read_cache(cache)
    if cached is not None:
        sid = cached["session_id"]
        status, body = localhttp.request(
            address, "POST", f"/v1/sessions/{sid}/hook", cached["token"], ev
        )
        debug(f"hook call for session {sid}: {status}")
        if status == 200 and isinstance(body, dict):
            if ev["event"] == "session_end":
                remove_cache(cache, sid)
            return body
        if status not in (401, 404):
            return None
        remove_cache(cache, sid)  # ended or expired: register again (SPEC-004 §2.6)
    if ev["event"] == "session_end":
        return None
    return register(address, data_dir, cli, ev, cache, agent_pid, debug)


def register(
    address: tuple[str, int],
    data_dir: Path,
    cli: str,
    ev: dict[str, Any],
    cache: Path,
    agent_pid: int,
    debug: _Debug,
) -> dict[str, Any] | None:
    # only the first call of a session takes this lock: its cost stays off the common path
    import fcntl

    cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = os.open(str(cache) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Codex starts matching hooks concurrently: one registers, the others wait for it.
        deadline = time.monotonic() + 0.5
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.01)
        cached = read_cache(cache)
        if cached is not None:  # registered by a concurrent hook meanwhile
            status, body = localhttp.request(
                address, "POST", f"/v1/sessions/{cached['session_id']}/hook", cached["token"], ev
            )
            return body if status == 200 and isinstance(body, dict) else None
        body: dict[str, Any] = {"agent": cli, "pid": agent_pid, "cwd": ev["cwd"], "event": ev}
        if ev["cli_session_id"]:
            body["cli_session_id"] = ev["cli_session_id"]
        task = os.environ.get("MAIA_TASK", "").strip()
        if task:
            body["task"] = task[:200]
        status, answer = localhttp.request(
            address, "POST", "/v1/sessions", localhttp.local_token(data_dir), body
        )
        debug(f"registered: {status}")
        if status != 201 or not isinstance(answer, dict) or "token" not in answer:
            return None
        write_cache(cache, {
            "session_id": answer["session_id"], "token": answer["token"],
            "agent_pid": agent_pid, "heartbeat_s": answer.get("heartbeat_s", 10),
        })
        if os.environ.get("MAIA_HOOK_HEARTBEAT", "1") != "0":
            start_heartbeat(data_dir, cache, agent_pid)
        result = answer.get("answer")
        return result if isinstance(result, dict) else None
    finally:
        os.close(lock_fd)


def start_heartbeat(data_dir: Path, cache: Path, agent_pid: int) -> None:
    """Detach ``python -m node.sessions.heartbeat`` (SPEC-004 §2.5); it outlives this hook."""
    # subprocess costs a few ms to import; most hook calls start no heartbeat
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "node.sessions.heartbeat", str(data_dir), str(cache),
         str(agent_pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(command name, parent pid) from /proc (Linux); None elsewhere or when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    head, _, tail = raw.rpartition(")")
    name = head.partition("(")[2]
    fields = tail.split()
    return (name, int(fields[1])) if len(fields) > 1 and fields[1].isdigit() else None


def agent_process() -> int:
    """The nearest ancestor of this hook that is not a shell: the agent CLI (SPEC-004 §2.5)."""
    pid = os.getppid()
    for _ in range(16):
        stat = _proc_stat(pid)
        if stat is None:
            return pid
        name, parent = stat
        if name not in SHELLS or parent <= 1:
            return pid
        pid = parent
    return pid


if __name__ == "__main__":
    sys.exit(main())
