"""``maia memory``: add, import, list, search, show, edit, delete, and (``versions_cli``) the
versions of entries.

Each sub-command is one small function over a CLI target (``node.cli.targets``): the running
node's API or, with no node running, the store itself; the rules are ``Memory``'s either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..cli.common import Target, UserError, on_target, print_json, say
from . import versions_cli
from .ids import KINDS, MAX_TEXT


def register(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser("memory", help="notes, conversations, facts and skills")
    msub = s.add_subparsers(dest="memory_cmd", required=True, metavar="SUBCOMMAND")
    a = msub.add_parser("add", help="add an entry (TEXT, or - to read stdin)")
    a.add_argument("text")
    a.add_argument("--kind", default="note", choices=list(KINDS))
    a.add_argument("--tag", action="append", help="a tag (repeatable)")
    a.add_argument("--json", action="store_true")
    on_target(a, _add)
    im = msub.add_parser(
        "import", help="add many entries from a file (JSON Lines or text lines)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Add many entries at once, from a file in UTF-8 with one entry per line.",
        epilog=f"""file format (one entry per line; empty lines are skipped):
  a line starting with {{ is a JSON object:
    "text"  the entry's text (required; a string of 1 to {MAX_TEXT} characters)
    "kind"  {", ".join(KINDS[:-1])} or {KINDS[-1]} (default: --kind)
    "tags"  a list of tag strings (default: none)
  any other line is the text of one entry, of kind --kind, without tags

example (notes.jsonl):
  {{"text": "Herons nest in colonies", "kind": "fact", "tags": ["birds"]}}
  {{"text": "Ask Ada about the heron survey"}}
  Buy more notebooks""")
    im.add_argument("file", help="path, or - for stdin")
    im.add_argument("--kind", default="note", choices=list(KINDS),
                    help="the kind of entries that do not name one (default: note)")
    on_target(im, _import)
    for name, helptext in (("list", "list entries, newest first"),
                           ("search", "entries ranked for a query (text, meaning, or both)")):
        lst = msub.add_parser(name, help=helptext)
        if name == "search":
            lst.add_argument("words", nargs="+",
                             help='words; "a phrase" and prefix* work in text ranking')
            lst.add_argument("--mode", choices=["text", "semantic", "hybrid"], default="hybrid",
                             help="text: BM25 over words; semantic: by meaning (vectors); "
                                  "hybrid (default): both, fused")
        else:
            lst.add_argument("--query", "-q", help="only entries containing these words")
        lst.add_argument("--kind")
        lst.add_argument("--tag")
        lst.add_argument("--author", help="device id of the author")
        lst.add_argument("--since", help="ISO date/time, inclusive")
        lst.add_argument("--until", help="ISO date/time, exclusive")
        lst.add_argument("--limit", type=int, default=20 if name == "search" else 50)
        lst.add_argument("--json", action="store_true")
        on_target(lst, _list)
    sh = msub.add_parser("show", help="show one entry")
    sh.add_argument("id")
    sh.add_argument("--at", metavar="VERSION", help="as it was at a version (see history)")
    sh.add_argument("--json", action="store_true")
    on_target(sh, _show)
    ed = msub.add_parser("edit", help="change an entry's text or tags")
    ed.add_argument("id")
    ed.add_argument("--text")
    ed.add_argument("--add-tag", action="append")
    ed.add_argument("--remove-tag", action="append")
    ed.add_argument("--json", action="store_true")
    on_target(ed, _edit)
    de = msub.add_parser("delete", help="forget an entry on every device")
    de.add_argument("id")
    on_target(de, _delete)
    hi = msub.add_parser("history", help="every version: values, device (verified), time")
    hi.add_argument("id")
    hi.add_argument("--full", action="store_true", help="whole texts, not first lines")
    hi.add_argument("--json", action="store_true")
    on_target(hi, versions_cli.history)
    versions_cli.register(msub)


def _add(args: argparse.Namespace, target: Target) -> None:
    text = args.text if args.text != "-" else sys.stdin.read()
    entry = target.memory_add(text, args.kind, args.tag or [])
    print_json(entry) if args.json else say(f"Added {entry['id']}")


def _list(args: argparse.Namespace, target: Target) -> None:
    filters = {
        "kind": args.kind, "tag": args.tag, "author": args.author,
        "since": args.since, "until": args.until, "limit": args.limit,
    }
    if args.memory_cmd == "search":  # ranked (SPEC-003 §12): the author filter is called device
        filters["device"] = filters.pop("author")
        entries = target.memory_search(" ".join(args.words), args.mode, filters)
    else:
        entries = target.memory_list(filters | {"query": args.query})
    if args.json:
        print_json(entries)
    elif not entries:
        say("No memory entries match.")
    for e in [] if args.json else entries:
        _print_entry(e)


def _show(args: argparse.Namespace, target: Target) -> None:
    if args.at:
        versions_cli.show_at(args, target)
        return
    e = target.memory_show(args.id)
    if args.json:
        print_json(e)
    else:
        _print_entry(e, full=True)
        versions_cli.print_concurrent(e)


def _edit(args: argparse.Namespace, target: Target) -> None:
    changes: dict[str, Any] = {}
    if args.text is not None:
        changes["text"] = args.text
    if args.add_tag:
        changes["add_tags"] = args.add_tag
    if args.remove_tag:
        changes["remove_tags"] = args.remove_tag
    if not changes:
        raise UserError("say what to change: --text, --add-tag or --remove-tag")
    e = target.memory_edit(args.id, changes)
    print_json(e) if args.json else say(f"Updated {e['id']}")


def _delete(args: argparse.Namespace, target: Target) -> None:
    target.memory_delete(args.id)
    say(f"Deleted {args.id} (on every device; its history keeps who deleted it).")


def _print_entry(e: dict[str, Any], full: bool = False) -> None:
    tags = " ".join("#" + t for t in e.get("tags", []))
    if full:
        say(f"{e['id']}  {e['kind']}  {e['created_at']}  by {e['author'][:15]}")
        if tags:
            say(tags)
        say()
        say(e["text"])
    else:
        first = e["text"].splitlines()[0] if e["text"] else ""
        # an agent's write says which agent and session made it (SPEC-003 §12.3, SPEC-004 §2.11)
        by = f"  by {e['agent']} ({str(e.get('session') or '')[:12]})" if e.get("agent") else ""
        say(f"{e['id']}  {e['created_at'][:16]}  {first[:70]}" + (f"  {tags}" if tags else "")
            + by)


def _read_import(path: str, kind: str) -> list[dict[str, Any]]:
    """JSON Lines ({"text", "kind", "tags"} per line) or plain text (one entry per line).

    A file is input from anywhere (an export, a script's output, a crafted file): every way it
    can be wrong is a UserError naming the line, never a traceback. Bytes that are not UTF-8,
    JSON nested deeper than the parser's recursion limit, and "tags" that are not a list of
    strings each raised (UnicodeDecodeError, RecursionError, TypeError), and a string as
    "tags" was split into its characters ("abc" became the tags a, b and c)."""
    # bytes, decoded line by line: a text stream decodes ahead in 8 KiB chunks, so its error
    # would name a line before the bad one
    src = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    items = []
    with src:
        for n, raw in enumerate(src, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}:{n} is not UTF-8 text") from None
            if n == 1:
                line = line.removeprefix("\ufeff")  # a byte order mark, as utf-8-sig reads
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                items.append(_import_object(line, f"{path}:{n}", kind))
            else:
                items.append({"text": line, "kind": kind, "tags": []})
    return items


def _import_object(line: str, where: str, kind: str) -> dict[str, Any]:
    """One JSON Lines entry, its fields' types checked; Memory checks their values."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        raise UserError(f"{where} is not valid JSON") from None
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise UserError(f"{where} needs a \"text\" string")
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UserError(f"{where}: \"tags\" must be a list of strings")
    for value in (item["text"], *tags):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a "\\ud800" escape: no store can hold it
            raise UserError(f"{where}: a text or tag is not valid Unicode (an unpaired "
                            "surrogate)") from None
    entry_kind = item.get("kind", kind)
    if entry_kind not in KINDS:
        raise UserError(f"{where}: \"kind\" must be one of {', '.join(KINDS)}")
    return {"text": item["text"], "kind": entry_kind, "tags": tags}


def _import(args: argparse.Namespace, target: Target) -> None:
    try:
        items = _read_import(args.file, args.kind)
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    total, done, step = len(items), 0, 1000
    t0 = time.monotonic()
    tty = sys.stderr.isatty()
    for i in range(0, total, step):
        done += target.memory_import(items[i : i + step])
        rate = done / max(1e-9, time.monotonic() - t0)
        if tty:
            sys.stderr.write(f"\rimporting: {done}/{total} entries ({rate:,.0f}/s)")
        elif done == total or (done // step) % 10 == 0:
            sys.stderr.write(f"importing: {done}/{total} entries ({rate:,.0f}/s)\n")
        sys.stderr.flush()
    if tty:
        sys.stderr.write("\n")
    say(f"Imported {done} entries in {time.monotonic() - t0:.1f} s.")
