"""``maia memory history | show --at | restore | undelete | deleted``: versions of entries.

The commands act through the same backend as the other memory commands (the running node's
API, or the store when no node runs). A refusal that is not "no such entry" (an unknown or
ambiguous version, an entry that is not deleted) comes back as a ValueError carrying the
node's own sentence, which ``cmd_memory`` shows as a user error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

VERSION_COMMANDS = frozenset({"history", "restore", "undelete", "deleted"})
SHORT = 12

Say = Callable[..., None]


def add_parsers(msub: Any) -> None:
    """The version subcommands (``history`` and ``show`` are declared by the memory parser)."""
    re_ = msub.add_parser("restore", help="write an old version again (a new signed change)")
    re_.add_argument("id")
    re_.add_argument("version", help="a version from 'maia memory history ID' (8+ hex chars)")
    re_.add_argument("--json", action="store_true")
    un = msub.add_parser("undelete", help="bring a deleted entry back")
    un.add_argument("id")
    un.add_argument("--json", action="store_true")
    dl = msub.add_parser("deleted", help="deleted entries that can be brought back")
    dl.add_argument("--limit", type=int, default=50)
    dl.add_argument("--json", action="store_true")


def wants(args: argparse.Namespace) -> bool:
    """Whether this module runs the command (``show --at`` is a version read)."""
    return args.memory_cmd in VERSION_COMMANDS or bool(getattr(args, "at", None))


def run(args: argparse.Namespace, backend: Any, say: Say, as_json: Callable[[Any], None]) -> None:
    from .client import ApiError

    try:
        _run(args, backend, say, as_json)
    except ApiError as exc:
        if exc.status == 404 and (exc.problem.get("title") or "") != "No such version":
            raise  # the caller's "no memory entry has the id ..."
        raise ValueError(str(exc)) from None


def _run(args: argparse.Namespace, backend: Any, say: Say, as_json: Callable[[Any], None]) -> None:
    sub = args.memory_cmd
    if sub == "history":
        rows = backend.memory_history(args.id)
        if args.json:
            as_json(rows)
        else:
            print_history(rows, say, full=getattr(args, "full", False))
    elif sub == "show":
        v = backend.memory_show_at(args.id, args.at)
        if args.json:
            as_json(v)
        else:
            say(f"{v['id']}  version {v['n']} ({v['version'][:SHORT]})  {v.get('at') or '?'}  "
                f"{v['op']} by {_who(v)}")
            if v.get("deleted"):
                say("(deleted at this version)")
            if v.get("tags"):
                say(" ".join("#" + t for t in v["tags"]))
            say()
            say(v.get("text") or "")
    elif sub == "restore":
        e = backend.memory_restore(args.id, args.version)
        as_json(e) if args.json else say(f"Restored {e['id']} to version {args.version[:SHORT]} "
                                         "(a new change; the history keeps every version).")
    elif sub == "undelete":
        e = backend.memory_undelete(args.id)
        as_json(e) if args.json else say(f"Brought back {e['id']}.")
    elif sub == "deleted":
        rows = backend.memory_deleted(args.limit)
        if args.json:
            as_json(rows)
        elif not rows:
            say("No deleted entries.")
        else:
            for r in rows:
                first = (r.get("text") or "").splitlines()[0] if r.get("text") else ""
                who = r.get("deleted_by_name") or (r.get("deleted_by") or "?")[:15]
                say(f"{r['id']}  deleted {(r.get('deleted_at') or '?')[:16]} by {who}  "
                    f"{first[:60]}")


def _who(r: dict[str, Any]) -> str:
    name = f" ({r['device_name']})" if r.get("device_name") else ""
    mark = "verified" if r.get("verified") else "UNVERIFIED"
    return f"{r.get('device_id') or '?'}{name} {mark}, {r.get('signer_status', '?')}"


def print_history(rows: list[dict[str, Any]], say: Say, full: bool = False) -> None:
    """One block per version: number, hash, time, operation, device, then its values."""
    for r in rows:
        sess = f"  session {r['session']}" if r.get("session") else ""
        agent = f"  agent {r['agent']}" if r.get("agent") else ""
        say(f"{r['n']:>3}  {r['version'][:SHORT]}  {r.get('at') or '?'}  {r['op']:<18} "
            f"{_who(r)}{sess}{agent}")
        text = r.get("text") or ""
        shown = text if full else (text.splitlines()[0][:70] if text else "")
        tags = " ".join("#" + t for t in r.get("tags") or [])
        state = "  [deleted]" if r.get("deleted") else ""
        say(f"     {shown}" + (f"  {tags}" if tags else "") + state)


def print_concurrent(entry: dict[str, Any], say: Say) -> None:
    """The "edited on two devices at the same time" notice of ``maia memory show``."""
    live = entry.get("concurrent") or []
    if len(live) < 2:
        return
    names = [c.get("device_name") or (c.get("device_id") or "?")[:15] for c in live]
    say()
    say(f"Edited on {' and '.join(names)} at the same time. Every text is kept; pick one with "
        f"'maia memory restore {entry['id']} VERSION' (or edit it):")
    for c, name in zip(live, names, strict=True):
        first = (c.get("text") or "").splitlines()[0] if c.get("text") else ""
        say(f"  {c['version'][:SHORT]}  {name}  {c.get('at') or '?'}  {first[:60]}")
