"""Helpers for the SPEC-004 tests: hook payloads exactly as each CLI documents them, the real
``maia-hook`` process, git worktrees, and nodes with a ``[sessions]`` config.

Payload field names follow the CLIs' documentation (Claude Code hooks reference; Codex
``codex-rs/hooks/schema/generated/*.input.schema.json``; Gemini CLI ``docs/hooks/reference.md``),
including the fields maia-node ignores, so a test fails if an adapter trips over them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import NodeConfig
from tests.nodes import NodeProc

HOOK = str(Path(sys.executable).parent / "maia-hook")


# -- payloads ------------------------------------------------------------------------------------
def claude(event: str, session_id: str, cwd: str, **fields: Any) -> dict[str, Any]:
    """Claude Code: session_id, transcript_path, cwd, hook_event_name (+ per event)."""
    base = {
        "session_id": session_id,
        "transcript_path": f"/home/dev/.claude/projects/p/{session_id}.jsonl",
        "cwd": cwd,
        "hook_event_name": event,
    }
    extra: dict[str, Any] = {
        "SessionStart": {"source": "startup"},
        "UserPromptSubmit": {"prompt": fields.pop("prompt", "do the thing")},
        "Stop": {"stop_hook_active": False},
        "SessionEnd": {"reason": "exit"},
    }.get(event, {})
    if event in ("PreToolUse", "PostToolUse"):
        extra = {"permission_mode": "default", "tool_use_id": "toolu_01"}
        if event == "PostToolUse":
            extra["tool_response"] = {"success": True}
    return {**base, **extra, **fields}


def claude_tool(event: str, session_id: str, cwd: str, tool: str, **tool_input: Any) -> dict:
    return claude(event, session_id, cwd, tool_name=tool, tool_input=tool_input)


def codex(event: str, session_id: str, cwd: str, **fields: Any) -> dict[str, Any]:
    """Codex CLI: session_id, transcript_path, cwd, hook_event_name, model, permission_mode."""
    base = {
        "session_id": session_id,
        "transcript_path": None,
        "cwd": cwd,
        "hook_event_name": event,
        "model": "gpt-5-codex",
        "permission_mode": "default",
    }
    extra: dict[str, Any] = {
        "SessionStart": {"source": "startup"},
        "UserPromptSubmit": {"turn_id": "turn-1", "prompt": fields.pop("prompt", "fix it")},
        "Stop": {"turn_id": "turn-1", "stop_hook_active": False,
                 "last_assistant_message": fields.pop("last_assistant_message", "Done.")},
        "PreToolUse": {"tool_use_id": "call_1", "turn_id": "turn-1"},
        "PostToolUse": {"tool_use_id": "call_1", "turn_id": "turn-1", "tool_response": "ok"},
    }.get(event, {})
    return {**base, **extra, **fields}


def codex_patch(*lines: str) -> str:
    return "*** Begin Patch\n" + "\n".join(lines) + "\n*** End Patch\n"


def gemini(event: str, session_id: str, cwd: str, **fields: Any) -> dict[str, Any]:
    """Gemini CLI: session_id, transcript_path, cwd, hook_event_name, timestamp (+ per event)."""
    base = {
        "session_id": session_id,
        "transcript_path": f"/home/dev/.gemini/tmp/{session_id}.json",
        "cwd": cwd,
        "hook_event_name": event,
        "timestamp": "2026-11-25T10:00:00.000Z",
    }
    extra: dict[str, Any] = {
        "SessionStart": {"source": "startup"},
        "SessionEnd": {"reason": "exit"},
        "BeforeAgent": {"prompt": fields.pop("prompt", "refactor")},
    }.get(event, {})
    if event == "AfterTool":
        extra = {"tool_response": {"llmContent": "ok", "returnDisplay": "ok"}}
    return {**base, **extra, **fields}


# -- the hook process ----------------------------------------------------------------------------
@dataclass
class HookResult:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout) if self.stdout.strip() else {}

    @property
    def context(self) -> str:
        return self.json.get("hookSpecificOutput", {}).get("additionalContext", "")


def run_hook(
    data_dir: Path, cli: str, event: str, payload: Any, *, heartbeat: bool = False,
    env: dict[str, str] | None = None, timeout: float = 20.0,
) -> HookResult:
    """Feed ``payload`` to the real ``maia-hook`` process, as the CLI would."""
    full_env = {
        **os.environ, "MAIA_DATA_DIR": str(data_dir),
        "MAIA_HOOK_HEARTBEAT": "1" if heartbeat else "0", **(env or {}),
    }
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    t0 = time.perf_counter()
    done = subprocess.run([HOOK, cli, event], input=data, capture_output=True, env=full_env,
                          timeout=timeout)
    return HookResult(done.returncode, done.stdout.decode(), done.stderr.decode(),
                      time.perf_counter() - t0)


def cached_session(data_dir: Path, cli: str, cli_session_id: str) -> dict[str, Any]:
    from node.sessions.hook import cache_path

    return json.loads(cache_path(data_dir, cli, cli_session_id).read_text())


# -- git worktrees -------------------------------------------------------------------------------
def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})
    return done.stdout


def make_repo(path: Path, origin: str | None, branch: str = "main") -> Path:
    """A worktree with ``origin`` as its remote (the repository id comes from it)."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", branch, str(path))
    if origin:
        git("-C", str(path), "remote", "add", "origin", origin)
    (path / "src").mkdir(exist_ok=True)
    return path


# -- nodes -----------------------------------------------------------------------------------------
def configure(node: NodeProc, api: dict[str, Any] | None = None, **sessions: Any) -> None:
    """Write ``[sessions]`` (and ``[api]``) tables into the node's config.toml before it starts."""
    path = node.data_dir / "config.toml"
    cfg = NodeConfig.load(path)
    cfg.extra["sessions"] = sessions
    if api:
        cfg.extra["api"] = api
    cfg.save(path)


def api(node: NodeProc, method: str, path: str, body: Any = None, *, token: str | None = None,
        ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) of a request with any bearer token; never raises on 4xx."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or node.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, (json.loads(raw) if raw else {}), dict(exc.headers)


def register(node: NodeProc, cwd: Path, agent: str = "claude", **fields: Any) -> dict[str, Any]:
    body = {"agent": agent, "pid": os.getpid(), "cwd": str(cwd), **fields}
    status, body, _ = api(node, "POST", "/v1/sessions", body)
    assert status == 201, body
    return body


def hook_call(node: NodeProc, session: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    status, body, _ = api(node, "POST", f"/v1/sessions/{session['session_id']}/hook", event,
                          token=session["token"])
    assert status == 200, body
    return body


def edit(cwd: Path, *paths: Path, event: str = "post_tool") -> dict[str, Any]:
    return {"event": event, "action": "edit", "tool": "Edit", "cwd": str(cwd),
            "paths": [str(p) for p in paths]}
