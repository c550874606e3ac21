"""The node's own commands: ``maia init``, ``maia up``, ``maia status`` and ``maia profile``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from crdt import (
    PROFILE_FIELDS,
    DeviceKey,
    KeyFileError,
    NoMeshError,
    Store,
    create_mesh,
    stored_mesh_id,
)

from ..config import NodeConfig, Paths
from ..datadir import DataDirBusy, locked_store
from ..devices.cli import human_bytes
from .common import Target, UserError, on_target, print_json, say

log = logging.getLogger("maia")


def register(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser("init", help="create this device's key (and, with --new-mesh, a mesh)",
                            description="Create this device's Ed25519 key and config. Never "
                            "overwrites an existing key.")
    s.add_argument("--new-mesh", action="store_true", help="start a new mesh with this device")
    s.add_argument("--name", help="a name for this device (default: the host name)")
    s.add_argument("--mesh-name", help="a name for the new mesh")
    s.add_argument("--port", type=int, help="TCP port the node will listen on (default 7411)")
    s.add_argument("--exist-ok", action="store_true",
                   help="succeed without changes when the device is already set up")
    s.set_defaults(func=cmd_init)

    s = commands.add_parser("up", help="run the node in the foreground",
                            description="Run the node until Ctrl-C or SIGTERM (clean shutdown).")
    s.add_argument("--listen", help="address to bind (default 127.0.0.1; 0.0.0.0 for the LAN)")
    s.add_argument("--port", type=int, help="TCP port (default from config, 7411)")
    s.add_argument("--peer-listen",
                   help="address for the peer channel (default 0.0.0.0: other devices connect "
                   "here; only device-key authenticated, encrypted traffic is served)")
    s.add_argument("--peer-port", type=int, help="TCP port for peers (default 7412)")
    s.set_defaults(func=cmd_up)

    s = commands.add_parser("status", help="show the device, mesh, layers and peers")
    s.add_argument("--json", action="store_true")
    on_target(s, cmd_status)

    s = commands.add_parser("profile", help="read or change the owner's profile (Identity layer)")
    psub = s.add_subparsers(dest="profile_cmd", required=True, metavar="get|set")
    g = psub.add_parser("get", help="show the profile")
    g.add_argument("--json", action="store_true")
    st = psub.add_parser("set", help="set fields: FIELD=VALUE (an empty VALUE clears)")
    st.add_argument("fields", nargs="+", metavar="FIELD=VALUE")
    st.add_argument("--json", action="store_true")
    on_target(s, cmd_profile)


# -- init ---------------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace, paths: Paths) -> int:
    if paths.key.exists():
        key = DeviceKey.load(paths.key)  # also checks its permissions
        if args.new_mesh and not _has_mesh(paths):
            _new_mesh(paths, key, args)
            return 0
        if args.exist_ok:
            say(f"This device is already set up (device id {key.device_id}).")
            return 0
        raise UserError(
            f"a device key already exists at {paths.key} (device id {key.device_id}); "
            "it was left untouched"
        )
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.root, 0o700)  # SPEC-001 §3.2: the data dir is the owner's alone
    key = DeviceKey.generate()
    key.save(paths.key)
    cfg = NodeConfig.load(paths.config)
    if args.name:
        cfg.name = args.name
    if args.port is not None:
        cfg.port = args.port
    cfg.save(paths.config)
    say(f"Created this device's key: {paths.key}")
    say(f"Device id: {key.device_id}")
    if args.new_mesh:
        _new_mesh(paths, key, args)
    else:
        say("This device belongs to no mesh yet. To join your mesh, run 'maia pair accept' on "
            "a device that is a member and then 'maia pair --code CODE' here; only for a first "
            "device, 'maia init --new-mesh' starts a new mesh.")
    return 0


def _has_mesh(paths: Paths) -> bool:
    """Read-only and without the data-dir lock: a running node may hold it, and a writable
    open could set its Runtime aside (SPEC-001 §7.3) under it."""
    if not (paths.root / "identity" / "data.mdb").is_file():
        return False
    store = Store(paths.root, readonly=True, layers=("identity",))
    try:
        return stored_mesh_id(store) is not None
    finally:
        store.close()


def _new_mesh(paths: Paths, key: DeviceKey, args: argparse.Namespace) -> None:
    cfg = NodeConfig.load(paths.config)
    with locked_store(paths.root) as store:
        repo = create_mesh(store, key, args.mesh_name or f"{cfg.name} mesh", cfg.name)
        say(f"Started a new mesh {repo.mesh_id.hex()[:16]} with this device as its first member.")


# -- up -----------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace, paths: Paths) -> int:
    cfg = NodeConfig.load(paths.config)
    if args.listen:
        cfg.listen = args.listen
    if args.port is not None:
        cfg.port = args.port
    if args.peer_listen:
        cfg.peer_listen = args.peer_listen
    if args.peer_port is not None:
        cfg.peer_port = args.peer_port
    try:
        asyncio.run(_run_node(paths, cfg))
    except (KeyFileError, NoMeshError, DataDirBusy) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on {cfg.listen}:{cfg.port}: {exc.strerror}") from None
    return 0


async def _run_node(paths: Paths, cfg: NodeConfig) -> None:
    # only `maia up` runs a node: every other command starts without aiohttp and the features
    from ..memtrim import limit_arenas  # with the node: only `maia up` caps the arenas
    from ..node import Node  # see above

    limit_arenas()  # before any thread starts (node/memtrim.py says why)
    node = Node(paths.root, cfg)
    await node.start()
    say(f"maia node {node.key.device_id} ({cfg.name})")
    say(f"  local API http://{node.host}:{node.port}")
    say(f"  peers     {cfg.peer_listen}:{node.peer_port}")
    say("Press Ctrl-C to stop.")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await node.stop()
    say("Node stopped.")


# -- status & profile ---------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, target: Target) -> int:
    st = target.status()
    if args.json:
        print_json(st)
        return 0
    mesh = st.get("mesh") or {}
    say(f"Device     {st['device_id']}  ({st['name']})")
    if st.get("revoked"):
        r = st["revoked"]
        say(f"REVOKED    this device was revoked by {r.get('by_name') or r.get('by')} at "
            f"{r.get('at')}{' (' + r['reason'] + ')' if r.get('reason') else ''}; it can no "
            "longer change the mesh's documents")
    say(f"Node       {'running on ' + st['listening'] if st.get('running') else 'not running'}")
    say(f"Mesh       {mesh.get('name', '-')}  ({str(mesh.get('id', ''))[:16]})")
    say(f"Members    {len(st.get('members', []))}")
    say(f"Memory     {st.get('memory_entries', 0)} entries")
    for layer, info in st["layers"].items():
        say(f"Layer      {layer:<9} format {info['format_version']}  "
            f"{info['size_bytes'] / 1024:.0f} KiB  {info['documents']} document(s)")
    held_back = st.get("quarantine") or {}
    if held_back.get("changes"):
        say(f"Quarantine {held_back['changes']} change(s) in {held_back['documents']} "
            "document(s) set aside: their authors were not members when the roster was "
            "checked (kept, never synced; taken back if the roster allows them again)")
    if held_back.get("dropped_documents"):
        say(f"Dropped    {held_back['dropped_documents']} document(s) nobody saw, dropped "
            "here by the owner (maia device storage)")
    for e in st.get("equivocations") or []:  # SPEC-005 §6.1 f: a copied key or a forked dir
        who = f"{e.get('name') or 'a device'} ({str(e.get('device_id'))[:15]}, {e.get('roster')})"
        say(f"FORKED     {who} signed two different changes with one number in "
            f"{e.get('document') or 'a document'}: its key is copied or its data dir was forked; "
            f"if you did not restore it from a copy, revoke it (maia device revoke)")
    for row in st.get("storage_by_device", [])[:5]:  # who fills this disk (SPEC-005 §6.6)
        say(f"Stored by  {row['device_id']}  {human_bytes(row['bytes'])}  ({row['roster']})")
    if len(st.get("storage_by_device", [])) > 5:
        say("Stored by  ... (all devices: maia device storage)")
    for p in st.get("peers", []):
        state = "connected" if p.get("connected") else "not connected"
        say(f"Peer       {p.get('address') or '-'}  {p.get('device_id') or ''}  {state}")
    for name, section in st.items():  # a feature's section may carry a one-line summary
        if isinstance(section, dict) and isinstance(section.get("summary"), str):
            say(f"{name.capitalize():<10} {section['summary']}")
    return 0


def cmd_profile(args: argparse.Namespace, target: Target) -> int:
    if args.profile_cmd == "set":
        profile = target.profile_set(_profile_changes(args.fields))
    else:
        profile = target.profile_get()
    if args.json:
        print_json(profile)
    elif not profile:
        say("The profile is empty. Set it with: maia profile set display_name=Ada")
    else:
        for k in sorted(profile):
            say(f"{k:<13} {profile[k]}")
    return 0


def _profile_changes(fields: list[str]) -> dict[str, Any]:
    """FIELD=VALUE words as a change (an empty VALUE clears the field)."""
    changes: dict[str, Any] = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or name not in PROFILE_FIELDS:
            raise UserError(
                f"'{item}' is not FIELD=VALUE with FIELD one of {', '.join(PROFILE_FIELDS)}"
            )
        changes[name] = value or None
    return changes
