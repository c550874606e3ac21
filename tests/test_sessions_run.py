"""SPEC-004 §8.8, §12.4: `maia run -- aider ...` around a stand-in `aider` executable (Aider
itself is not installed here; the stand-in behaves like it on the wire: it takes --read, edits a
file in the worktree, and exits with its own code)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodes import NodeProc, cli, make_mesh, wait_for
from tests.sessions_helpers import api, edit, git, hook_call, make_repo, register

FAKE_AIDER = textwrap.dedent("""\
    #!{python}
    import json, os, pathlib, signal, sys, time
    out = pathlib.Path(os.environ["FAKE_AIDER_OUT"])
    args = sys.argv[1:]
    record = {{"args": args}}
    if "--read" in args:
        record["context"] = pathlib.Path(args[args.index("--read") + 1]).read_text()
    out.write_text(json.dumps(record))
    def term(sig, frame):
        out.write_text(json.dumps({{**record, "signal": sig}}))
        sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    if os.environ.get("FAKE_AIDER_WAIT"):
        time.sleep(60)
    time.sleep(0.3)
    pathlib.Path("src/core.py").write_text("rewritten by aider\\n")
    time.sleep(float(os.environ.get("FAKE_AIDER_LINGER", "2.5")))
    sys.exit(3)
""")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    root = tmp_path_factory.mktemp("run")
    (n,) = make_mesh(root, ["desk"])
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def aider_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "aider"
    script.write_text(FAKE_AIDER.format(python=sys.executable))
    script.chmod(0o755)
    return bin_dir


def _maia_run(data_dir: Path, cwd: Path, bin_dir: Path, out: Path, *args: str,
              **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), "run", "--", "aider",
         *args],
        cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
             "FAKE_AIDER_OUT": str(out), "MAIA_TASK": "port the core to rust", **env},
    )


def test_run_registers_feeds_context_reports_edits_and_warns(node, tmp_path, aider_bin) -> None:
    """SPEC-004 §12.4, §8.8: the wrapper registers an aider session, gives aider the journal
    and overlaps through --read, reports the file it changes as modified (a conflict for the
    session that modified it too), warns on stderr that the file is under another session's
    exclusive lease (it cannot block Aider), ends the session and exits with aider's code."""
    repo = make_repo(tmp_path / "r", "git@github.com:acme/runner.git")
    (repo / "src" / "core.py").write_text("original\n")
    git("-C", str(repo), "add", ".")
    git("-C", str(repo), "commit", "-q", "-m", "init")
    assert cli(node.data_dir, "journal", "add", "decision", "Keep the C ABI stable",
               "--project", "github.com/acme/runner") == 0
    holder = register(node, repo, agent="claude", task="tune the core")
    hook_call(node, holder, edit(repo, repo / "src/core.py"))
    status, _, _ = api(node, "POST", "/v1/leases", {"pattern": "src/core.py"},
                           token=holder["token"])
    assert status == 201
    out = tmp_path / "aider.json"
    proc = _maia_run(node.data_dir, repo, aider_bin, out, "--yes-always", "--message", "go")
    _, stderr = proc.communicate(timeout=60)
    stderr = stderr.decode()
    assert proc.returncode == 3, stderr
    record = json.loads(out.read_text())
    assert record["args"][0] == "--read" and record["args"][2:] == ["--yes-always", "--message",
                                                                  "go"]
    assert "Keep the C ABI stable" in record["context"]
    assert "claude on desk" in record["context"]  # the overlap with the holder's session
    assert not Path(record["args"][1]).exists()  # the context file is removed at the end
    assert "warning: aider modified a file another session holds" in stderr
    assert "tune the core" in stderr and node.device_id() in stderr
    assert "CONFLICT: you (aider on desk) and claude on desk" in stderr
    events = node.request("GET", "/v1/events?limit=500")["events"]
    started = [e for e in events if e["kind"] == "session_started"  # this test's repository:
               and e["data"]["agent"] == "aider"  # the node is shared with the module's tests
               and e["data"]["repository"] == "github.com/acme/runner"]
    assert len(started) == 1, started
    sid = started[0]["session"]
    mine = [(e["kind"], e["data"]) for e in events if e["session"] == sid]
    assert ("file_modified", {"files": ["file:github.com/acme/runner:src/core.py"]}) in mine
    assert mine[-1][0] == "session_ended"
    assert api(node, "GET", f"/v1/sessions/{sid}")[0] == 404
    api(node, "DELETE", f"/v1/sessions/{holder['session_id']}")


def test_run_forwards_sigterm_and_runs_alone_without_a_node(node, tmp_path, aider_bin) -> None:
    """SPEC-004 §12.4, §11.5: SIGTERM to `maia run` reaches aider, whose exit code is passed
    on and whose session ends; with no node running the command simply runs."""
    repo = make_repo(tmp_path / "r", "git@github.com:acme/runner2.git")
    out = tmp_path / "aider.json"
    proc = _maia_run(node.data_dir, repo, aider_bin, out, FAKE_AIDER_WAIT="1")
    wait_for(lambda: out.exists(), what="aider started")
    sessions = [s for s in node.request("GET", "/v1/sessions")["sessions"]
                if s["agent"] == "aider" and s["cwd"] == str(repo)]
    assert len(sessions) == 1 and sessions[0]["task"] == "port the core to rust"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert json.loads(out.read_text())["signal"] == signal.SIGTERM
    assert api(node, "GET", f"/v1/sessions/{sessions[0]['id']}")[0] == 404
    out.unlink()
    lonely = _maia_run(tmp_path / "no-node", repo, aider_bin, out, FAKE_AIDER_LINGER="0")
    _, stderr = lonely.communicate(timeout=30)
    assert lonely.returncode == 3
    assert "running the command alone" in stderr.decode()
    assert json.loads(out.read_text())["args"] == []  # no --read without a node


def test_the_watcher_runs_no_command_the_worktree_s_git_config_names(node, tmp_path,
                                                                     aider_bin) -> None:
    """SPEC-004 §12.4: the worktree is untrusted; its .git/config's core.fsmonitor, a clean
    filter its .gitattributes selects, and its post-index-change hook never run when `maia run`
    looks at it with git."""
    repo = make_repo(tmp_path / "r", "git@github.com:acme/runner3.git")
    markers = {name: tmp_path / f"{name}.ran" for name in ("fsmonitor", "filter", "hook")}
    for name, marker in markers.items():
        script = tmp_path / f"{name}.sh"
        script.write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
        script.chmod(0o755)
    (repo / "src" / "core.py").write_text("original\n")
    (repo / "src" / "util.py").write_text("util\n")
    git("-C", str(repo), "add", ".")
    git("-C", str(repo), "commit", "-q", "-m", "init")
    (repo / ".gitattributes").write_text("*.py filter=evil\n")
    hooks = repo / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "post-index-change").write_text(f"#!/bin/sh\ntouch {markers['hook']}\n")
    (hooks / "post-index-change").chmod(0o755)
    git("-C", str(repo), "config", "core.fsmonitor", str(tmp_path / "fsmonitor.sh"))
    git("-C", str(repo), "config", "filter.evil.clean", str(tmp_path / "filter.sh"))
    (repo / "src" / "util.py").touch()  # stat changed: status compares content (the filter)
    out = tmp_path / "aider.json"
    proc = _maia_run(node.data_dir, repo, aider_bin, out)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert [n for n, m in markers.items() if m.exists()] == []
