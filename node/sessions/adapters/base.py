"""What every adapter shares: the normalised event (SPEC-004 §11.1) and its bounds.

Stdlib only.
"""

from __future__ import annotations

import json
import os
import re

# typing costs ~2.5 ms to import and annotations are never evaluated here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EVENTS = ("session_start", "pre_tool", "post_tool", "prompt", "stop", "session_end")
ACTIONS = ("read", "edit", "shell", "fetch", "search", "other")
MAX_PATHS = 64
MAX_PATH = 4096
MAX_COMMAND = 4096
MAX_TEXT = 2000
_URL = re.compile(r"https?://[^\s'\"<>()]+")
_PATCH_FILE = re.compile(
    r"^\*\*\* (?:Add|Update|Delete) File: (.+?)\s*$|^\*\*\* Move to: (.+?)\s*$", re.M
)


def text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def absolute(cwd: str, paths: list[Any]) -> list[str]:
    """Absolute, normalised paths (relative ones against ``cwd``); junk dropped; bounded."""
    out: list[str] = []
    for p in paths:
        if not isinstance(p, str) or not p or len(p) > MAX_PATH or "\x00" in p:
            continue
        full = os.path.normpath(p if os.path.isabs(p) else os.path.join(cwd, p))
        if full not in out:
            out.append(full)
        if len(out) >= MAX_PATHS:
            break
    return out


def first_url(value: Any) -> str:
    m = _URL.search(value) if isinstance(value, str) else None
    return m.group(0)[:MAX_PATH] if m else ""


def apply_patch_paths(patch: Any) -> list[str]:
    """Target paths of a Codex ``apply_patch`` body: Add/Update/Delete File and Move to lines."""
    if not isinstance(patch, str):
        return []
    return [a or b for a, b in _PATCH_FILE.findall(patch)]


def event(
    name: str,
    payload: dict[str, Any],
    *,
    tool: str = "",
    action: str = "other",
    paths: list[Any] | None = None,
    command: Any = "",
    url: Any = "",
    prompt: Any = "",
    message: Any = "",
) -> dict[str, Any]:
    """The normalised event the node's hook route takes (SPEC-004 §11.1)."""
    cwd = payload.get("cwd")
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        cwd = os.getcwd()
    sid = payload.get("session_id")
    return {
        "event": name,
        "cli_session_id": text(sid, 200) if isinstance(sid, str) else "",
        "cwd": text(cwd, MAX_PATH),
        "tool": text(tool, 200),
        "action": action if action in ACTIONS else "other",
        "paths": absolute(cwd, paths or []),
        "command": text(command, MAX_COMMAND),
        "url": text(url, MAX_PATH),
        "prompt": text(prompt, MAX_TEXT),
        "message": text(message, MAX_TEXT),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def hook_specific(event_name: str, **fields: Any) -> str:
    """``{"hookSpecificOutput": {"hookEventName": ..., ...}}`` (Claude Code, Codex, Gemini)."""
    return dumps({"hookSpecificOutput": {"hookEventName": event_name, **fields}})


def normalise_with(
    events: dict[str, str],
    tool_facts: Any,
    cli_event: str,
    payload: dict[str, Any],
    *,
    message_field: str | None = None,
) -> dict[str, Any] | None:
    """The event every adapter reads the same way: its name (from the payload, else the one
    the hook command was installed for), the tool and what it touches, prompt and message."""
    name = payload.get("hook_event_name")
    name = name if name in events else cli_event
    kind = events.get(name)
    if kind is None:
        return None
    tool = payload.get("tool_name") if isinstance(payload.get("tool_name"), str) else ""
    tool_input = payload.get("tool_input") if isinstance(payload.get("tool_input"), dict) else {}
    facts = tool_facts(tool, tool_input) if kind in ("pre_tool", "post_tool") else {}
    extra = {"message": payload.get(message_field, "")} if message_field else {}
    return event(kind, payload, tool=tool, prompt=payload.get("prompt", ""), **extra, **facts)


def render_hook_specific(
    events: dict[str, str],
    context_events: set[str],
    ev: dict[str, Any],
    answer: dict[str, Any] | None,
) -> str:
    """The answer in ``hookSpecificOutput`` form (Claude Code, and Codex which copied it):
    a denial before a tool runs, or additional context for the events that accept it."""
    if not answer:
        return ""
    kind = ev["event"]
    if kind == "pre_tool" and answer.get("decision") == "deny":
        return hook_specific(
            "PreToolUse", permissionDecision="deny",
            permissionDecisionReason=str(answer.get("reason") or "denied by maia-node"),
        )
    context = answer.get("context")
    if context and kind in context_events:
        event_name = {v: k for k, v in events.items()}[kind]
        return hook_specific(event_name, additionalContext=str(context))
    return ""
