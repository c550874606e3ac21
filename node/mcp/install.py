"""Register ``maia mcp`` in each agent CLI's own MCP configuration (SPEC-004 §15.4).

Where each CLI reads its MCP servers (checked against their documentation, 2026-12):
- Claude Code: ``mcpServers`` at the root of ``~/.claude.json`` (user scope, what
  ``claude mcp add -s user`` writes), or ``<repo>/.mcp.json`` (project scope), entries
  ``{"type": "stdio", "command", "args", "env"}``;
- Codex CLI: ``[mcp_servers.<name>]`` tables in ``~/.codex/config.toml`` (or
  ``<repo>/.codex/config.toml`` for a trusted project) with ``command`` and ``args``;
- Gemini CLI: ``mcpServers`` in ``~/.gemini/settings.json`` (or ``<repo>/.gemini/settings.json``),
  entries ``{"command", "args"}``.
The server is named ``maia``. Install records what it wrote in ``<data>/mcp-installed.json``;
uninstall removes exactly that entry, and only while it is unchanged. JSON files keep their other
content and key order (the hook installer's loader and atomic writer); config.toml is edited as
text: one delimited block appended, the same bytes removed, every other byte kept. Stdlib only.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from ..files import write_atomic
from ..sessions.install import (
    Change,
    InstallError,
    _load,
    _user_default_data_dir,
    _write,
    read_records,
    refuse_symlink,
)

NAME = "maia"
RECORD_FILE = "mcp-installed.json"
CLIS = ("claude", "codex", "gemini")
_BLOCK_HEAD = "# maia-node's MCP server: added by `maia hooks install codex`, removed by uninstall"


def maia_command(cli: str, data_dir: Path) -> tuple[str, list[str]]:
    """(command, args) that start ``maia mcp --agent <cli>`` for this installation."""
    beside = Path(sys.executable).parent / "maia"
    command, args = (str(beside), []) if beside.exists() else (sys.executable, ["-m", "node.cli"])
    if Path(data_dir).resolve() != _user_default_data_dir().resolve():
        args += ["--data-dir", str(Path(data_dir).resolve())]
    return command, [*args, "mcp", "--agent", cli]


def config_path(cli: str, home: Path, project: Path | None) -> Path:
    if cli == "claude":
        return project / ".mcp.json" if project is not None else home / ".claude.json"
    if cli == "codex":
        return (project if project is not None else home) / ".codex" / "config.toml"
    return (project if project is not None else home) / ".gemini" / "settings.json"


def server_entry(cli: str, command: str, args: list[str]) -> dict[str, Any]:
    if cli == "claude":
        return {"type": "stdio", "command": command, "args": args, "env": {}}
    return {"command": command, "args": args}


def toml_block(command: str, args: list[str]) -> str:
    # JSON strings are valid TOML basic strings for what we write (paths, words)
    return (f"\n{_BLOCK_HEAD}\n[mcp_servers.{NAME}]\ncommand = {json.dumps(command)}\n"
            f"args = [{', '.join(json.dumps(a) for a in args)}]\n")


# -- records -----------------------------------------------------------------------------------
def _records(data_dir: Path) -> list[dict[str, Any]]:
    return read_records(data_dir / RECORD_FILE)


def _save(data_dir: Path, records: list[dict[str, Any]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(data_dir / RECORD_FILE, json.dumps(records, indent=2) + "\n")


# -- install -----------------------------------------------------------------------------------
def install(cli: str, data_dir: Path, *, home: Path | None = None,
            project: Path | None = None) -> list[Change]:
    if cli not in CLIS:
        raise InstallError(f"unknown CLI {cli!r}: choose one of {', '.join(CLIS)}")
    home = home or Path.home()
    path = config_path(cli, home, project.resolve() if project else None)
    if project is None:
        path = path.resolve()  # the user's own file: one linked from dotfiles is written through
    else:  # the repository's: never followed, no backup of a link's target
        refuse_symlink(path, project.resolve())
    command, args = maia_command(cli, data_dir)
    shown = " ".join([command, *args])
    if cli == "codex":
        return _install_toml(path, data_dir, command, args, shown)
    doc, existed, indent = _load(path)
    created_key = "mcpServers" not in doc
    servers = doc.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f"{path}: \"mcpServers\" is not a JSON object; nothing was changed")
    entry = server_entry(cli, command, args)
    if servers.get(NAME) == entry:
        return [Change("present", str(path), "mcpServers", NAME, shown)]
    if NAME in servers:
        raise InstallError(f"{path} already has an MCP server named {NAME!r} that maia-node did "
                           "not write; rename or remove it first, nothing was changed")
    servers[NAME] = entry
    _write(path, doc, indent, existed)
    _save(data_dir, [*_records(data_dir), {
        "cli": cli, "file": str(path), "entry": entry, "created_key": created_key,
        "created_file": not existed}])
    return [Change("added", str(path), "mcpServers", NAME, shown)]


def _install_toml(path: Path, data_dir: Path, command: str, args: list[str],
                  shown: str) -> list[Change]:
    try:
        text = path.read_text(encoding="utf-8")
        existed = True
    except FileNotFoundError:
        text, existed = "", False
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InstallError(f"{path} is not valid TOML ({exc}); fix it first, "
                           "nothing was changed") from None
    current = (doc.get("mcp_servers") or {}).get(NAME)
    if current == {"command": command, "args": args}:
        return [Change("present", str(path), "mcp_servers", NAME, shown)]
    if current is not None:
        raise InstallError(f"{path} already has [mcp_servers.{NAME}] that maia-node did not "
                           "write; rename or remove it first, nothing was changed")
    block = toml_block(command, args)
    new = text + ("" if not text or text.endswith("\n") else "\n") + block
    try:
        tomllib.loads(new)  # never write a file the CLI cannot read
    except tomllib.TOMLDecodeError:
        raise InstallError(f"{path} declares mcp_servers in a form a [mcp_servers.{NAME}] "
                           "table cannot join; add the server by hand (docs/guide/mcp.md), "
                           "nothing was changed") from None
    _write_text(path, new, existed)
    _save(data_dir, [*_records(data_dir), {
        "cli": "codex", "file": str(path), "block": block, "created_file": not existed}])
    return [Change("added", str(path), "mcp_servers", NAME, shown)]


def _write_text(path: Path, text: str, existed: bool) -> None:
    refuse_symlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = path.with_name(path.name + ".maia-bak")
    if existed and not backup.exists():
        backup.write_bytes(path.read_bytes())
    write_atomic(path, text, mode=0o644, keep_mode=existed)


# -- uninstall ---------------------------------------------------------------------------------
def uninstall(data_dir: Path, cli: str | None = None) -> list[Change]:
    records = _records(data_dir)
    keep: list[dict[str, Any]] = []
    changes: list[Change] = []
    for rec in records:
        if cli not in (None, "all") and rec.get("cli") != cli:
            keep.append(rec)
            continue
        path = Path(str(rec.get("file")))
        change = _remove_toml(path, rec) if "block" in rec else _remove_json(path, rec)
        if change.action == "edited":
            keep.append(rec)  # changed by the user since: left in place, still remembered
        changes.append(change)
    _save(data_dir, keep)
    return changes


def _remove_json(path: Path, rec: dict[str, Any]) -> Change:
    doc, existed, indent = _load(path)
    servers = doc.get("mcpServers")
    if not existed or not isinstance(servers, dict) or NAME not in servers:
        return Change("missing", str(path), "mcpServers", NAME, "")
    if servers[NAME] != rec.get("entry"):
        return Change("edited", str(path), "mcpServers", NAME, "")
    del servers[NAME]
    if rec.get("created_key") and not servers:
        del doc["mcpServers"]
    if not doc and rec.get("created_file"):
        path.unlink()
    else:
        _write(path, doc, indent, existed)
    return Change("removed", str(path), "mcpServers", NAME, "")


def _remove_toml(path: Path, rec: dict[str, Any]) -> Change:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Change("missing", str(path), "mcp_servers", NAME, "")
    block = str(rec["block"])
    if block not in text:
        try:
            present = NAME in (tomllib.loads(text).get("mcp_servers") or {})
        except tomllib.TOMLDecodeError:
            present = True
        return Change("edited" if present else "missing", str(path), "mcp_servers", NAME, "")
    new = text.replace(block, "", 1)
    if not new.strip() and rec.get("created_file"):
        path.unlink()
    else:
        _write_text(path, new, True)
    return Change("removed", str(path), "mcp_servers", NAME, "")
