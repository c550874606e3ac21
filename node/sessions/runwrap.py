"""``maia run -- aider [args…]``: a session for a CLI without hooks (SPEC-004 §12.4).

The wrapper registers a session, writes the journal digest and current overlaps to a context
file that Aider reads (``--read <file>``), heartbeats, and every 2 s looks at the worktree for
files that changed (``git status`` plus new commits, since Aider commits its edits): each one is
reported as modified, conflict alerts are printed to stderr, and so is a warning when a changed
file lies under another session's exclusive lease (Aider's edits cannot be blocked, §8.8). It
forwards SIGTERM and SIGHUP to the child, ends the session when the child exits, and exits with
the child's code. Without a node it just runs the command. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import localhttp

SCAN_INTERVAL = 2.0
MAX_WALK_FILES = 20_000
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", ".tox"}


# Config that makes ``git status``/``diff`` run a command of the repository's choosing, switched
# off (SPEC-004 §12.4). Why: the worktree is untrusted (an archive may bring its own .git/config
# or .git/hooks), and the watcher runs git in it every 2 s.
_SAFE_CONFIG = {"core.fsmonitor": "false", "core.hooksPath": "/dev/null",
                "diff.external": "", "core.untrackedCache": "false"}
_COMMAND_KEYS = (".clean", ".smudge", ".process", ".command", ".textconv", ".required")


def _git_env(cwd: str) -> dict[str, str]:
    """The environment for git in ``cwd``: :data:`_SAFE_CONFIG` plus every filter and diff
    driver the repository's config names, emptied (a ``filter=x`` in .gitattributes runs
    ``filter.x.clean`` on status). Passed as GIT_CONFIG_COUNT pairs: a key is never parsed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    pairs = dict(_SAFE_CONFIG)
    try:
        names = subprocess.run(["git", "config", "--null", "--name-only", "--list"], cwd=cwd,
                               capture_output=True, timeout=10, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        names = b""
    for key in names.decode("utf-8", "replace").split("\0"):
        if key.startswith(("filter.", "diff.")) and key.endswith(_COMMAND_KEYS):
            pairs[key] = "false" if key.endswith(".required") else ""
    env["GIT_CONFIG_COUNT"] = str(len(pairs))
    for i, (key, value) in enumerate(pairs.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


def _git(cwd: str, *args: str) -> str | None:
    """``git --no-optional-locks <args>`` in ``cwd`` with no repository command enabled (a status
    that does not write the index runs no post-index-change hook either)."""
    try:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd,
                              capture_output=True, timeout=10, env=_git_env(cwd))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


class WorktreeWatcher:
    """Which files changed since the last look (mtime and size), in a worktree or a directory."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        top = _git(cwd, "rev-parse", "--show-toplevel")
        self.root = top.strip() if top else None
        self.head = self._head()
        self.seen: dict[str, tuple[int, int]] = self._snapshot()

    def _head(self) -> str | None:
        out = _git(self.root, "rev-parse", "HEAD") if self.root else None
        return out.strip() if out else None

    def _candidates(self) -> list[str]:
        if self.root is None:
            out: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.cwd):
                dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
                out.extend(os.path.join(dirpath, f) for f in filenames)
                if len(out) >= MAX_WALK_FILES:
                    break
            return out
        status = _git(self.root, "status", "--porcelain", "-z", "--untracked-files=all",
                      "--ignore-submodules=all") or ""
        paths = []
        items = iter(status.split("\0"))
        for item in items:
            if len(item) > 3:
                paths.append(os.path.join(self.root, item[3:]))
                if item[0] in "RC":
                    next(items, None)  # a rename's source path follows; it no longer exists
        return paths

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        out = {}
        for path in self._candidates():
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[path] = (st.st_mtime_ns, st.st_size)
        return out

    def changed(self) -> list[str]:
        now = self._snapshot()
        found = [p for p, sig in now.items() if self.seen.get(p) != sig]
        head = self._head()
        if self.root and head and head != self.head and self.head:
            diff = _git(self.root, "diff", "--no-ext-diff", "--no-textconv", "--name-only",
                        f"{self.head}..{head}") or ""
            found += [os.path.join(self.root, p) for p in diff.splitlines() if p]
        self.head = head
        self.seen.update(now)
        return sorted(set(found))


class Session:
    """The wrapper's session on the local node (best effort: errors never stop the child)."""

    def __init__(self, data_dir: Path, agent: str, cwd: str) -> None:
        self.data_dir = data_dir
        self.address = localhttp.node_address(data_dir)
        body: dict[str, Any] = {
            "agent": agent, "pid": os.getpid(), "cwd": cwd,
            "cli_session_id": f"run-{os.getpid()}",
            "event": {"event": "session_start", "cwd": cwd, "cli_session_id": f"run-{os.getpid()}"},
        }
        task = os.environ.get("MAIA_TASK", "").strip()
        if task:
            body["task"] = task[:200]
        status, answer = localhttp.request(
            self.address, "POST", "/v1/sessions", localhttp.local_token(data_dir), body,
            total_timeout=5.0,
        )
        if status != 201 or not isinstance(answer, dict):
            raise localhttp.NodeUnavailable(f"registration failed ({status})")
        self.id: str = answer["session_id"]
        self.token: str = answer["token"]
        self.heartbeat_s = float(answer.get("heartbeat_s", 10))
        self.context: str = (answer.get("answer") or {}).get("context", "")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return localhttp.request(self.address, method, path, self.token, body,
                                     total_timeout=5.0)
        except localhttp.NodeUnavailable:
            return 0, None

    def report(self, paths: list[str], cwd: str) -> list[str]:
        """Report modified files; returns the lines to print (lease warnings, alerts)."""
        lines = []
        ev = {"event": "pre_tool", "action": "edit", "tool": "aider", "paths": paths, "cwd": cwd}
        status, answer = self.call("POST", f"/v1/sessions/{self.id}/hook", ev)
        if status == 200 and isinstance(answer, dict) and answer.get("decision") == "deny":
            lines.append("maia: warning: aider modified a file another session holds: "
                         + str(answer.get("reason", "")))
        status, answer = self.call("POST", f"/v1/sessions/{self.id}/hook",
                                   {**ev, "event": "post_tool"})
        if status == 200 and isinstance(answer, dict) and answer.get("context"):
            lines.append(str(answer["context"]))
        return lines

    def end(self) -> None:
        self.call("DELETE", f"/v1/sessions/{self.id}")


def run(data_dir: Path, argv: list[str], *, err=sys.stderr) -> int:
    """Run ``argv`` as a coordinated session; returns the child's exit code."""
    cwd = os.getcwd()
    agent = "aider" if Path(argv[0]).name.startswith("aider") else "other"
    try:
        session: Session | None = Session(data_dir, agent, cwd)
    except localhttp.NodeUnavailable as exc:
        err.write(f"maia: no coordination for this run ({exc}); running the command alone\n")
        session = None
    args = list(argv)
    context_file: Path | None = None
    if session is not None and session.context and agent == "aider":
        context_file = data_dir / "runtime" / f"run-{session.id}.md"
        context_file.write_text(session.context + "\n")
        args = [argv[0], "--read", str(context_file), *argv[1:]]
    try:
        child = subprocess.Popen(args)
    except OSError as exc:
        if session is not None:
            session.end()
        err.write(f"maia: cannot run {argv[0]}: {exc.strerror}\n")
        return 127
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda s, _f: child.send_signal(s)) for sig in forwarded}
    # Ctrl-C reaches the child from the terminal (same process group); the wrapper keeps going
    # so it can end the session after the child exits.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watcher = WorktreeWatcher(cwd) if session is not None else None
        last_beat = time.monotonic()
        while True:
            try:
                code = child.wait(timeout=SCAN_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                pass
            if session is None or watcher is None:
                continue
            _scan(session, watcher, cwd, err)
            if time.monotonic() - last_beat >= session.heartbeat_s:
                last_beat = time.monotonic()
                session.call("POST", f"/v1/sessions/{session.id}/heartbeat")
        if session is not None and watcher is not None:
            _scan(session, watcher, cwd, err)  # what changed in the child's last moments
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if session is not None:
            session.end()
        if context_file is not None:
            context_file.unlink(missing_ok=True)
    return code


def _scan(session: Session, watcher: WorktreeWatcher, cwd: str, err: Any) -> None:
    changed = watcher.changed()
    if changed:
        for line in session.report(changed[:64], cwd):
            err.write(line + "\n")
        err.flush()
