"""Codex CLI hooks (``hooks.json`` in ``~/.codex/`` or ``<repo>/.codex/``), as documented at
https://developers.openai.com/codex/hooks and pinned by the JSON schemas in openai/codex
``codex-rs/hooks/schema/generated/`` (checked 2026-11).

Input: ``session_id``, ``transcript_path``, ``cwd``, ``hook_event_name``, ``model``,
``permission_mode``; PreToolUse/PostToolUse add ``tool_name``, ``tool_input``, ``tool_use_id``
(PostToolUse also ``tool_response``, ``turn_id``); UserPromptSubmit adds ``prompt``; Stop adds
``last_assistant_message``. File edits arrive as ``tool_name: "apply_patch"`` with the raw patch
in ``tool_input.command``; shell commands as ``Bash`` with ``tool_input.command``. Answers use
the Claude Code shape: ``hookSpecificOutput.permissionDecision: "deny"`` with
``permissionDecisionReason``, or ``hookSpecificOutput.additionalContext``. Stop's output schema
has no ``hookSpecificOutput``. Codex has no SessionEnd: the heartbeat process ends the session
(SPEC-004 §12.2). Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

from . import base

# typing costs ~2.5 ms to import and annotations are never evaluated here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLI = "codex"
NO_OPINION = ""
EVENTS = {
    "SessionStart": "session_start",
    "UserPromptSubmit": "prompt",
    "PreToolUse": "pre_tool",
    "PostToolUse": "post_tool",
    "Stop": "stop",
}
EDIT_TOOLS = ("apply_patch",)
INSTALL = [
    ("SessionStart", None),
    ("UserPromptSubmit", None),
    ("PreToolUse", "apply_patch"),
    ("PostToolUse", None),
    ("Stop", None),
]
TIMEOUT = 5  # seconds
CONTEXT_EVENTS = {"session_start", "prompt", "post_tool", "pre_tool"}


def settings_path(home: Path, project: Path | None) -> Path:
    return (project if project is not None else home) / ".codex" / "hooks.json"


def tool_facts(tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    if tool in EDIT_TOOLS:
        patch = tool_input.get("command") or tool_input.get("patch") or tool_input.get("input")
        return {"action": "edit", "paths": base.apply_patch_paths(patch)}
    if tool == "Bash":
        return {"action": "shell", "command": tool_input.get("command", "")}
    return {"action": "other"}


def normalise(cli_event: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    return base.normalise_with(
        EVENTS, tool_facts, cli_event, payload, message_field="last_assistant_message"
    )


def render(ev: dict[str, Any], answer: dict[str, Any] | None, cli_event: str) -> str:
    return base.render_hook_specific(EVENTS, CONTEXT_EVENTS, ev, answer) or NO_OPINION
