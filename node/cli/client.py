"""A small HTTP client for the local node's API, used by the CLI (stdlib only: starts fast)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any
from urllib.parse import unquote

from ..config import Paths


class NodeNotRunning(Exception):
    pass


class ApiError(Exception):
    """The node answered with a problem+json error."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or ""
        errors = problem.get("errors") or []
        extra = "; ".join(f"{e.get('path', '')}: {e.get('message', '')}" for e in errors[:3])
        super().__init__(
            f"{problem.get('title', 'error')}" + (f": {detail}" if detail else "")
            + (f" ({extra})" if extra else "")
        )


class NodeClient:
    def __init__(self, paths: Paths, timeout: float = 30.0) -> None:
        try:
            info = json.loads(paths.node_info.read_text())
            token = paths.token.read_text().strip()
        except (OSError, ValueError) as exc:
            raise NodeNotRunning(str(exc)) from exc
        host = info["host"]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base = f"http://{host if ':' not in host else '[' + host + ']'}:{info['port']}"
        self.pid = int(info["pid"])
        self.token = token
        self.timeout = timeout
        if not pid_alive(self.pid):
            raise NodeNotRunning("the node recorded in node.json is not running")

    def request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                self._say_if_revoked(resp.headers)
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            self._say_if_revoked(exc.headers)
            try:
                problem = json.loads(exc.read())
            except ValueError:
                problem = {"title": exc.reason}
            raise ApiError(exc.code, problem) from None
        except (urllib.error.URLError, ConnectionError) as exc:
            raise NodeNotRunning(str(exc)) from exc


    _warned = False

    def _say_if_revoked(self, headers: Any) -> None:
        """Once per command: a revoked device says so, whatever was asked (issue 15.6)."""
        revoked = headers.get("X-Maia-Device-Revoked") if headers is not None else None
        if revoked:  # percent-encoded by the node (node.api.headers); shown printable only
            revoked = "".join(c if c.isprintable() else "?" for c in unquote(revoked))
        if revoked and not self._warned:
            self._warned = True
            print(f"Warning: this device was revoked {revoked}; it can no longer change the "
                  "mesh's documents.", file=sys.stderr)


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (ours or another user's)?"""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
