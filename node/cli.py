"""The ``maia`` command: set up a device, run its node, and work with its identity and memory.

Commands talk to the running node over its local API; when no node runs they act on the store
directly (holding the node's lock). Mistakes get one clear sentence and a non-zero exit, never
a traceback. Heavy modules are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Any

from .config import ENV_DATA_DIR, ConfigError, NodeConfig, Paths, resolve_data_dir

log = logging.getLogger("maia")

EXIT_USAGE = 2
EXIT_FAIL = 1


class UserError(Exception):
    """A mistake or a state the user can fix; shown as one sentence."""


# -- helpers ------------------------------------------------------------------------------------
def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _backend(paths: Paths):
    from .backends import ApiBackend, OfflineBackend
    from .client import NodeClient, NodeNotRunning

    try:
        return ApiBackend(NodeClient(paths))
    except NodeNotRunning:
        pass
    from crdt.identity import NoMeshError
    from crdt.keys import KeyFileError

    from .node import DataDirBusy

    try:
        return OfflineBackend(paths)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    except NoMeshError as exc:
        raise UserError(str(exc)) from None
    except DataDirBusy:
        raise UserError(
            "a node holds this data dir but does not answer on its API; is it starting up?"
        ) from None


# -- init ---------------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace, paths: Paths) -> int:
    from crdt.keys import DeviceKey

    if paths.key.exists():
        key = DeviceKey.load(paths.key)  # also checks its permissions
        if args.new_mesh and not _has_mesh(paths):
            _new_mesh(paths, key, args)
            return 0
        if args.exist_ok:
            _say(f"This device is already set up (device id {key.device_id}).")
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
    _say(f"Created this device's key: {paths.key}")
    _say(f"Device id: {key.device_id}")
    if args.new_mesh:
        _new_mesh(paths, key, args)
    else:
        _say("This device belongs to no mesh yet. To join your mesh, run 'maia pair accept' on "
             "a device that is a member and then 'maia pair --code CODE' here; only for a first "
             "device, 'maia init --new-mesh' starts a new mesh.")
    return 0


def _has_mesh(paths: Paths) -> bool:
    from crdt.identity import stored_mesh_id
    from crdt.store import Store

    store = Store(paths.root)
    try:
        return stored_mesh_id(store) is not None
    finally:
        store.close()


def _new_mesh(paths: Paths, key, args: argparse.Namespace) -> None:
    from crdt.identity import create_mesh

    from .node import locked_store

    cfg = NodeConfig.load(paths.config)
    with locked_store(paths.root) as store:
        repo = create_mesh(store, key, args.mesh_name or f"{cfg.name} mesh", cfg.name)
        _say(f"Started a new mesh {repo.mesh_id.hex()[:16]} with this device as its first member.")


# -- up -----------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace, paths: Paths) -> int:
    import asyncio
    import signal

    from crdt.identity import NoMeshError
    from crdt.keys import KeyFileError

    from .node import DataDirBusy, Node

    cfg = NodeConfig.load(paths.config)
    if args.listen:
        cfg.listen = args.listen
    if args.port is not None:
        cfg.port = args.port
    if args.peer_listen:
        cfg.peer_listen = args.peer_listen
    if args.peer_port is not None:
        cfg.peer_port = args.peer_port

    async def run() -> None:
        node = Node(paths.root, cfg)
        await node.start()
        _say(f"maia node {node.key.device_id} ({cfg.name})")
        _say(f"  local API http://{node.host}:{node.port}")
        _say(f"  peers     {cfg.peer_listen}:{node.peer_port}")
        _say("Press Ctrl-C to stop.")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        await node.stop()
        _say("Node stopped.")

    try:
        asyncio.run(run())
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    except NoMeshError as exc:
        raise UserError(str(exc)) from None
    except DataDirBusy as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on {cfg.listen}:{cfg.port}: {exc.strerror}") from None
    return 0


# -- status & profile ---------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    backend = _backend(paths)
    try:
        st = backend.status()
    finally:
        backend.close()
    if args.json:
        _json(st)
        return 0
    mesh = st.get("mesh") or {}
    _say(f"Device     {st['device_id']}  ({st['name']})")
    if st.get("revoked"):
        r = st["revoked"]
        _say(f"REVOKED    this device was revoked by {r.get('by_name') or r.get('by')} at "
             f"{r.get('at')}{' (' + r['reason'] + ')' if r.get('reason') else ''}; it can no "
             "longer change the mesh's documents")
    _say(f"Node       {'running on ' + st['listening'] if st.get('running') else 'not running'}")
    _say(f"Mesh       {mesh.get('name', '-')}  ({str(mesh.get('id', ''))[:16]})")
    _say(f"Members    {len(st.get('members', []))}")
    _say(f"Memory     {st.get('memory_entries', 0)} entries")
    for layer, info in st["layers"].items():
        _say(f"Layer      {layer:<9} format {info['format_version']}  "
             f"{info['size_bytes'] / 1024:.0f} KiB  {info['documents']} document(s)")
    for p in st.get("peers", []):
        state = "connected" if p.get("connected") else "not connected"
        _say(f"Peer       {p.get('address') or '-'}  {p.get('device_id') or ''}  {state}")
    for name, section in st.items():  # a feature's section may carry a one-line summary
        if isinstance(section, dict) and isinstance(section.get("summary"), str):
            _say(f"{name.capitalize():<10} {section['summary']}")
    return 0


def cmd_profile(args: argparse.Namespace, paths: Paths) -> int:
    from crdt.identity import PROFILE_FIELDS

    backend = _backend(paths)
    try:
        if args.profile_cmd == "set":
            changes: dict[str, Any] = {}
            for item in args.fields:
                name, sep, value = item.partition("=")
                if not sep or name not in PROFILE_FIELDS:
                    raise UserError(
                        f"'{item}' is not FIELD=VALUE with FIELD one of {', '.join(PROFILE_FIELDS)}"
                    )
                changes[name] = value or None
            profile = backend.profile_set(changes)
        else:
            profile = backend.profile_get()
    finally:
        backend.close()
    if args.json:
        _json(profile)
    elif not profile:
        _say("The profile is empty. Set it with: maia profile set display_name=Ada")
    else:
        for k in sorted(profile):
            _say(f"{k:<13} {profile[k]}")
    return 0


# -- memory ---------------------------------------------------------------------------------------
def _print_entry(e: dict[str, Any], full: bool = False) -> None:
    tags = " ".join("#" + t for t in e.get("tags", []))
    if full:
        _say(f"{e['id']}  {e['kind']}  {e['created_at']}  by {e['author'][:15]}")
        if tags:
            _say(tags)
        _say()
        _say(e["text"])
    else:
        first = e["text"].splitlines()[0] if e["text"] else ""
        _say(f"{e['id']}  {e['created_at'][:16]}  {first[:70]}" + (f"  {tags}" if tags else ""))


def _read_import(path: str, kind: str) -> list[dict[str, Any]]:
    """JSON Lines ({"text", "kind", "tags"} per line) or plain text (one entry per line)."""
    src = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    items = []
    with src:
        for n, line in enumerate(src, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    item = json.loads(line)
                except ValueError:
                    raise UserError(f"{path}:{n} is not valid JSON") from None
                if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                    raise UserError(f"{path}:{n} needs a \"text\" string")
                items.append({"text": item["text"], "kind": item.get("kind", kind),
                              "tags": list(item.get("tags", []))})
            else:
                items.append({"text": line, "kind": kind, "tags": []})
    return items


def _import(backend, args: argparse.Namespace) -> None:
    try:
        items = _read_import(args.file, args.kind)
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    total, done, step = len(items), 0, 1000
    import time

    t0 = time.monotonic()
    tty = sys.stderr.isatty()
    for i in range(0, total, step):
        done += backend.memory_import(items[i : i + step])
        rate = done / max(1e-9, time.monotonic() - t0)
        if tty:
            sys.stderr.write(f"\rimporting: {done}/{total} entries ({rate:,.0f}/s)")
        elif done == total or (done // step) % 10 == 0:
            sys.stderr.write(f"importing: {done}/{total} entries ({rate:,.0f}/s)\n")
        sys.stderr.flush()
    if tty:
        sys.stderr.write("\n")
    _say(f"Imported {done} entries in {time.monotonic() - t0:.1f} s.")


def cmd_memory(args: argparse.Namespace, paths: Paths) -> int:
    from .backends import NotFound
    from .client import ApiError

    backend = _backend(paths)
    try:
        sub = args.memory_cmd
        from . import cli_memory_versions as versions

        if versions.wants(args):  # history, show --at, restore, undelete, deleted
            versions.run(args, backend, _say, _json)
        elif sub == "add":
            text = args.text if args.text != "-" else sys.stdin.read()
            entry = backend.memory_add(text, args.kind, args.tag or [])
            if args.json:
                _json(entry)
            else:
                _say(f"Added {entry['id']}")
        elif sub == "import":
            _import(backend, args)
        elif sub in ("list", "search"):
            filters = {
                "kind": args.kind, "tag": args.tag, "author": args.author,
                "since": args.since, "until": args.until, "limit": args.limit,
            }
            if sub == "search":  # ranked (SPEC-003 §12): the author filter is called device
                filters["device"] = filters.pop("author")
                entries = backend.memory_search(" ".join(args.words), args.mode, filters)
            else:
                entries = backend.memory_list(filters | {"query": args.query})
            if args.json:
                _json(entries)
            elif not entries:
                _say("No memory entries match.")
            else:
                for e in entries:
                    _print_entry(e)
        elif sub == "show":
            e = backend.memory_show(args.id)
            if args.json:
                _json(e)
            else:
                _print_entry(e, full=True)
                versions.print_concurrent(e, _say)
        elif sub == "edit":
            changes: dict[str, Any] = {}
            if args.text is not None:
                changes["text"] = args.text
            if args.add_tag:
                changes["add_tags"] = args.add_tag
            if args.remove_tag:
                changes["remove_tags"] = args.remove_tag
            if not changes:
                raise UserError("say what to change: --text, --add-tag or --remove-tag")
            e = backend.memory_edit(args.id, changes)
            _json(e) if args.json else _say(f"Updated {e['id']}")
        elif sub == "delete":
            backend.memory_delete(args.id)
            _say(f"Deleted {args.id} (on every device; its history keeps who deleted it).")
    except (NotFound, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status != 404:
            raise UserError(str(exc)) from None
        raise UserError(f"no memory entry has the id '{getattr(args, 'id', '')}'") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        backend.close()
    return 0


# -- peers --------------------------------------------------------------------------------------
def cmd_peer(args: argparse.Namespace, paths: Paths) -> int:
    from .backends import ApiBackend, NotFound
    from .client import ApiError
    from .config import parse_host_port

    backend = _backend(paths)
    try:
        if args.peer_cmd == "add":
            parse_host_port(args.address)
            backend.peer_add(args.address)
            when = "the node dials it now" if isinstance(backend, ApiBackend) else (
                "no node is running, so the node will dial it when it starts ('maia up')")
            _say(f"Added static peer {args.address}; {when}, retrying with backoff.")
        elif args.peer_cmd == "remove":
            backend.peer_remove(args.address)
            _say(f"Removed static peer {args.address}.")
    except (NotFound, ApiError) as exc:
        raise UserError(f"{args.address} is not a static peer" if isinstance(exc, NotFound)
                        else str(exc)) from None
    finally:
        backend.close()
    return 0


def cmd_peers(args: argparse.Namespace, paths: Paths) -> int:
    backend = _backend(paths)
    try:
        peers = backend.peers()
        nearby = (backend.status().get("discovery") or {}).get("nearby", [])
    finally:
        backend.close()
    if args.json:
        _json({"peers": peers, "nearby": nearby})
        return 0
    if not peers:
        _say("No peers yet. Nodes of your mesh on this LAN are found by themselves; elsewhere "
             "add one with: maia peer add HOST:PORT")
    for p in [] if args.json else peers:
        state = "connected" if p.get("connected") else "not connected"
        err = f"  last error: {p['last_error']}" if p.get("last_error") else ""
        _say(f"{p.get('address') or '-':<22} {p.get('device_id') or '(unknown device)'}  "
             f"{state}{err}")
    for n in nearby:
        _say(f"{', '.join(n['addresses']):<22} {n['device_id']}  nearby, not paired "
             "(pair it with: maia pair accept)")
    return 0


# -- devices ------------------------------------------------------------------------------------
def cmd_device(args: argparse.Namespace, paths: Paths) -> int:
    from crdt.identity import join_request
    from crdt.keys import DeviceKey

    from .client import ApiError

    if args.device_cmd == "request":
        key = DeviceKey.load(paths.key)
        _say("Give this join request to a device that is already in your mesh, and run there:")
        _say(f"  maia device add {join_request(key)} --name NAME")
        return 0
    backend = _backend(paths)
    try:
        if args.device_cmd == "revoke":
            body: dict[str, Any] = {"keep_all": args.keep_all, "reason": args.reason or ""}
            if args.keep:
                body["keep"] = args.keep
            result = backend.device_revoke(args.device, body)
            _say(f"Revoked {result['device_id']}. It is cut off now and can never rejoin; its "
                 "changes after this point are refused by every device.")
        elif args.device_cmd == "add":
            result = backend.device_add(args.request, args.name)
            _say(f"Added {result['device_id']} to the mesh. On that device, run:")
            _say(f"  maia join {result['invitation']}")
        else:
            rows = backend.devices()
            if args.json:
                _json(rows)
            for r in [] if args.json else rows:
                me = "  (this device)" if r["this_device"] else ""
                seen = _ago(r.get("last_seen")) if not r["this_device"] else "now"
                _say(f"{r['device_id']}  {r['status']:<8} {r['name']:<14} last seen {seen}{me}")
    except ApiError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        backend.close()
    return 0


def _ago(ts: float | None) -> str:
    import time

    if not ts:
        return "never"
    secs = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit} ago"
    return f"{secs} s ago"


def cmd_join(args: argparse.Namespace, paths: Paths) -> int:
    from crdt.identity import accept_invitation
    from crdt.keys import DeviceKey

    from .node import DataDirBusy, locked_store

    key = DeviceKey.load(paths.key)
    try:
        with locked_store(paths.root) as store:
            repo = accept_invitation(store, key, args.invitation)
    except (DataDirBusy, ValueError) as exc:
        raise UserError(str(exc)) from None
    _say(f"Joined mesh {repo.mesh_id.hex()[:16]}. Add a peer (maia peer add HOST:PORT) and run "
         "'maia up' to sync.")
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maia",
        description="maia-node: sync your identity and memory across your own devices.",
        epilog=f"The data dir is --data-dir, else ${ENV_DATA_DIR}, else ~/.local/share/maia.",
    )
    p.add_argument("--data-dir", help="where this node keeps its key, store and config")
    p.add_argument("--log-level", default=None,
                   help="DEBUG, INFO, WARNING or ERROR (default: INFO for 'up', else WARNING)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="json: one JSON object per line, for a service's journal")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("init", help="create this device's key (and, with --new-mesh, a mesh)",
                       description="Create this device's Ed25519 key and config. Never "
                       "overwrites an existing key.")
    s.add_argument("--new-mesh", action="store_true", help="start a new mesh with this device")
    s.add_argument("--name", help="a name for this device (default: the host name)")
    s.add_argument("--mesh-name", help="a name for the new mesh")
    s.add_argument("--port", type=int, help="TCP port the node will listen on (default 7411)")
    s.add_argument("--exist-ok", action="store_true",
                   help="succeed without changes when the device is already set up")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("up", help="run the node in the foreground",
                       description="Run the node until Ctrl-C or SIGTERM (clean shutdown).")
    s.add_argument("--listen", help="address to bind (default 127.0.0.1; 0.0.0.0 for the LAN)")
    s.add_argument("--port", type=int, help="TCP port (default from config, 7411)")
    s.add_argument("--peer-listen",
                   help="address for the peer channel (default 0.0.0.0: other devices connect "
                   "here; only device-key authenticated, encrypted traffic is served)")
    s.add_argument("--peer-port", type=int, help="TCP port for peers (default 7412)")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("status", help="show the device, mesh, layers and peers")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("profile", help="read or change the owner's profile (Identity layer)")
    psub = s.add_subparsers(dest="profile_cmd", required=True, metavar="get|set")
    g = psub.add_parser("get", help="show the profile")
    g.add_argument("--json", action="store_true")
    st = psub.add_parser("set", help="set fields: FIELD=VALUE (an empty VALUE clears)")
    st.add_argument("fields", nargs="+", metavar="FIELD=VALUE")
    st.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("memory", help="notes, conversations, facts and skills")
    msub = s.add_subparsers(dest="memory_cmd", required=True, metavar="SUBCOMMAND")
    a = msub.add_parser("add", help="add an entry (TEXT, or - to read stdin)")
    a.add_argument("text")
    a.add_argument("--kind", default="note",
                   choices=["note", "conversation", "fact", "skill", "journal"])
    a.add_argument("--tag", action="append", help="a tag (repeatable)")
    a.add_argument("--json", action="store_true")
    im = msub.add_parser(
        "import", help="add many entries from a file (JSON Lines or text lines)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Add many entries at once, from a file in UTF-8 with one entry per line.",
        epilog="""file format (one entry per line; empty lines are skipped):
  a line starting with { is a JSON object:
    "text"  the entry's text (required; a string of 1 to 262144 characters)
    "kind"  note, conversation, fact, skill or journal (default: --kind)
    "tags"  a list of tag strings (default: none)
  any other line is the text of one entry, of kind --kind, without tags

example (notes.jsonl):
  {"text": "Herons nest in colonies", "kind": "fact", "tags": ["birds"]}
  {"text": "Ask Ada about the heron survey"}
  Buy more notebooks""")
    im.add_argument("file", help="path, or - for stdin")
    im.add_argument("--kind", default="note",
                    choices=["note", "conversation", "fact", "skill", "journal"],
                    help="the kind of entries that do not name one (default: note)")
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
    sh = msub.add_parser("show", help="show one entry")
    sh.add_argument("id")
    sh.add_argument("--at", metavar="VERSION", help="as it was at a version (see history)")
    sh.add_argument("--json", action="store_true")
    ed = msub.add_parser("edit", help="change an entry's text or tags")
    ed.add_argument("id")
    ed.add_argument("--text")
    ed.add_argument("--add-tag", action="append")
    ed.add_argument("--remove-tag", action="append")
    ed.add_argument("--json", action="store_true")
    de = msub.add_parser("delete", help="forget an entry on every device")
    de.add_argument("id")
    hi = msub.add_parser("history", help="every version: values, device (verified), time")
    hi.add_argument("id")
    hi.add_argument("--full", action="store_true", help="whole texts, not first lines")
    hi.add_argument("--json", action="store_true")
    from .cli_memory_versions import add_parsers as add_version_parsers

    add_version_parsers(msub)
    s.set_defaults(func=cmd_memory)

    s = sub.add_parser("peer", help="add or remove a static peer (HOST:PORT)")
    psub = s.add_subparsers(dest="peer_cmd", required=True, metavar="add|remove")
    for name in ("add", "remove"):
        x = psub.add_parser(name, help=f"{name} a static peer")
        x.add_argument("address", metavar="HOST:PORT")
    s.set_defaults(func=cmd_peer)

    s = sub.add_parser("device", help="enrol devices into the mesh")
    dsub = s.add_subparsers(dest="device_cmd", required=True,
                            metavar="request|add|revoke|list")
    dsub.add_parser("request", help="on a new device: print its join request")
    x = dsub.add_parser("add", help="on a member: admit a device by its join request")
    x.add_argument("request", metavar="JOIN_REQUEST")
    x.add_argument("--name", required=True, help="a name for the new device")
    x = dsub.add_parser("revoke", help="remove a device for good (lost or stolen)")
    x.add_argument("device", metavar="DEVICE_ID")
    x.add_argument("--keep", action="append", metavar="CERT_ID",
                   help="a roster entry the revoked device signed (a device it admitted or "
                        "revoked) that stays valid; repeatable")
    x.add_argument("--keep-all", action="store_true",
                   help="keep every device the revoked one admitted and every revocation it made")
    x.add_argument("--reason", help="a note kept with the revocation")
    x = dsub.add_parser("list", help="members and revoked devices")
    x.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_device)

    s = sub.add_parser("devices", help="members of the mesh and revoked devices")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_device, device_cmd="list")

    s = sub.add_parser("join", help="on a new device: join the mesh an invitation names")
    s.add_argument("invitation", metavar="INVITATION")
    s.set_defaults(func=cmd_join)

    s = sub.add_parser("peers", help="list peers and their connection state")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_peers)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


# Modules that add commands: each has ``register(subparsers)`` and keeps its top-level imports
# light (heavy imports go inside the command functions), so ``maia`` starts fast.
COMMAND_MODULES: list[str] = [
    "node.cli_pairing",
    "node.cli_service",
    "node.cli_sync",
    "node.routing.cli",
    "node.backup.cli",
    "node.sessions.cli",
    "node.mcp.cli",
    "node.consolidation.cli",
]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    level = (args.log_level or ("INFO" if args.command == "up" else "WARNING")).upper()
    from .logs import configure_logging

    configure_logging(level, args.log_format)
    paths = Paths(resolve_data_dir(args.data_dir))
    from crdt.keys import KeyFileError
    from crdt.store import StoreError

    try:
        return args.func(args, paths)
    except UserError as exc:
        sys.stderr.write(f"maia: {exc}\n")
        return EXIT_FAIL
    except (KeyFileError, ConfigError, StoreError) as exc:  # StoreError: e.g. a full disk
        sys.stderr.write(f"maia: {exc}\n")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


# Public names for command modules (see COMMAND_MODULES).
say = _say
print_json = _json
backend_for = _backend


if __name__ == "__main__":
    # Run through the importable module so command modules share one UserError class.
    from node.cli import main as _main

    sys.exit(_main())
