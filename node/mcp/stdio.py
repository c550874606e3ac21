"""The MCP server over stdio: ``python -m node.mcp.stdio``, started by ``maia mcp``.

Its environment carries the node's URL and a session token (``MAIA_NODE_URL``,
``MAIA_SESSION_TOKEN``, ``MAIA_SESSION_ID``), never the local API token (SPEC-004 §15.2): this is
the process that parses what an agent sends, so it holds only what the agent may use. It keeps
its session alive with heartbeats, and when the node says the session ended it asks ``maia mcp``
(its parent) for a fresh one on the private socket named by ``MAIA_MCP_RENEW_FD``. stdout is the
MCP channel: everything else goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys

from .client import NodeAPI, Refused
from .tools import CURRENT_API, build_server

log = logging.getLogger("node.mcp")


class Renewer:
    """Asks the parent ``maia mcp`` for a new session over a socketpair: one line each way."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._lock = asyncio.Lock()
        self.session_id = os.environ.get("MAIA_SESSION_ID", "")

    def _exchange(self) -> dict:
        self._sock.settimeout(10)
        self._sock.sendall(b"renew\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = self._sock.recv(4096)
            if not chunk:
                return {}
            buf += chunk
        answer = json.loads(buf)
        return answer if isinstance(answer, dict) else {}

    async def __call__(self) -> str | None:
        async with self._lock:
            try:
                answer = await asyncio.to_thread(self._exchange)
            except (OSError, ValueError) as exc:
                log.warning("could not renew the maia session: %s", exc)
                return None
            token = answer.get("token")
            if isinstance(token, str) and token:
                self.session_id = str(answer.get("session_id", ""))
                log.info("maia session renewed")
                return token
            return None


async def heartbeat(api: NodeAPI, renewer: Renewer | None, session_id: str,
                    every_s: float) -> None:
    """SPEC-004 §2.5: keep the session alive while the agent CLI keeps this server."""
    while True:
        await asyncio.sleep(every_s)
        sid = renewer.session_id if renewer else session_id
        if not sid:
            return
        with contextlib.suppress(Refused):
            await api.request("POST", f"/v1/sessions/{sid}/heartbeat")


async def serve() -> int:
    url = os.environ.get("MAIA_NODE_URL", "")
    token = os.environ.pop("MAIA_SESSION_TOKEN", "")  # not inherited by anything we start
    if not url or not token.startswith("maia_s_"):
        sys.stderr.write("maia mcp: no session token; start it with `maia mcp`\n")
        return 2
    fd = os.environ.pop("MAIA_MCP_RENEW_FD", "")
    renewer = Renewer(int(fd)) if fd.isdigit() else None
    api = NodeAPI(url, token, renew=renewer)
    CURRENT_API.set(api)
    every = float(os.environ.get("MAIA_HEARTBEAT_S", "10") or 10)
    beat = asyncio.create_task(heartbeat(api, renewer, os.environ.get("MAIA_SESSION_ID", ""),
                                         every))
    try:
        await build_server().run_stdio_async()
    finally:
        beat.cancel()
        with contextlib.suppress(BaseException):
            await beat
        await api.close()
    return 0


def main() -> int:
    logging.basicConfig(level=os.environ.get("MAIA_MCP_LOG", "WARNING"), stream=sys.stderr,
                        format="maia mcp: %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
