"""``maia service install|uninstall``: run the node as a systemd service (user or system)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Paths
from .common import UserError, say
from .unit import UNIT_NAME, install, plan_unit, uninstall, unit_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="run the node as a systemd service (install/uninstall)")
    s = p.add_subparsers(dest="service_cmd", required=True, metavar="install|uninstall")
    for name, text in (("install", "write the unit (idempotent) and say how to start it"),
                       ("uninstall", "remove the unit this command wrote")):
        x = s.add_parser(name, help=text)
        x.add_argument("--system", action="store_true",
                       help="a system unit in /etc/systemd/system (root) instead of a user unit")
        x.add_argument("--unit-dir", help="write the unit here instead of the systemd default")
        if name == "install":
            x.add_argument("--listen",
                           help="bind the local API to this address (e.g. on a home server); "
                           "the default keeps it on loopback")
            x.add_argument("--user", help="the account a system unit runs as")
    p.set_defaults(func=cmd_service)


def cmd_service(args: argparse.Namespace, paths: Paths) -> int:
    directory = Path(args.unit_dir) if args.unit_dir else None
    if args.service_cmd == "uninstall":
        path = (directory or unit_dir(args.system)) / UNIT_NAME
        try:
            removed = uninstall(path)
        except FileExistsError as exc:
            raise UserError(str(exc)) from None
        ctl = "systemctl" if args.system else "systemctl --user"
        if removed:
            say(f"Removed {path}. Stop the running service with: {ctl} disable --now maia-node")
        else:
            say(f"No unit at {path}; nothing to remove.")
        return 0
    if not paths.key.exists():
        raise UserError("set up this device first: maia init --new-mesh (or pair it)")
    plan = plan_unit(paths.root.resolve(), system=args.system, listen=args.listen,
                     directory=directory, user=args.user)
    try:
        state = install(plan)
    except FileExistsError as exc:
        raise UserError(str(exc)) from None
    except PermissionError:
        raise UserError(f"cannot write {plan.path}: run as root for --system") from None
    say(f"{state.capitalize()}: {plan.path}")
    say("Start it now and at every boot:")
    say(f"  {plan.ctl} daemon-reload && {plan.ctl} enable --now maia-node")
    if not plan.system:
        say("  loginctl enable-linger $USER    # keep it running after you log out")
    say(f"Stop it:      {plan.ctl} stop maia-node")
    say(f"Read its log: {plan.journal} -u maia-node -f")
    return 0
