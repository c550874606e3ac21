"""``maia cortex list`` (what runs where) and ``maia ask`` (a quick prompt from the shell).

Both talk to the running node's local API with its token; ``ask`` reads the SSE stream with
the standard library and prints the answer as it arrives. Imports stay light: this module is
loaded every time ``maia`` starts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import urllib.parse
from typing import Any
from urllib.parse import unquote

from ..cli.client import ApiError, NodeNotRunning
from ..cli.common import UserError, print_json, running_node, say
from ..config import Paths

STREAM_READ_TIMEOUT = 120.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cortex", help="cortices in the mesh: what runs where, health and load")
    csub = p.add_subparsers(dest="cortex_cmd", required=True, metavar="list|allow")
    x = csub.add_parser("list", help="every cortex reachable from this node")
    x.add_argument("--json", action="store_true")
    w = csub.add_parser("allow", help="let this node send prompts to a peer's cortex "
                        "(a peer's cortex first seen after the node's first 10 minutes waits "
                        "for this)")
    w.add_argument("device", help="the device id (or its start) of the peer, as `maia cortex "
                   "list` shows it")
    w.add_argument("name", nargs="?", help="the cortex; without it, every cortex the device "
                   "offers now")
    p.set_defaults(func=cmd_cortex)

    a = sub.add_parser("ask", help="send a prompt to a cortex and print the answer as it streams")
    a.add_argument("prompt", help="the prompt, or - to read it from stdin")
    a.add_argument("--cortex", default="auto",
                   help="a cortex name, cortex/<kind>, or auto (the default: the frontal "
                   "lobe chooses)")
    a.add_argument("--system", help="a system message to send first")
    a.set_defaults(func=cmd_ask)


def cmd_cortex(args: argparse.Namespace, paths: Paths) -> int:
    client = running_node(paths)
    if args.cortex_cmd == "allow":
        body = {"device_id": args.device} | ({"name": args.name} if args.name else {})
        try:
            done = client.request("POST", "/v1/cortices/allow", body)
        except (ApiError, NodeNotRunning) as exc:
            raise UserError(str(exc)) from None
        say(f"This node now sends prompts for {', '.join(done['approved'])} to "
            f"{done['device_id']} too (SPEC-006 §6.7).")
        return 0
    try:
        models = client.request("GET", "/v1/models")["data"]
    except (ApiError, NodeNotRunning) as exc:
        raise UserError(str(exc)) from None
    cortices = [m for m in models if "hosts" in m.get("maia", {})]
    if args.json:
        print_json(cortices)
        return 0
    if not cortices:
        say("No cortex is reachable. Add a [cortex.<name>] table to config.toml on a device "
            "and restart its node.")
        return 0
    say(f"{'CORTEX':<20} {'KIND':<21} {'WHERE':<34} {'HEALTH':<13} LOAD")
    for m in cortices:
        info = m["maia"]
        kind = info["kind"] + (" (remote)" if info.get("remote") else "")
        for host in info["hosts"]:
            where = "this device" if host["local"] else (host.get("name") or "peer")
            where = f"{where} {host['device_id'][:7]}"
            health = "ok" if host["healthy"] else "unhealthy"
            if host.get("online") is False:
                health = "offline"
            if host.get("cooling_down"):
                health = "cooling down"
            if host.get("name_conflict"):
                health = "NAME CONFLICT"
            if host.get("approved") is False:
                health = "NOT APPROVED"
            rtt = f"  rtt {host['rtt_ms']:.1f} ms" if host.get("rtt_ms") is not None else ""
            load = f"{host['in_flight']}/{host['max_concurrency']}{rtt}"
            if host.get("online") is False:
                load = f"last seen {host.get('last_seen') or 'unknown'}"
            say(f"{m['id']:<20} {kind:<21} {where:<34} {health:<13} {load}")
            if host.get("approved") is False:
                say(f"{'':<20} sent no prompt until you approve it: maia cortex allow "
                    f"{host['device_id'][:15]} {m['id']}")
    for m in cortices:
        for c in m["maia"].get("conflicts", []):
            say(f"Name conflict: {c.get('name') or 'a peer'} {c['device_id'][:7]} also calls "
                f"its cortex {m['id']!r} ({c['model']}); this device defines {m['id']} itself "
                "and never sends it there. Rename one of them.")
    return 0


def cmd_ask(args: argparse.Namespace, paths: Paths) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise UserError("the prompt is empty")
    client = running_node(paths)
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    body = json.dumps({"model": args.cortex, "messages": messages, "stream": True})
    url = urllib.parse.urlsplit(client.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=STREAM_READ_TIMEOUT)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "Authorization": f"Bearer {client.token}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        })
        resp = conn.getresponse()
        if resp.status != 200:
            raise UserError(_problem_sentence(resp.status, resp.read()))
        host, cortex = (unquote(resp.getheader(h) or "") or None  # node.api.headers
                        for h in ("X-Maia-Cortex-Host", "X-Maia-Cortex"))
        _print_stream(resp)
    except OSError as exc:
        raise UserError(f"the node stopped answering: {exc}") from None
    finally:
        conn.close()
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stderr.write(f"(answered by cortex {cortex} on {host})\n")
    return 0


def _print_stream(resp: Any) -> None:
    """Write each chunk's text as it arrives; an error event becomes a UserError."""
    event = ""
    for raw in resp:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            event = ""
            continue
        if line.startswith("event:"):
            event = line[6:].strip()
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if event == "error" or "error" in obj:
            sys.stdout.write("\n")
            error = obj.get("error") or {}
            raise UserError(f"the answer broke off: {error.get('message', 'unknown error')}")
        for choice in obj.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
    raise UserError("the answer ended without its closing marker")


def _problem_sentence(status: int, raw: bytes) -> str:
    try:
        problem = json.loads(raw)
    except ValueError:
        return f"the node answered HTTP {status}"
    text = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    if problem.get("available"):
        text += "; reachable: " + ", ".join(problem["available"])
    if problem.get("reasons"):
        text += "; " + "; ".join(
            f"{r.get('cortex')} on {str(r.get('host'))[:7]}: {r.get('reason')}"
            for r in problem["reasons"][:5]
        )
    return text
