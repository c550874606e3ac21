"""The MCP feature: serves ``/v1/mcp`` (SPEC-003 §6.8) and runs the SDK's session manager."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from ..api.routes import RouteTable
from ..features import FeatureBase
from .http import MANAGER_KEY, mcp_routes
from .tools import build_server

if TYPE_CHECKING:
    from ..node import Node


class MCPFeature(FeatureBase):
    name = "mcp"

    def __init__(self) -> None:
        self.manager: Any = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None

    def setup(self, node: Node) -> None:
        super().setup(node)
        server = build_server()
        self.manager = StreamableHTTPSessionManager(
            # the SDK's low-level server behind MCPServer; its public constructor takes it
            app=server._lowlevel_server, json_response=True, stateless=True,
            security_settings=None,  # Host/Origin are checked by the node (SPEC-003 §2.4/2.5)
        )

    def route_tables(self) -> Sequence[RouteTable]:
        return [mcp_routes]

    def configure_app(self, app: web.Application) -> None:
        app[MANAGER_KEY] = self.manager

    async def start(self) -> None:
        # The manager's task group must be entered and left in one task: it runs in its own.
        self._stop = asyncio.Event()
        ready = asyncio.Event()

        async def run() -> None:
            async with self.manager.run():
                ready.set()
                await self._stop.wait()

        self._task = asyncio.create_task(run(), name="mcp-session-manager")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([self._task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)

    def status(self) -> dict[str, Any]:
        return {"http": "/v1/mcp"}


def create() -> MCPFeature:
    return MCPFeature()
