"""``maia pair`` (on the new device) and ``maia pair accept`` (on a member)."""

from __future__ import annotations

import argparse
import asyncio
import select
import sys
import time

from crdt import DeviceKey, stored_mesh_id

from ...cli.client import ApiError, NodeClient, NodeNotRunning
from ...cli.common import UserError, say
from ...config import NodeConfig, Paths
from ...datadir import DataDirBusy, locked_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pair",
        help="join a mesh from a new device, or (pair accept) let a new device join",
        description="On the new device: maia pair [HOST:PORT] --code CODE. On a device that is "
        "already a member: maia pair accept. The code never crosses the network: both devices "
        "prove they know it. Both screens then show six digits, and BOTH users confirm only "
        "if they are the same.",
    )
    p.add_argument("target", nargs="*", metavar="accept | HOST:PORT",
                   help="'accept' on the member; on the new device the member's peer address "
                   "(found on the LAN when omitted)")
    p.add_argument("--code", help="the code the member shows (new device)")
    p.add_argument("--name", help="a name for this device in the mesh (new device)")
    p.add_argument("--yes", action="store_true",
                   help="new device: answer yes without comparing the six digits (for scripts "
                   "only: it skips the check that stops a device in the middle)")
    p.add_argument("--ttl", type=float, default=300.0,
                   help="how long the code stays valid, seconds (member; default 300)")
    p.set_defaults(func=cmd_pair)


def cmd_pair(args: argparse.Namespace, paths: Paths) -> int:
    if args.target[:1] == ["accept"]:
        return _accept(args, paths)
    if len(args.target) > 1:
        raise UserError("give at most one HOST:PORT")
    return _join(args, paths)


def _accept(args: argparse.Namespace, paths: Paths) -> int:
    try:
        c = NodeClient(paths)
    except NodeNotRunning:
        raise UserError("start the node first ('maia up'): pairing runs inside it") from None
    try:
        opened = c.request("POST", "/v1/pairing", {"ttl": args.ttl})
    except ApiError as exc:
        raise UserError(str(exc)) from None
    say(f"Pairing code: {opened['code']}   (valid {int(opened['expires_in'])} s, single use)")
    say("On the new device run:  maia pair --code " + opened["code"])
    sys.stdout.flush()
    state = _wait_while(c, opened, ("open",))
    if state["state"] != "confirm":
        raise UserError(f"pairing ended: {_ended(state)}")
    say(f"Device {state['candidate']} ({state['candidate_name']}) proved the code and asks to "
        "join.")
    say(f"Its screen must show:  {state['sas']}")
    sys.stdout.write("Do both screens show the same number? [y/N] ")
    sys.stdout.flush()
    answer = _read_answer_while(c)
    if answer is None:  # decided elsewhere: the new device's user refused, or it went away
        state = c.request("GET", "/v1/pairing")
        say("")
        raise UserError(f"pairing ended before you answered: {_ended(state)}. Nothing was "
                        "added to the mesh.")
    ok = answer in ("y", "yes")
    try:
        c.request("POST", "/v1/pairing/confirm", {"accept": ok})
    except ApiError as exc:
        raise UserError(f"pairing ended: {exc}. Nothing was added to the mesh.") from None
    if not ok:
        say("Refused. Nothing was added to the mesh.")
        return 1
    say("Waiting for the new device's user to confirm too...")
    sys.stdout.flush()
    state = _wait_while(c, c.request("GET", "/v1/pairing"), ("approved",))
    if state["state"] != "accepted":
        raise UserError(f"pairing ended: {_ended(state)}. Nothing was added to the mesh.")
    say(f"Added {state['candidate']} to the mesh; it syncs once it runs 'maia up'.")
    return 0


def _ended(state: dict) -> str:
    if state.get("refused_by") == "new device":
        return "the new device's user said the numbers differ, or it went away"
    return str(state.get("state"))


def _wait_while(c, state: dict, states: tuple[str, ...]) -> dict:
    while state["state"] in states:
        time.sleep(0.2)
        state = c.request("GET", "/v1/pairing")
    return state


def _read_answer_while(c) -> str | None:
    """The owner's typed answer, or None once the window is decided without it."""
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0.3)
        if ready:
            return sys.stdin.readline().strip().lower()
        if c.request("GET", "/v1/pairing")["state"] != "confirm":
            return None


def _join(args: argparse.Namespace, paths: Paths) -> int:
    # the new device's side (aiohttp, SPAKE2, mDNS) loads only for `maia pair`, not with maia
    from .client import find_pairing_members

    if not args.code:
        raise UserError("give the code the member shows: maia pair --code XXXX-XXXX")
    if not args.yes and not sys.stdin.isatty():
        raise UserError("maia pair asks you to compare two numbers and needs a terminal for "
                        "it; in a script, pass --yes (it skips the comparison)")
    key = DeviceKey.load(paths.key)
    target = args.target[0] if args.target else None
    if target is None:
        say("Looking for a member with an open pairing window on the LAN...")
        found = asyncio.run(find_pairing_members())
        if not found:
            raise UserError("no member with an open pairing window was found on the LAN; "
                            "give its address: maia pair HOST:7412 --code ...")
        if len(found) > 1:
            listing = ", ".join(f"{d[:15]} at {a}" for d, a in found)
            raise UserError(f"several members are pairing ({listing}); name one: maia pair "
                            "HOST:PORT --code ...")
        target = found[0][1]
    try:
        with locked_store(paths.root) as store:
            return _pair_into(store, key, target, args, paths)
    except DataDirBusy as exc:
        raise UserError(str(exc)) from None


def _pair_into(store, key, target: str, args: argparse.Namespace, paths: Paths) -> int:
    # the new device's side (aiohttp, SPAKE2) loads only for `maia pair`, not with maia
    from .client import PairFailed, default_device_name, pair_with

    try:
        if stored_mesh_id(store) is not None:
            raise UserError("this device already belongs to a mesh")
        name = args.name or NodeConfig.load(paths.config).name or default_device_name()

        def confirm(sas: str, member: str) -> bool:
            say(f"Connected to {member}; it proved it knows the code.")
            say(f"Check that the other device shows:  {sas}")
            if args.yes:
                say("--yes: not compared (scripts only). Waiting for the other device's owner...")
                sys.stdout.flush()
                return True
            sys.stdout.write("Do both screens show the same number? [y/N] ")
            sys.stdout.flush()
            ok = sys.stdin.readline().strip().lower() in ("y", "yes")
            if ok:
                say("Waiting for the other device's owner to confirm...")
                sys.stdout.flush()
            return ok

        result = asyncio.run(pair_with(target, key=key, store=store, code=args.code, name=name,
                                       confirm=confirm))
    except PairFailed as exc:
        raise UserError(f"pairing failed ({exc.code}): {exc}") from None
    say(f"Joined mesh {result.mesh_id.hex()[:16]}. Run 'maia up' to sync.")
    return 0
