"""``maia memory history | show --at | restore | undelete | deleted``: versions of entries.

The commands act on the same CLI target as the other memory commands (the running node's API,
or the store when no node runs); a refusal (an unknown or ambiguous version, an entry that is
not deleted) is the domain's own sentence either way (``node.memory.versions``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..cli.common import Target, on_target, print_json, say

SHORT = 12


def register(msub: argparse._SubParsersAction) -> None:
    """The version subcommands (``history`` and ``show`` are declared by the memory parser,
    which sends ``history`` and ``show --at`` here)."""
    re_ = msub.add_parser("restore", help="write an old version again (a new signed change)")
    re_.add_argument("id")
    re_.add_argument("version", help="a version from 'maia memory history ID' (8+ hex chars)")
    re_.add_argument("--json", action="store_true")
    on_target(re_, restore)
    un = msub.add_parser("undelete", help="bring a deleted entry back")
    un.add_argument("id")
    un.add_argument("--json", action="store_true")
    on_target(un, undelete)
    dl = msub.add_parser("deleted", help="deleted entries that can be brought back")
    dl.add_argument("--limit", type=int, default=50)
    dl.add_argument("--json", action="store_true")
    on_target(dl, deleted)


def history(args: argparse.Namespace, target: Target) -> None:
    rows = target.memory_history(args.id)
    if args.json:
        print_json(rows)
    else:
        print_history(rows, full=getattr(args, "full", False))


def show_at(args: argparse.Namespace, target: Target) -> None:
    v = target.memory_show_at(args.id, args.at)
    if args.json:
        print_json(v)
        return
    say(f"{v['id']}  version {v['n']} ({v['version'][:SHORT]})  {v.get('at') or '?'}  "
        f"{v['op']} by {_who(v)}")
    if v.get("deleted"):
        say("(deleted at this version)")
    if v.get("tags"):
        say(" ".join("#" + t for t in v["tags"]))
    say()
    say(v.get("text") or "")


def restore(args: argparse.Namespace, target: Target) -> None:
    e = target.memory_restore(args.id, args.version)
    print_json(e) if args.json else say(f"Restored {e['id']} to version {args.version[:SHORT]} "
                                        "(a new change; the history keeps every version).")


def undelete(args: argparse.Namespace, target: Target) -> None:
    e = target.memory_undelete(args.id)
    print_json(e) if args.json else say(f"Brought back {e['id']}.")


def deleted(args: argparse.Namespace, target: Target) -> None:
    rows = target.memory_deleted(args.limit)
    if args.json:
        print_json(rows)
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
    altered = "".join(
        f", altered by {a.get('device_name') or (a.get('device_id') or '?')[:15]}"
        for a in r.get("altered_by") or [] if isinstance(a, dict))
    return f"{r.get('device_id') or '?'}{name} {mark}, {r.get('signer_status', '?')}{altered}"


def print_history(rows: list[dict[str, Any]], full: bool = False) -> None:
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


def print_concurrent(entry: dict[str, Any]) -> None:
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
