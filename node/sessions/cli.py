"""CLI commands of SPEC-004: ``maia sessions``, ``claim``, ``release``, ``send``, ``inbox``,
``journal add|list|done``, ``hooks install|uninstall`` and ``run -- aider …``.

Registered through the sessions feature's ``FEATURES`` entry. Live state exists only in a
running node, so these commands talk to it over the local API (``node/cli/client.py``);
``hooks`` works without a node.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..cli.client import ApiError, NodeClient, NodeNotRunning
from ..cli.common import UserError, print_json, say
from ..mcp.install import install as mcp_install
from ..mcp.install import uninstall as mcp_uninstall
from .gitinfo import find_repo
from .install import InstallError, install, uninstall
from .runwrap import run

SESSION_ID = re.compile(r"^[a-z2-7]{26}\Z")
LEASE_ID = re.compile(r"^[0-9a-f]{32}\Z")
_TTL = re.compile(r"^(\d+)([smhd]?)\Z")


def register(sub: Any) -> None:
    s = sub.add_parser("sessions", help="live agent sessions across your devices",
                       description="Every live agent session of the mesh, with its device, "
                       "task, tags and the sessions it overlaps.")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sessions)

    s = sub.add_parser("claim", help="take an advisory lease on a path or glob",
                       description="Take an advisory lease for an agent session, so other "
                       "sessions' edits of matching files are denied (exclusive) or flagged.")
    s.add_argument("pattern", help="a path or glob (*, ?, **) inside the current repository")
    s.add_argument("--shared", action="store_true", help="a shared lease (never denies)")
    s.add_argument("--ttl", default="15m", help="how long it lasts: 900, 30m, 2h (max 24h)")
    s.add_argument("--note", default="", help="why (shown to whoever is denied)")
    s.add_argument("--session", help="the session that holds it (default: the agent session "
                   "this command runs in)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_claim)

    s = sub.add_parser("release", help="release a lease")
    s.add_argument("lease", help="a lease id, or the pattern it was taken on")
    s.add_argument("--session", help="the session holding it (default: this agent session)")
    s.add_argument("--force", action="store_true",
                   help="release another session's lease (another device's lease stops "
                        "counting on this device only)")
    s.set_defaults(func=cmd_release)

    s = sub.add_parser("send", help="send a message to an agent session (or 'owner')")
    s.add_argument("to", help="a session id (or a unique prefix of one), or 'owner'")
    s.add_argument("text", nargs="+")
    s.set_defaults(func=cmd_send)

    s = sub.add_parser("inbox", help="messages agent sessions sent to you")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inbox)

    s = sub.add_parser("journal", help="the work journal of a project")
    jsub = s.add_subparsers(dest="journal_cmd", required=True, metavar="add|list|done|reopen")
    a = jsub.add_parser("add", help="add an entry: KIND TEXT")
    a.add_argument("kind", choices=["achievement", "decision", "todo", "aspiration", "learning",
                                    "blocker"])
    a.add_argument("text", nargs="+")
    a.add_argument("--project", help="a repository id (default: this directory's repository)")
    a.add_argument("--json", action="store_true")
    lst = jsub.add_parser("list", help="entries, newest first")
    lst.add_argument("--project", help="a repository id (default: this directory's repository)")
    lst.add_argument("--all", action="store_true", help="every project")
    lst.add_argument("--kind")
    lst.add_argument("--status", choices=["open", "done"])
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true")
    for name in ("done", "reopen"):
        state = "done" if name == "done" else "open"
        d = jsub.add_parser(name, help=f"mark a todo or blocker {state}")
        d.add_argument("id")
    s.set_defaults(func=cmd_journal)

    s = sub.add_parser("hooks", help="install or remove maia-node's hooks in agent CLIs")
    hsub = s.add_subparsers(dest="hooks_cmd", required=True, metavar="install|uninstall")
    i = hsub.add_parser("install", help="add maia-node's hooks (idempotent; shows what changed)")
    i.add_argument("cli", choices=["claude", "codex", "gemini", "all"])
    i.add_argument("--project", metavar="DIR",
                   help="write the project's settings (DIR/.claude, .codex, .gemini)")
    u = hsub.add_parser("uninstall", help="remove only the hooks install added")
    u.add_argument("cli", nargs="?", default="all", choices=["claude", "codex", "gemini", "all"])
    s.set_defaults(func=cmd_hooks)

    s = sub.add_parser("run", help="run an agent without hooks (aider) as a coordinated session",
                       description="maia run -- aider [args...]: registers a session, gives "
                       "aider the journal and overlaps (--read), watches the worktree and "
                       "reports the files it changes.")
    s.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    s.set_defaults(func=cmd_run)


# -- plumbing -------------------------------------------------------------------------------------
def _client(paths: Any) -> Any:
    try:
        return NodeClient(paths, timeout=15)
    except NodeNotRunning:
        raise UserError("no node is running on this device; start it with 'maia up'") from None


def _call(paths: Any, method: str, path: str, body: Any = None, query: Any = None) -> Any:
    try:
        return _client(paths).request(method, path, body, query)
    except NodeNotRunning:
        raise UserError("the node stopped answering; is it still running?") from None
    except ApiError as exc:
        raise UserError(str(exc)) from None


def _all_pages(paths: Any, path: str, key: str, query: dict[str, Any] | None = None) -> list:
    out: list[Any] = []
    cursor = None
    while True:
        page = _call(paths, "GET", path, query={**(query or {}), "limit": 500, "cursor": cursor})
        out.extend(page[key])
        cursor = page.get("cursor")
        if not cursor:
            return out


def _ancestors() -> list[int]:
    """This process's ancestors (Linux /proc): how a command run by an agent finds its session."""
    out, pid = [], os.getppid()
    for _ in range(32):
        out.append(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                tail = fh.read().decode("utf-8", "replace").rpartition(")")[2].split()
            pid = int(tail[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return out


def _my_session(paths: Any, explicit: str | None) -> str:
    sessions = [s for s in _all_pages(paths, "/v1/sessions", "sessions") if s.get("local")]
    if explicit:
        match = [s["id"] for s in sessions if s["id"].startswith(explicit)]
        if len(match) != 1:
            raise UserError(f"no single local session starts with '{explicit}' (see maia sessions)")
        return match[0]
    ancestors = _ancestors()
    for pid in ancestors:
        for s in sessions:
            if s.get("pid") == pid:
                return s["id"]
    raise UserError("this command does not run inside an agent session; name one with "
                    "--session ID (see maia sessions)")


def _repo_relative(pattern: str) -> str:
    """A pattern typed in a subdirectory, made relative to the repository's top level."""
    info = find_repo(os.getcwd())
    if info is None:
        return pattern
    if os.path.isabs(pattern):
        rel = os.path.relpath(pattern, info.root)
    else:
        rel = os.path.relpath(os.path.join(os.getcwd(), pattern), info.root)
    return rel.replace(os.sep, "/")


def _ttl_seconds(text: str) -> int:
    m = _TTL.match(text.strip())
    if not m:
        raise UserError(f"'{text}' is not a duration like 900, 30m or 2h")
    value = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= value <= 86400:
        raise UserError("a lease lasts between 1 second and 24 hours")
    return value


def _project_here(explicit: str | None) -> str:
    if explicit:
        return explicit
    info = find_repo(os.getcwd())
    if info is None:
        raise UserError("this directory is not in a git repository; pass --project")
    return info.repository


# -- commands -------------------------------------------------------------------------------------
def cmd_sessions(args: argparse.Namespace, paths: Any) -> int:
    sessions = _all_pages(paths, "/v1/sessions", "sessions")
    if args.json:
        print_json(sessions)
        return 0
    if not sessions:
        say("No live agent sessions.")
        return 0
    for s in sessions:
        where = s["repository"] + (f"@{s['branch']}" if s.get("branch") else "")
        say(f"{s['id']}  {s['agent']:<7} {s['device_name'] or s['device'][:7]:<12} "
            f"{'here' if s['local'] else 'remote':<6} {where or s['cwd']}")
        if s.get("task"):
            say(f"    task: {s['task']}")
        if s.get("recent_action"):
            say(f"    recent: {s['recent_action']}  (last seen {s['last_seen'][:19]}Z)")
        if s.get("modified"):
            say(f"    modified: {', '.join(s['modified'][:5])}")
        for o in s.get("overlaps", []):
            shared = ", ".join(o["files"][:3] or o["shared"][:3])
            say(f"    {o['tier']:<8} with {o['session'][:8]} ({o['agent']} on "
                f"{o['device_name']}): {shared}")
    return 0


def cmd_claim(args: argparse.Namespace, paths: Any) -> int:
    session = _my_session(paths, args.session)
    body = {"pattern": _repo_relative(args.pattern), "mode": "shared" if args.shared
            else "exclusive", "ttl_s": _ttl_seconds(args.ttl), "session": session}
    if args.note:
        body["note"] = args.note
    try:
        lease = _client(paths).request("POST", "/v1/leases", body)
    except ApiError as exc:
        holder = exc.problem.get("holder")
        if exc.status == 409 and holder:
            raise UserError(
                f"{holder['pattern']} is already held ({holder['mode']}) by {holder['agent']} on "
                f"{holder['device_name']} for \"{holder['task'] or 'no task'}\" until "
                f"{holder['expires_at']} (session {holder['session']})"
            ) from None
        raise UserError(str(exc)) from None
    if args.json:
        print_json(lease)
    else:
        say(f"Leased {lease['pattern']} ({lease['mode']}) in {lease['repository']} until "
            f"{lease['expires_at']}: lease {lease['id']}")
    return 0


def cmd_release(args: argparse.Namespace, paths: Any) -> int:
    session = None if args.force and not args.session else _my_session(paths, args.session)
    lease_id = args.lease
    if not LEASE_ID.match(lease_id):
        pattern = _repo_relative(lease_id)
        held = [x for x in _all_pages(paths, "/v1/leases", "leases")
                if x["pattern"] == pattern and (x["local"] or args.force)
                and (args.force or x["session"] == session)]
        if len(held) != 1:
            raise UserError(f"no single lease of yours on '{pattern}' (see maia sessions)")
        lease_id = held[0]["id"]
    query: dict[str, Any] = {"session": session} if session else {}
    if args.force:
        query["force"] = "true"
    _call(paths, "DELETE", f"/v1/leases/{lease_id}", query=query)
    say(f"Released lease {lease_id}.")
    return 0


def cmd_send(args: argparse.Namespace, paths: Any) -> int:
    to = args.to
    if to != "owner" and not SESSION_ID.match(to):
        match = [s["id"] for s in _all_pages(paths, "/v1/sessions", "sessions")
                 if s["id"].startswith(to)]
        if len(match) != 1:
            raise UserError(f"no single live session starts with '{to}' (see maia sessions)")
        to = match[0]
    sent = _call(paths, "POST", "/v1/messages", {"to": to, "text": " ".join(args.text)})
    say(f"Sent message {sent['id']} to {to}.")
    return 0


def cmd_inbox(args: argparse.Namespace, paths: Any) -> int:
    messages = _all_pages(paths, "/v1/messages", "messages")
    if args.json:
        print_json(messages)
    elif not messages:
        say("No messages.")
    else:
        for m in messages:
            say(f"{m['at'][:19]}Z  {m['from_agent']} on {m['from_device_name']} ({m['from']}): "
                f"{m['text']}")
    return 0


def cmd_journal(args: argparse.Namespace, paths: Any) -> int:
    if args.journal_cmd == "add":
        entry = _call(paths, "POST", "/v1/journal", {
            "kind": args.kind, "text": " ".join(args.text), "project": _project_here(args.project),
        })
        print_json(entry) if args.json else say(f"Added {entry['id']} to {entry['project']}.")
        return 0
    if args.journal_cmd in ("done", "reopen"):
        status = "done" if args.journal_cmd == "done" else "open"
        entry = _call(paths, "PATCH", f"/v1/journal/{args.id}", {"status": status})
        say(f"{entry['id']} is {entry['status']}.")
        return 0
    query: dict[str, Any] = {"kind": args.kind, "status": args.status}
    if not args.all:
        query["project"] = _project_here(args.project)
    entries = _all_pages(paths, "/v1/journal", "entries", query)[: max(1, args.limit)]
    if args.json:
        print_json(entries)
    elif not entries:
        say("The journal has no entries here yet: maia journal add decision \"...\"")
    else:
        for e in entries:
            status = f" ({e['status']})" if e.get("status") else ""
            say(f"{e['id']}  {e['created_at'][:16]}  {e['journal_kind']}{status}: {e['text']}")
    return 0


def cmd_hooks(args: argparse.Namespace, paths: Any) -> int:
    try:
        if args.hooks_cmd == "install":
            project = Path(args.project) if args.project else None
            if project is not None and not project.is_dir():
                raise UserError(f"{args.project} is not a directory")
            clis = ["claude", "codex", "gemini"] if args.cli == "all" else [args.cli]
            changes = [c for cli in clis for c in install(cli, paths.root, project=project)]
            # SPEC-004 §15.4: and the MCP server, in each CLI's own MCP configuration
            servers = [c for cli in clis for c in mcp_install(cli, paths.root, project=project)]
        else:
            changes = uninstall(paths.root, args.cli)
            servers = mcp_uninstall(paths.root, args.cli)
    except InstallError as exc:
        raise UserError(str(exc)) from None
    for change in changes + servers:
        say(change.line())
    done = [c for c in servers if c.action in ("added", "removed")]
    if done:
        say(f"{len(done)} MCP server entr{'y' if len(done) == 1 else 'ies'} "
            f"{'registered' if args.hooks_cmd == 'install' else 'removed'} (maia mcp).")
    acted = [c for c in changes if c.action in ("added", "removed")]
    if args.hooks_cmd == "install":
        say(f"{len(acted)} hook(s) added." if acted
            else "Nothing changed: maia-node's hooks were already installed.")
    else:
        edited = [c for c in changes if c.action == "edited"]
        say(f"{len(acted)} hook(s) removed." if acted else "No maia-node hooks to remove.")
        if edited:
            say(f"{len(edited)} hook(s) were edited since install and were left in place.")
    return 0


def cmd_run(args: argparse.Namespace, paths: Any) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UserError("say what to run: maia run -- aider [args...]")
    sys.stdout.flush()
    return run(paths.root, command)
