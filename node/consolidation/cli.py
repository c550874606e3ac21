"""``maia memory consolidate | review | pin | unpin`` and ``maia skill`` (SPEC-006 §12).

They talk to the running node (consolidation needs its router). The memory subcommands join
the ``maia memory`` parser the core CLI builds, so they read like the other memory commands.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..cli.client import ApiError, NodeNotRunning
from ..cli.common import UserError, print_json, running_node, say
from ..config import Paths


def _memory_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    memory = sub.choices["memory"]
    return next(a for a in memory._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction) -> None:
    msub = _memory_subparsers(sub)
    c = msub.add_parser("consolidate", help="turn new notes into facts with the consolidation "
                        "cortex now")
    c.add_argument("--dry-run", action="store_true", help="show the facts, write nothing")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_consolidate)
    r = msub.add_parser("review", help="facts consolidation proposed: list, accept, edit, "
                        "reject")
    r.add_argument("action", nargs="?", choices=["accept", "edit", "reject"])
    r.add_argument("id", nargs="?", help="the fact's id")
    r.add_argument("text", nargs="?", help="the new text (edit)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_review)
    for name, hint in (("pin", "keep an entry first in retrieval, on every device"),
                       ("unpin", "undo a pin")):
        p = msub.add_parser(name, help=hint)
        p.add_argument("id")
        p.set_defaults(func=cmd_pin, pinned=name == "pin")

    s = sub.add_parser("skill", help="skills: named ways of doing things, for you and agents")
    ssub = s.add_subparsers(dest="skill_cmd", required=True, metavar="SUBCOMMAND")
    ssub.add_parser("list", help="every current skill").add_argument("--json",
                                                                     action="store_true")
    sh = ssub.add_parser("show", help="one skill with its steps")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    ad = ssub.add_parser("add", help="add a skill (or replace the one of that name)")
    ad.add_argument("name")
    ad.add_argument("--when", required=True, help="when to use it")
    ad.add_argument("--step", action="append", required=True, help="a step (repeat, in order)")
    s.set_defaults(func=cmd_skill)


def _request(paths: Paths, method: str, path: str, body: Any = None,
             timeout: float = 30.0) -> Any:
    client = running_node(paths, timeout=timeout)
    try:
        return client.request(method, path, body)
    except NodeNotRunning:
        raise UserError("no node is running for this data dir; start it with 'maia up'") from None
    except ApiError as exc:
        raise UserError(str(exc)) from None


def _fact_line(f: dict[str, Any]) -> str:
    src = ", ".join(f.get("sources") or [])
    sup = f"  supersedes {f['supersedes']}" if f.get("supersedes") else ""
    ident = f.get("id", "(new)")
    score = f"  importance {f['importance']:g}" if isinstance(f.get("importance"), float) else ""
    return f"{ident}  {f['text']}\n    sources: {src}{sup}{score}"


def cmd_consolidate(args: argparse.Namespace, paths: Paths) -> int:
    report = _request(paths, "POST", "/v1/consolidation/run", {"dry_run": args.dry_run},
                      timeout=3600.0)
    if args.json:
        print_json(report)
        return 0
    facts = report["proposed"] if args.dry_run else report["written"]
    count = report["proposed_count"] if args.dry_run else report["written_count"]
    verb = "Would write" if args.dry_run else "Wrote"
    say(f"{verb} {count} fact(s) from {report['considered']} new entries "
        f"({report['batches']} request(s), {report['skipped']} already known or rejected).")
    for f in facts:
        say(_fact_line(f))
    if count > len(facts):
        say(f"... and {count - len(facts)} more (the first {len(facts)} are shown).")
    for why in report["rejected_answers"]:
        say(f"Rejected a cortex answer (nothing written): {why}")
    if not args.dry_run and facts:
        say("Review them with: maia memory review")
    return 0


def cmd_review(args: argparse.Namespace, paths: Paths) -> int:
    if args.action is None:
        listed = _request(paths, "GET", "/v1/consolidation/review")
        facts = listed["facts"]
        if args.json:
            print_json(facts)
        elif not facts:
            say("Nothing to review.")
        for f in [] if args.json else facts:
            say(_fact_line(f))
        if not args.json and listed.get("count", 0) > len(facts):
            say(f"(the newest {len(facts)} of {listed['count']}; the others follow as you "
                "review these)")
        return 0
    if not args.id:
        raise UserError("say which fact: maia memory review accept|edit|reject ID")
    body: dict[str, Any] = {"action": args.action}
    if args.action == "edit":
        if not args.text:
            raise UserError("edit needs the new text: maia memory review edit ID TEXT")
        body["text"] = args.text
    out = _request(paths, "POST", f"/v1/consolidation/review/{args.id}", body)
    if args.json:
        print_json(out)
    else:
        say({"accept": "Accepted", "edit": "Edited and accepted",
             "reject": "Rejected (no device will propose it again)"}[args.action] + f" {args.id}")
    return 0


def cmd_pin(args: argparse.Namespace, paths: Paths) -> int:
    _request(paths, "POST" if args.pinned else "DELETE", f"/v1/memory/{args.id}/pin")
    say(("Pinned " if args.pinned else "Unpinned ") + args.id)
    return 0


def cmd_skill(args: argparse.Namespace, paths: Paths) -> int:
    if args.skill_cmd == "list":
        skills = _request(paths, "GET", "/v1/skills")["skills"]
        if args.json:
            print_json(skills)
        elif not skills:
            say("No skills yet. Add one with: maia skill add NAME --when ... --step ...")
        for s in [] if args.json else skills:
            say(f"{s['name']:<24} {s['when_to_use']}")
    elif args.skill_cmd == "show":
        s = _request(paths, "GET", f"/v1/skills/{args.name}")
        if args.json:
            print_json(s)
        else:
            say(f"{s['name']}: {s['when_to_use']}")
            for i, step in enumerate(s["steps"], 1):
                say(f"  {i}. {step}")
    else:
        s = _request(paths, "POST", "/v1/skills",
                     {"name": args.name, "when_to_use": args.when, "steps": args.step})
        say(f"Added skill {s['name']} ({s['id']})")
    return 0
