"""Assembly of the maia-node HTTP API application.

This is the one place that decides the middleware order, the limits in
force and which route tables are served, so every route gets the same
process standard (SPEC-003) whoever wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from .auth import Authenticator, LocalTokenAuthenticator
from .middleware import (
    AUTHENTICATORS_KEY,
    IN_FLIGHT_KEY,
    LIMITS_KEY,
    MIDDLEWARES,
    RATE_LIMITER_KEY,
    Limits,
    security_headers,
)
from .ratelimit import RateLimiter
from .routes import RouteTable
from .routes_core import core_routes
from .services import SERVICES_KEY, NodeServices


def build_app(
    services: NodeServices,
    *,
    token: str,
    limits: Limits | None = None,
    extra_tables: Sequence[RouteTable] = (),
    authenticators: Sequence[Authenticator] = (),
    include_core: bool = True,
) -> web.Application:
    """Build the API application serving the core routes plus ``extra_tables``.

    ``token`` is the local API token (see ``load_or_create_token``); it is
    always the first credential tried.  ``authenticators`` adds further
    credential kinds after it, for example SPEC-004 session tokens.
    """
    limits = limits or Limits()
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=limits.max_body_bytes)
    app[SERVICES_KEY] = services
    app[LIMITS_KEY] = limits
    app[IN_FLIGHT_KEY] = [0]
    app[AUTHENTICATORS_KEY] = (LocalTokenAuthenticator(token), *authenticators)
    app[RATE_LIMITER_KEY] = RateLimiter(
        limits.rate_per_second, limits.rate_burst, max_clients=limits.rate_max_clients
    )
    for table in ((core_routes,) if include_core else ()) + tuple(extra_tables):
        table.install(app)
    app.on_response_prepare.append(security_headers)
    return app
