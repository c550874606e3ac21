"""``maia device`` (request, add, revoke, list), ``maia devices`` and ``maia join``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from crdt import DeviceKey, accept_invitation, join_request

from ..cli.common import Target, UserError, on_target, print_json, say
from ..config import Paths
from ..datadir import DataDirBusy, locked_store


def register(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser("device", help="enrol devices into the mesh")
    dsub = s.add_subparsers(dest="device_cmd", required=True,
                            metavar="request|add|revoke|list|storage|drop-unseen")
    x = dsub.add_parser("request", help="on a new device: print its join request")
    x.set_defaults(func=cmd_request)
    x = dsub.add_parser("add", help="on a member: admit a device by its join request")
    x.add_argument("request", metavar="JOIN_REQUEST")
    x.add_argument("--name", required=True, help="a name for the new device")
    on_target(x, cmd_add)
    x = dsub.add_parser("revoke", help="remove a device for good (lost or stolen)")
    x.add_argument("device", metavar="DEVICE_ID")
    x.add_argument("--keep", action="append", metavar="CERT_ID",
                   help="a roster entry the revoked device signed (a device it admitted or "
                        "revoked) that stays valid; repeatable")
    x.add_argument("--keep-all", action="store_true",
                   help="keep every device the revoked one admitted and every revocation it made")
    x.add_argument("--reason", help="a note kept with the revocation")
    on_target(x, cmd_revoke)
    x = dsub.add_parser("list", help="members and revoked devices")
    x.add_argument("--json", action="store_true")
    on_target(x, cmd_list)
    x = dsub.add_parser("storage", help="what each device made this node store")
    x.add_argument("--json", action="store_true")
    on_target(x, cmd_storage)
    x = dsub.add_parser(
        "drop-unseen", help="free this node of a device's documents that nobody sees",
        description="Drop, on this node only, the memory documents that only DEVICE_ID wrote "
                    "and that hold no entry anyone can list (a flood, a broken client). Other "
                    "devices keep theirs. They stay dropped while only that device writes to "
                    "them. To stop a device writing at all, revoke it.")
    x.add_argument("device", metavar="DEVICE_ID")
    on_target(x, cmd_drop_unseen)

    s = commands.add_parser("devices", help="members of the mesh and revoked devices")
    s.add_argument("--json", action="store_true")
    on_target(s, cmd_list)
    s.set_defaults(device_cmd="list")

    s = commands.add_parser("join", help="on a new device: join the mesh an invitation names")
    s.add_argument("invitation", metavar="INVITATION")
    s.set_defaults(func=cmd_join)


def cmd_request(args: argparse.Namespace, paths: Paths) -> int:
    key = DeviceKey.load(paths.key)
    say("Give this join request to a device that is already in your mesh, and run there:")
    say(f"  maia device add {join_request(key)} --name NAME")
    return 0


def cmd_add(args: argparse.Namespace, target: Target) -> int:
    result = target.device_add(args.request, args.name)
    say(f"Added {result['device_id']} to the mesh. On that device, run:")
    say(f"  maia join {result['invitation']}")
    return 0


def cmd_revoke(args: argparse.Namespace, target: Target) -> int:
    body: dict[str, Any] = {"keep_all": args.keep_all, "reason": args.reason or ""}
    if args.keep:
        body["keep"] = args.keep
    result = target.device_revoke(args.device, body)
    say(f"Revoked {result['device_id']}. It is cut off now and can never rejoin; its "
        "changes after this point are refused by every device.")
    sys.stderr.write(f"maia: warning: {backup_key_warning(result['device_id'])}\n")
    return 0


def backup_key_warning(device: str) -> str:
    """SPEC-002 §2.10: revocation cuts a device off the mesh, not off a backup repository it
    shared: it still holds the repository's master key, which a passphrase change only
    re-wraps, and maia-node cannot rotate that key yet."""
    return (f"if {device} backed up into a shared backup repository, it still holds that "
            "repository's key: it can read those backups and write new ones into it, and "
            "'maia backup change-passphrase' does not take the key away (it only re-wraps it). "
            "Start a new repository with a new passphrase (maia backup init --to NEW_DIR, then "
            "set [backup] target), and stop using the old one once the new one holds a verified "
            "backup.")


def cmd_list(args: argparse.Namespace, target: Target) -> int:
    rows = target.devices()
    if args.json:
        print_json(rows)
    for r in [] if args.json else rows:
        me = "  (this device)" if r["this_device"] else ""
        seen = _ago(r.get("last_seen")) if not r["this_device"] else "now"
        say(f"{r['device_id']}  {r['status']:<8} {r['name']:<14} last seen {seen}{me}")
    return 0


def cmd_storage(args: argparse.Namespace, target: Target) -> int:
    rows = target.device_storage()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        say("This node holds no signed changes yet.")
    for r in rows:
        me = "  (this device)" if r["this_device"] else ""
        unseen = (f", {r['unseen_documents']} document(s) nobody sees"
                  if r.get("unseen_documents") else "")
        say(f"{r['device_id']}  {r['roster']:<8} {r['name'] or '-':<14} "
            f"{human_bytes(r['bytes']):>9}{unseen}{me}")
    if any(r.get("unseen_documents") for r in rows):
        say("Free them on this node with: maia device drop-unseen DEVICE_ID")
    return 0


def cmd_drop_unseen(args: argparse.Namespace, target: Target) -> int:
    result = target.device_drop_unseen(args.device)
    if not result["documents"]:
        say(f"{result['device_id']} has no documents here that nobody sees; nothing dropped.")
    else:
        say(f"Dropped {result['documents']} document(s) of {result['device_id']} that nobody "
            f"sees, {human_bytes(result['bytes'])} freed on this node.")
    return 0


def human_bytes(n: int) -> str:
    """Bytes as a person reads them (1024-based, one decimal above KiB)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    secs = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit} ago"
    return f"{secs} s ago"


def cmd_join(args: argparse.Namespace, paths: Paths) -> int:
    key = DeviceKey.load(paths.key)
    try:
        with locked_store(paths.root) as store:
            repo = accept_invitation(store, key, args.invitation)
    except (DataDirBusy, ValueError) as exc:
        raise UserError(str(exc)) from None
    say(f"Joined mesh {repo.mesh_id.hex()[:16]}. Add a peer (maia peer add HOST:PORT) and run "
        "'maia up' to sync.")
    return 0
