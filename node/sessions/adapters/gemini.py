"""Gemini CLI hooks (the ``hooks`` object of ``settings.json``), as documented in
google-gemini/gemini-cli ``docs/hooks/reference.md`` and ``docs/tools/file-system.md``
(checked 2026-11).

Input: ``session_id``, ``transcript_path``, ``cwd``, ``hook_event_name``, ``timestamp``;
BeforeTool/AfterTool add ``tool_name`` and ``tool_input`` (AfterTool ``tool_response``);
BeforeAgent adds ``prompt``; SessionStart ``source``; SessionEnd ``reason``. Tools: ``write_file``
and ``replace`` take ``file_path``; ``read_file`` takes ``path`` (``absolute_path`` or
``file_path`` in older releases); ``run_shell_command`` takes ``command``; ``web_fetch`` takes a
``prompt`` holding URLs. Answers: BeforeTool deny is ``{"decision": "deny", "reason": ...}``;
context is ``hookSpecificOutput.additionalContext`` (SessionStart, AfterTool, BeforeAgent).
stdout must hold only the final JSON, so "no opinion" is ``{}``. Timeouts are milliseconds.
Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

from . import base

# typing costs ~2.5 ms to import and annotations are never evaluated here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLI = "gemini"
NO_OPINION = "{}"
EVENTS = {
    "SessionStart": "session_start",
    "BeforeAgent": "prompt",
    "BeforeTool": "pre_tool",
    "AfterTool": "post_tool",
    "AfterAgent": "stop",
    "SessionEnd": "session_end",
}
EDIT_TOOLS = ("write_file", "replace")
INSTALL = [
    ("SessionStart", None),
    ("BeforeAgent", None),
    ("BeforeTool", "write_file|replace"),
    ("AfterTool", None),
    ("SessionEnd", None),
]
TIMEOUT = 5000  # milliseconds (Gemini CLI's unit)
CONTEXT_EVENTS = {"session_start", "prompt", "post_tool"}


def settings_path(home: Path, project: Path | None) -> Path:
    return (project if project is not None else home) / ".gemini" / "settings.json"


def _path(tool_input: dict[str, Any]) -> Any:
    for key in ("file_path", "absolute_path", "path"):
        if isinstance(tool_input.get(key), str):
            return tool_input[key]
    return None


def tool_facts(tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    if tool in EDIT_TOOLS:
        return {"action": "edit", "paths": [_path(tool_input)]}
    if tool == "read_file":
        return {"action": "read", "paths": [_path(tool_input)]}
    if tool == "read_many_files":
        paths = tool_input.get("paths")
        return {"action": "read", "paths": paths if isinstance(paths, list) else []}
    if tool in ("list_directory", "glob", "search_file_content", "grep_search"):
        return {"action": "search", "paths": [_path(tool_input)]}
    if tool == "run_shell_command":
        return {"action": "shell", "command": tool_input.get("command", "")}
    if tool == "web_fetch":
        return {"action": "fetch",
                "url": base.first_url(tool_input.get("url") or tool_input.get("prompt"))}
    return {"action": "other"}


def normalise(cli_event: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    return base.normalise_with(
        EVENTS, tool_facts, cli_event, payload, message_field="prompt_response"
    )


def render(ev: dict[str, Any], answer: dict[str, Any] | None, cli_event: str) -> str:
    if not answer:
        return NO_OPINION
    kind = ev["event"]
    if kind == "pre_tool" and answer.get("decision") == "deny":
        return base.dumps({"decision": "deny",
                           "reason": str(answer.get("reason") or "denied by maia-node")})
    context = answer.get("context")
    if context and kind in CONTEXT_EVENTS:
        event_name = {v: k for k, v in EVENTS.items()}[kind]
        return base.hook_specific(event_name, additionalContext=str(context))
    return NO_OPINION
