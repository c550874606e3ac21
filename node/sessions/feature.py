"""The sessions feature: plugs SPEC-004 into the node (routes, peer frames, authenticator).

Listed in ``node/features.py`` as ``node.sessions.feature:create``. Besides the Feature
protocol it offers ``authenticators()``, which the node passes to ``build_app`` so session
tokens become ``Principal(kind="session")`` on every route that admits them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.routes import RouteTable
from ..config import ConfigError
from ..features import FeatureBase
from .auth import SessionAuthenticator
from .config import SessionsConfig
from .coordinator import Coordinator
from .routes import SESSIONS_KEY, session_routes

if TYPE_CHECKING:
    from ..api.auth import Authenticator
    from ..node import Node


class SessionsFeature(FeatureBase):
    name = "sessions"

    def __init__(self) -> None:
        self.coordinator: Coordinator | None = None

    def setup(self, node: Node) -> None:
        try:
            config = SessionsConfig.from_table(node.config.extra.get("sessions"))
        except ValueError as exc:  # SPEC-004 §2.9: refuse to start, in one sentence
            raise ConfigError(f"{node.paths.config}: {exc}") from None
        self.coordinator = Coordinator(node, config)
        self.coordinator.setup()

    def route_tables(self) -> Sequence[RouteTable]:
        return [session_routes]


    def authenticators(self) -> Sequence[Authenticator]:
        assert self.coordinator is not None
        return [SessionAuthenticator(self.coordinator.registry)]

    def configure_app(self, app: web.Application) -> None:
        assert self.coordinator is not None
        app[SESSIONS_KEY] = self.coordinator

    async def start(self) -> None:
        assert self.coordinator is not None
        await self.coordinator.start()

    async def stop(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.stop()

    def status(self) -> dict[str, Any]:
        return self.coordinator.status() if self.coordinator is not None else {}


def create() -> SessionsFeature:
    return SessionsFeature()
