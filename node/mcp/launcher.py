"""``maia mcp``: give an agent CLI maia-node's MCP server over stdio, with a session token only.

The agent CLI starts this command as its MCP server. It finds the local node, and:
- with ``MAIA_SESSION_TOKEN`` already set (an agent runtime that registered a session itself),
  replaces itself with the server (``node.mcp.stdio``) and never reads the local API token;
- otherwise registers a session for the agent (SPEC-004 §2.2, with the scopes of §2.11), then
  starts the server as a child whose environment and arguments carry only that session token
  and the node's URL (SPEC-004 §15.2). This parent stays as a small broker: when the node says
  the session ended (a node restart), it registers a new one and hands the token over a private
  socket; when the server exits, it ends the session.
Stdlib only (plus the hook's tiny HTTP client), so it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..sessions import localhttp
from ..sessions.hook import agent_process

SERVER_MODULE = "node.mcp.stdio"


def node_url(data_dir: Path) -> str:
    host, port = localhttp.node_address(data_dir)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def server_env(url: str, token: str, session_id: str = "") -> dict[str, str]:
    """The child's environment: ours, minus anything that names or holds a maia credential,
    plus the node URL and the session token."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAIA_") or k in ("MAIA_DATA_DIR", "MAIA_MCP_LOG")}
    env.update({"MAIA_NODE_URL": url, "MAIA_SESSION_TOKEN": token})
    if session_id:
        env["MAIA_SESSION_ID"] = session_id
    return env


class Broker:
    """Registers sessions with the local token; the token never leaves this process."""

    def __init__(self, data_dir: Path, agent: str, scopes: list[str] | None) -> None:
        self.data_dir = data_dir
        self.agent = agent
        self.scopes = scopes
        self.address = localhttp.node_address(data_dir)
        self.session_id = ""
        self.heartbeat_s: float = 10

    def register(self) -> dict[str, Any] | None:
        body: dict[str, Any] = {"agent": self.agent, "pid": agent_process(),
                                "cwd": os.getcwd(), "task": "", "cli_session_id": "",
                                "mcp": True}
        body = {k: v for k, v in body.items() if v != ""}
        if self.scopes is not None:
            body["scopes"] = self.scopes
        status, answer = localhttp.request(self.address, "POST", "/v1/sessions",
                                           localhttp.local_token(self.data_dir), body)
        if status != 201 or not isinstance(answer, dict) or "token" not in answer:
            detail = answer.get("detail") if isinstance(answer, dict) else ""
            sys.stderr.write(f"maia mcp: the node refused a session ({status}): {detail}\n")
            return None
        self.session_id = answer["session_id"]
        self.heartbeat_s = float(answer.get("heartbeat_s", 10))
        return answer

    def end(self) -> None:
        if self.session_id:
            with contextlib.suppress(Exception):
                localhttp.request(self.address, "DELETE", f"/v1/sessions/{self.session_id}",
                                  localhttp.local_token(self.data_dir))

    def serve_renewals(self, sock: socket.socket) -> None:
        """Answer the server's ``renew`` lines with a fresh session (a JSON line) until EOF."""
        buf = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip() != b"renew":
                    continue
                try:
                    answer = self.register()
                except localhttp.NodeUnavailable:
                    answer = None
                reply = ({"session_id": answer["session_id"], "token": answer["token"]}
                         if answer else {})
                with contextlib.suppress(OSError):
                    sock.sendall(json.dumps(reply).encode() + b"\n")


def run(data_dir: Path, agent: str, scopes: list[str] | None) -> int:
    try:
        url = node_url(data_dir)
    except localhttp.NodeUnavailable as exc:
        sys.stderr.write(f"maia mcp: {exc}; start the node with `maia up`\n")
        return 1
    given = os.environ.get("MAIA_SESSION_TOKEN", "")
    argv = [sys.executable, "-m", SERVER_MODULE]
    if given:
        env = server_env(url, given, os.environ.get("MAIA_SESSION_ID", ""))
        os.execve(sys.executable, argv, env)
    broker = Broker(data_dir, agent, scopes)
    try:
        answer = broker.register()
    except localhttp.NodeUnavailable as exc:
        sys.stderr.write(f"maia mcp: {exc}\n")
        return 1
    if answer is None:
        return 1
    mine, theirs = socket.socketpair()
    env = server_env(url, answer["token"], answer["session_id"])
    env["MAIA_MCP_RENEW_FD"] = str(theirs.fileno())
    env["MAIA_HEARTBEAT_S"] = str(broker.heartbeat_s)
    del answer
    child = subprocess.Popen(argv, env=env, pass_fds=(theirs.fileno(),))
    theirs.close()
    threading.Thread(target=broker.serve_renewals, args=(mine,), daemon=True).start()

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        code = child.wait()
    finally:
        broker.end()
        mine.close()
    return code
