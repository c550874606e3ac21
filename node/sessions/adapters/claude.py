"""Claude Code command hooks (settings.json ``hooks``), as documented at
https://code.claude.com/docs/en/hooks (checked 2026-11).

Input on stdin: ``session_id``, ``transcript_path``, ``cwd``, ``hook_event_name``; tool events add
``tool_name`` and ``tool_input``; SessionStart adds ``source``, SessionEnd ``reason``,
UserPromptSubmit ``prompt``. Answers: ``hookSpecificOutput`` with ``hookEventName`` and either
``permissionDecision: "deny"`` + ``permissionDecisionReason`` (PreToolUse) or
``additionalContext`` (SessionStart, UserPromptSubmit, PostToolUse, PreToolUse). Stop and
SessionEnd take no context. Exit code 0 always (exit 2 would block; we never block on our own
errors, SPEC-004 §11.5). Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

from . import base

# typing costs ~2.5 ms to import and annotations are never evaluated here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLI = "claude"
NO_OPINION = ""
EVENTS = {
    "SessionStart": "session_start",
    "UserPromptSubmit": "prompt",
    "PreToolUse": "pre_tool",
    "PostToolUse": "post_tool",
    "Stop": "stop",
    "SessionEnd": "session_end",
}
EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
# (event, matcher or None for "every tool / always") — SPEC-004 §12.1.
INSTALL = [
    ("SessionStart", None),
    ("UserPromptSubmit", None),
    ("PreToolUse", "|".join(EDIT_TOOLS)),
    ("PostToolUse", None),
    ("Stop", None),
    ("SessionEnd", None),
]
TIMEOUT = 5  # seconds (Claude Code's unit)
CONTEXT_EVENTS = {"session_start", "prompt", "post_tool", "pre_tool"}


def settings_path(home: Path, project: Path | None) -> Path:
    return (project if project is not None else home) / ".claude" / "settings.json"


def tool_facts(tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    """What a Claude Code tool call touches: action, paths, command, url."""
    if tool in EDIT_TOOLS:
        path = tool_input.get("file_path") or tool_input.get("notebook_path")
        return {"action": "edit", "paths": [path]}
    if tool == "Read":
        return {"action": "read", "paths": [tool_input.get("file_path")]}
    if tool in ("Grep", "Glob", "LS"):
        return {"action": "search", "paths": [tool_input.get("path")]}
    if tool == "Bash":
        return {"action": "shell", "command": tool_input.get("command", "")}
    if tool == "WebFetch":
        return {"action": "fetch", "url": base.first_url(tool_input.get("url"))}
    return {"action": "other"}


def normalise(cli_event: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    return base.normalise_with(EVENTS, tool_facts, cli_event, payload)


def render(ev: dict[str, Any], answer: dict[str, Any] | None, cli_event: str) -> str:
    return base.render_hook_specific(EVENTS, CONTEXT_EVENTS, ev, answer) or NO_OPINION
