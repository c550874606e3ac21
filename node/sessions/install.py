"""``maia hooks install|uninstall``: write each CLI's hook settings, idempotently (SPEC-004 §13).

Install adds exactly the entries of SPEC-004 §12 and records each one it added in
``<data>/hooks-installed.json``; running it again finds them and changes nothing. Uninstall
removes only recorded entries that are still unchanged, and a matcher group, event list or
``hooks`` object only if install created it and it is now empty. Every other byte of meaning in
the user's file is kept, key order included; the file's indentation is reused. A settings file
that is not valid JSON is refused and nothing is written. Before the first modification of a
file its original is kept as ``<file>.maia-bak``; writes are atomic (temp file + rename).
Stdlib only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_atomic
from .adapters import CLIS, adapter

RECORD_FILE = "hooks-installed.json"
ENTRY_NAME = "maia-node"


class InstallError(Exception):
    """A settings file cannot be changed safely (one sentence for the user)."""


@dataclass
class Change:
    action: str  # added | present | removed | edited | missing
    file: str
    event: str
    matcher: str | None
    command: str

    def line(self) -> str:
        where = f"{self.event}" + (f" [{self.matcher}]" if self.matcher else "")
        return f"{self.action:<8} {self.file}  {where}"


def hook_executable() -> list[str]:
    """The absolute ``maia-hook`` of this installation, else ``python -m node.sessions.hook``."""
    beside = Path(sys.executable).parent / "maia-hook"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("maia-hook")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "node.sessions.hook"]


def _user_default_data_dir() -> Path:
    """The data dir an agent's hook finds with no environment set (MAIA_DATA_DIR ignored: the
    agent CLI that runs the hook may not carry the variable the installing shell had)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "maia"


def hook_command(cli: str, event: str, data_dir: Path) -> str:
    parts = hook_executable()
    if Path(data_dir).resolve() != _user_default_data_dir().resolve():
        parts += ["--data-dir", str(Path(data_dir).resolve())]
    parts += [cli, event]
    return " ".join(shlex.quote(p) for p in parts)


def hook_entry(cli: str, command: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "command", "command": command,
                             "timeout": adapter(cli).TIMEOUT}
    if cli == "gemini":
        entry["name"] = ENTRY_NAME  # Gemini CLI shows hook names in its logs and /hooks
    return entry


# -- files -----------------------------------------------------------------------------------------
def refuse_symlink(path: Path, project: Path | None = None) -> None:
    """InstallError when ``path`` (or, with ``project``, a directory between it and the project)
    is a symbolic link (SPEC-004 §13.4).

    Why: a repository can ship .mcp.json or .codex/config.toml as a link to a file of the
    user's; the backup would copy that file into the repository as ``*.maia-bak``, and the
    write would go wherever the link points.
    """
    stop = project if project is not None else path.parent
    for p in (path, *path.parents):
        if p == stop:
            break
        if p.is_symlink():
            raise InstallError(f"{p} is a symbolic link; maia-node does not follow it "
                               "(replace it with a regular file), nothing was changed")


def _load(path: Path) -> tuple[dict[str, Any], bool, str]:
    """(document, existed, indent) of a settings file; InstallError when it is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, False, "  "
    except OSError as exc:
        raise InstallError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        return {}, True, "  "
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InstallError(
            f"{path} is not valid JSON ({exc}); fix it first, nothing was changed"
        ) from None
    if not isinstance(doc, dict):
        raise InstallError(f"{path} does not hold a JSON object; nothing was changed")
    return doc, True, _indent_of(text)


def _indent_of(text: str) -> str:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and stripped != line:
            return line[: len(line) - len(stripped)]
    return "  "


def _write(path: Path, doc: dict[str, Any], indent: str, existed: bool) -> None:
    refuse_symlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = path.with_name(path.name + ".maia-bak")
    if existed and not backup.exists():
        shutil.copy2(path, backup)
    # an agent's own file: a new one is readable like the agent's others, an old one keeps
    # its mode
    write_atomic(path, json.dumps(doc, indent=indent, ensure_ascii=False) + "\n",
                 mode=0o644, keep_mode=existed)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The install records kept in ``path`` (a JSON list of maps); none if missing or bad."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _records(data_dir: Path) -> list[dict[str, Any]]:
    return read_records(data_dir / RECORD_FILE)


def _save_records(data_dir: Path, records: list[dict[str, Any]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / RECORD_FILE
    write_atomic(path, json.dumps(records, indent=2) + "\n")  # 0600 (SPEC-001 §4.6)


def _hooks_object(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        raise InstallError(f"{path}: \"hooks\" is not a JSON object; nothing was changed")
    return hooks


def _find(groups: list[Any], command: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            for entry in group["hooks"]:
                if isinstance(entry, dict) and entry.get("command") == command:
                    return group, entry
    return None


# -- install ---------------------------------------------------------------------------------------
def install(cli: str, data_dir: Path, *, home: Path | None = None,
            project: Path | None = None) -> list[Change]:
    if cli not in CLIS:
        raise InstallError(f"unknown CLI {cli!r}: choose one of {', '.join(CLIS)}")
    mod = adapter(cli)
    home = home or Path.home()
    path = mod.settings_path(home, project.resolve() if project else None)
    if project is None:
        path = path.resolve()  # the user's own file: one linked from dotfiles is written through
    else:
        refuse_symlink(path, project.resolve())  # the repository's: never followed
    doc, existed, indent = _load(path)
    created_hooks = "hooks" not in doc
    if created_hooks:
        doc["hooks"] = {}
    hooks = _hooks_object(doc, path)
    records = _records(data_dir)
    changes: list[Change] = []
    added: list[dict[str, Any]] = []
    for event, matcher in mod.INSTALL:
        command = hook_command(cli, event, data_dir)
        created_event = event not in hooks
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise InstallError(f"{path}: hooks.{event} is not a list; nothing was changed")
        if _find(groups, command) is not None:
            changes.append(Change("present", str(path), event, matcher, command))
            continue
        group = next((g for g in groups if isinstance(g, dict) and g.get("matcher") == matcher
                      and isinstance(g.get("hooks"), list)), None)
        created_group = group is None
        if group is None:
            group = {"matcher": matcher, "hooks": []} if matcher else {"hooks": []}
            groups.append(group)
        entry = hook_entry(cli, command)
        group["hooks"].append(entry)
        added.append({
            "file": str(path), "cli": cli, "event": event, "matcher": matcher,
            "command": command, "entry": entry, "created_group": created_group,
            "created_event": created_event, "created_hooks": created_hooks,
            "created_file": not existed,
        })
        changes.append(Change("added", str(path), event, matcher, command))
    if added:
        _write(path, doc, indent, existed)
        _save_records(data_dir, records + added)
    return changes


# -- uninstall -------------------------------------------------------------------------------------
def uninstall(data_dir: Path, cli: str | None = None) -> list[Change]:
    records = _records(data_dir)
    mine = [r for r in records if cli in (None, "all") or r.get("cli") == cli]
    keep = [r for r in records if r not in mine]
    changes: list[Change] = []
    by_file: dict[str, list[dict[str, Any]]] = {}
    for rec in mine:
        by_file.setdefault(str(rec.get("file")), []).append(rec)
    for file, recs in by_file.items():
        path = Path(file)
        doc, existed, indent = _load(path)
        if not existed:
            changes += [Change("missing", file, r["event"], r.get("matcher"), r["command"])
                        for r in recs]
            continue
        hooks = doc.get("hooks") if isinstance(doc.get("hooks"), dict) else {}
        modified = False
        for rec in recs:
            event, command = rec["event"], rec["command"]
            groups = hooks.get(event) if isinstance(hooks.get(event), list) else []
            found = _find(groups, command)
            if found is None:
                changes.append(Change("missing", file, event, rec.get("matcher"), command))
                continue
            group, entry = found
            if entry != rec.get("entry"):
                changes.append(Change("edited", file, event, rec.get("matcher"), command))
                keep.append(rec)  # edited since install: left in place, still remembered
                continue
            group["hooks"].remove(entry)
            modified = True
            changes.append(Change("removed", file, event, rec.get("matcher"), command))
            if rec.get("created_group") and not group["hooks"] and set(group) <= {
                "matcher", "hooks"
            }:
                groups.remove(group)
            if rec.get("created_event") and not groups and event in hooks:
                del hooks[event]
        if any(r.get("created_hooks") for r in recs) and doc.get("hooks") == {}:
            del doc["hooks"]
        if not modified:
            continue
        if not doc and any(r.get("created_file") for r in recs):
            path.unlink()
        else:
            _write(path, doc, indent, existed)
    _save_records(data_dir, keep)
    return changes
