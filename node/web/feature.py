"""The web page as a node feature: its routes, the login cookie authenticator, live events.

Listed in ``node/features.py`` as ``node.web.feature:create``. The node passes the result of
``authenticators()`` to ``build_app`` after the local token, so a login cookie becomes the
local principal on every route (SPEC-003 §11.3) without any route knowing about browsers.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.auth import load_or_create_token
from ..api.routes import RouteTable
from ..features import FeatureBase
from .auth import BrowserLoginAuthenticator, cookie_name
from .data_routes import ui_data_routes
from .live import LiveHub
from .logins import Logins
from .routes import WEB_KEY, ui_routes

if TYPE_CHECKING:
    from ..api.auth import Authenticator
    from ..node import Node


class WebPage(FeatureBase):
    """Everything the page's routes need, in one object put on the app (``WEB_KEY``)."""

    name = "web"

    def __init__(self) -> None:
        self.logins = Logins()
        self.hub = LiveHub()
        self.logins.on_end.append(self.hub.end_owner)
        self.node: Node | None = None
        self.authenticator: BrowserLoginAuthenticator | None = None
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.logins!r})"

    # -- Feature protocol ------------------------------------------------------------------------
    def setup(self, node: Node) -> None:
        self.node = node
        self.authenticator = BrowserLoginAuthenticator(self.logins, cookie_name(node.key.device_id))
        self.hub.attach(node.repo, node.peers)

    def route_tables(self) -> Sequence[RouteTable]:
        return [ui_routes, ui_data_routes]

    def authenticators(self) -> Sequence[Authenticator]:
        assert self.authenticator is not None
        return [self.authenticator]

    def configure_app(self, app: web.Application) -> None:
        if self.node is not None and self._token is None:
            # The node has created the token file by now; the login compares against it.
            self._token = load_or_create_token(self.node.paths.token)
        app[WEB_KEY] = self

    async def stop(self) -> None:
        # Streams must end before the HTTP server shuts down, or it waits for them.
        self.hub.close()
        self.logins.end_all()

    def status(self) -> dict[str, Any]:
        return {"logins": len(self.logins), **self.hub.status()}

    # -- for the routes --------------------------------------------------------------------------
    @property
    def cookie_name(self) -> str:
        assert self.authenticator is not None
        return self.authenticator.cookie_name

    def token_matches(self, presented: str) -> bool:
        if self._token is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"),
                                   self._token.encode("utf-8"))


def create() -> WebPage:
    return WebPage()
