"""The MCP server's way into the node: its HTTP API, with a session token (never the local one).

Every tool is one request here, so authorisation lives in one place, the node's routes
(SPEC-003 §6.3a, §6.7); a refusal comes back as :class:`Refused` carrying the problem's title and
detail, which the tool layer turns into an MCP tool error the model can read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
ASK_TIMEOUT_S = 600.0


class Refused(Exception):
    """The node answered with a problem (4xx/5xx) or could not be reached."""

    def __init__(self, status: int, title: str, detail: str = "", type: str = "") -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status, self.title, self.detail, self.type = status, title, detail, type


class NodeAPI:
    """A bearer-token client of one node's local API.

    ``renew`` (stdio only) is called once when the node says the session ended (a node restart
    ends every session, SPEC-004 §2.1) or does not know the token; it returns a fresh token, or
    None to give up.
    """

    def __init__(self, base_url: str, token: str, *,
                 renew: Callable[[], Awaitable[str | None]] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._renew = renew
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"NodeAPI({self.base_url!r}, token=<redacted>)"

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8, force_close=False),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            )
        return self._http

    async def request(self, method: str, path: str, body: Any = None,
                      query: dict[str, Any] | None = None, *,
                      timeout: float = TIMEOUT_S) -> Any:
        status, answer = await self._once(method, path, body, query, timeout)
        # 401: the session ended or expired, or the node restarted and knows the token no more
        # (sessions are Runtime, SPEC-004 §2.1): one fresh session, one retry
        if status == 401 and self._renew is not None:
            fresh = await self._renew()
            if fresh:
                self.token = fresh
                status, answer = await self._once(method, path, body, query, timeout)
        if status >= 400:
            raise Refused(
                status,
                str(answer.get("title", "Refused")) if isinstance(answer, dict) else "Refused",
                str(answer.get("detail", "") or "") if isinstance(answer, dict) else "",
                _type(answer),
            )
        return answer

    async def _once(self, method: str, path: str, body: Any, query: dict[str, Any] | None,
                    timeout: float) -> tuple[int, Any]:
        params = {k: _qs(v) for k, v in (query or {}).items() if v is not None}
        try:
            async with self._session().request(
                method, self.base_url + path, json=body, params=params or None,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                try:
                    answer = json.loads(raw) if raw else {}
                except ValueError:
                    answer = {"title": "Unreadable answer", "detail": raw[:200].decode(
                        "utf-8", "replace")}
                return resp.status, answer
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Refused(503, "The maia-node is not reachable",
                          f"{type(exc).__name__}: start it with `maia up`") from None


def _qs(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _type(answer: Any) -> str:
    return str(answer.get("type", "")) if isinstance(answer, dict) else ""


# The API client of the current caller: set once for the stdio server, per request for /v1/mcp.
# Here rather than beside the tools, so /v1/mcp can set it without importing the MCP SDK.
CURRENT_API: ContextVar[NodeAPI] = ContextVar("maia_mcp_api")
