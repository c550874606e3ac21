"""The MCP feature: serves ``/v1/mcp`` (SPEC-003 §6.8) and runs the SDK's session manager.

The MCP SDK (with pydantic, starlette and anyio) costs about 30 MB of resident memory and half
a second to import: a third of an idle node's memory, paid by every node though most never
serve an MCP request over HTTP (agents mostly use ``maia mcp`` over stdio). So it is imported,
and its session manager built and started, on the first ``/v1/mcp`` request (issue 17).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase
from .http import MANAGER_KEY, mcp_routes

if TYPE_CHECKING:
    from ..node import Node


def _build_manager() -> Any:
    """Import the SDK and build its stateless session manager (blocking: a worker thread)."""
    # the SDK (and the tools built on it) only when a request needs it: about 30 MB
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from .tools import build_server  # imports the SDK too

    server = build_server()
    return StreamableHTTPSessionManager(
        # the SDK's low-level server behind MCPServer; its public constructor takes it
        app=server._lowlevel_server, json_response=True, stateless=True,
        security_settings=None,  # Host/Origin are checked by the node (SPEC-003 §2.4/2.5)
    )


class LazyManager:
    """The SDK's session manager, built and running from the first request that needs it."""

    def __init__(self) -> None:
        self.manager: Any = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    async def get(self) -> Any:
        """The running manager (imports the SDK in a thread and starts it the first time)."""
        if self.manager is not None:
            return self.manager
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.manager is None:
                if self._closed:
                    raise RuntimeError("the MCP feature has stopped")
                manager = await asyncio.to_thread(_build_manager)
                await self._start(manager)
                self.manager = manager
        return self.manager

    async def _start(self, manager: Any) -> None:
        # The manager's task group must be entered and left in one task: it runs in its own.
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        stop = self._stop

        async def run() -> None:
            async with manager.run():
                ready.set()
                await stop.wait()

        # In a context of its own: not the first caller's (its CURRENT_API, its token).
        self._task = asyncio.create_task(run(), name="mcp-session-manager",
                                         context=contextvars.Context())
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([self._task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # it failed to start: raise here, not later

    async def close(self) -> None:
        self._closed = True
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)


class MCPFeature(FeatureBase):
    name = "mcp"

    def __init__(self) -> None:
        self.lazy = LazyManager()

    def setup(self, node: Node) -> None:
        super().setup(node)

    def route_tables(self) -> Sequence[RouteTable]:
        return [mcp_routes]

    def configure_app(self, app: web.Application) -> None:
        app[MANAGER_KEY] = self.lazy

    async def start(self) -> None:
        """Nothing to start: the session manager starts with the first request."""

    async def stop(self) -> None:
        await self.lazy.close()

    def status(self) -> dict[str, Any]:
        return {"http": "/v1/mcp"}


def create() -> MCPFeature:
    return MCPFeature()
