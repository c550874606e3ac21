"""The smallest HTTP client that can talk to the local node: a socket, one request, JSON back.

The hook command runs on every tool call of every agent, so it must start in a few tens of
milliseconds. ``urllib.request`` alone costs ~25 ms of imports (http.client, email, ssl); this
module needs only ``socket`` and ``json``. It speaks HTTP/1.1 with ``Connection: close`` to a
loopback listener, bounded by a connect timeout and a total deadline (SPEC-004 §11.4), and never
raises anything but :class:`NodeUnavailable` for transport trouble.
Stdlib only.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

# typing costs ~2.5 ms to import and annotations are never evaluated here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONNECT_TIMEOUT = 0.2
TOTAL_TIMEOUT = 1.5
MAX_RESPONSE = 4 * 1024 * 1024


class NodeUnavailable(Exception):
    """No node, a dead node, a refused or timed-out connection, or an unreadable answer."""


def default_data_dir() -> Path:
    """Same resolution as ``maia`` (node/config.py), without importing it (it needs tomli_w)."""
    env = os.environ.get("MAIA_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "maia"


def node_address(data_dir: Path) -> tuple[str, int]:
    """(host, port) of the node running on ``data_dir``, from ``runtime/node.json``."""
    try:
        info = json.loads((data_dir / "runtime" / "node.json").read_text())
        host, port, pid = str(info["host"]), int(info["port"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NodeUnavailable(f"no running node recorded in {data_dir}") from exc
    if not pid_alive(pid):
        raise NodeUnavailable("the node recorded in node.json is not running")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return host, port


def local_token(data_dir: Path) -> str:
    try:
        return (data_dir / "runtime" / "api.token").read_text().strip()
    except OSError as exc:
        raise NodeUnavailable("cannot read the local API token") from exc


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request(
    address: tuple[str, int],
    method: str,
    path: str,
    token: str,
    body: Any = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    total_timeout: float = TOTAL_TIMEOUT,
) -> tuple[int, Any]:
    """Send one request; return (status, parsed JSON or None). Raises NodeUnavailable."""
    deadline = time.monotonic() + total_timeout
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    host, port = address
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: Bearer {token}",
        "Accept: application/json",
        "Connection: close",
        f"Content-Length: {len(payload)}",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
    try:
        sock = socket.create_connection(address, timeout=connect_timeout)
    except OSError as exc:
        raise NodeUnavailable(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.sendall(raw)
        data = bytearray()
        while len(data) <= MAX_RESPONSE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeUnavailable("the node did not answer in time")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
    except OSError as exc:  # includes socket.timeout
        raise NodeUnavailable(f"the exchange with the node failed: {exc}") from exc
    finally:
        sock.close()
    return _parse(bytes(data))


def _split(data: bytes) -> tuple[int, dict[str, str], bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise NodeUnavailable("truncated answer")
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise NodeUnavailable("malformed status line")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, data[end + 4 :]


def _complete(data: bytearray) -> bool:
    """True once a Content-Length body has fully arrived (chunked bodies end at close)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    _, headers, body = _split(bytes(data))
    length = headers.get("content-length")
    return length is not None and length.isdigit() and len(body) >= int(length)


def _parse(data: bytes) -> tuple[int, Any]:
    status, headers, body = _split(data)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif headers.get("content-length", "").isdigit():
        body = body[: int(headers["content-length"])]
    if not body.strip():
        return status, None
    try:
        return status, json.loads(body)
    except ValueError as exc:
        raise NodeUnavailable("the answer is not JSON") from exc


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        line, _, rest = body.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError as exc:
            raise NodeUnavailable("malformed chunked body") from exc
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
