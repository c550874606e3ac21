"""Assembly of the maia-node HTTP API application.

This is the one place that decides the middleware order, the limits in
force and which route tables are served, so every route gets the same
process standard (SPEC-003) whoever wrote it.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .auth import Authenticator, LocalTokenAuthenticator
from .core import core_routes
from .middleware import (
    AUTHENTICATORS_KEY,
    HOST_POLICY_KEY,
    IN_FLIGHT_KEY,
    LIMITS_KEY,
    MIDDLEWARES,
    RATE_LIMITER_KEY,
    STREAMS_KEY,
    HostPolicy,
    Limits,
    expectation_problem,
    security_headers,
)
from .openapi import openapi_routes
from .problem import Problem, problem_from_http_exception
from .ratelimit import RateLimiter
from .routes import RouteTable
from .services import SERVICES_KEY, NodeServices


def build_app(
    services: NodeServices,
    *,
    token: str,
    limits: Limits | None = None,
    extra_tables: Sequence[RouteTable] = (),
    authenticators: Sequence[Authenticator] = (),
    include_core: bool = True,
    host_policy: HostPolicy | None = None,
) -> web.Application:
    """Build the API application serving the core routes plus ``extra_tables``.

    ``token`` is the local API token (see ``load_or_create_token``); it is
    always the first credential tried.  ``authenticators`` adds further
    credential kinds after it, for example SPEC-004 session tokens.
    ``host_policy`` is the listener's `Host`/`Origin` policy (SPEC-003 §2.4, §2.5); the
    default admits loopback names only.  Serve the app with :func:`make_runner`.
    """
    limits = limits or Limits()
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=limits.max_body_bytes)
    app[SERVICES_KEY] = services
    app[LIMITS_KEY] = limits
    app[HOST_POLICY_KEY] = host_policy or HostPolicy()
    app[IN_FLIGHT_KEY] = [0]
    app[STREAMS_KEY] = [0]
    app[AUTHENTICATORS_KEY] = (LocalTokenAuthenticator(token), *authenticators)
    app[RATE_LIMITER_KEY] = RateLimiter(
        limits.rate_per_second, limits.rate_burst, max_clients=limits.rate_max_clients
    )
    core = (core_routes, openapi_routes) if include_core else ()
    for table in core + tuple(extra_tables):
        table.install(app)
    app.on_response_prepare.append(security_headers)
    return app


# --- serving: what happens outside the middleware chain -------------------------------------

log = logging.getLogger(__name__)
MALFORMED_LOG_INTERVAL = 10.0  # seconds between two "malformed request" lines per listener


def make_runner(app: web.Application, *, name: str = "api", **kwargs: Any) -> web.AppRunner:
    """An ``AppRunner`` for ``app`` whose answers outside the chain are problems too.

    aiohttp answers some requests before any middleware runs: those its HTTP parser refuses
    (a plain-text 400, logged as an ERROR with a traceback), an `Expect` header on a path that
    matched no route (a plain-text 417 that echoes it, a 500 when it is not UTF-8), and an
    exception that escapes the app (a plain-text 500).  This runner answers each with a
    problem (SPEC-003 §4.3, §9.1, §9.7) and logs malformed requests as one rate-limited
    WARNING line per listener (``name``).
    """
    kwargs.setdefault("access_log", None)
    kwargs.setdefault("handle_signals", False)
    return _ProblemRunner(app, name=name, **kwargs)


class _ProblemRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, name: str, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._listener_name = name

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The request handler class is not a parameter of aiohttp's Server; ours only
        # overrides handle_error (pinned by tests/test_api_edges.py).
        server.__class__ = _ProblemServer
        server.malformed = _MalformedLog(self._listener_name)  # type: ignore[attr-defined]
        server.request_handler = _answer_expectations(server.request_handler)
        return server


class _ProblemServer(web.Server):
    malformed: _MalformedLog

    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class _ProblemRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            server = self._manager
            if isinstance(server, _ProblemServer):
                server.malformed.record(request.remote, exc)
            detail = f"malformed HTTP request ({type(exc).__name__})"
            status = status if 400 <= status < 500 else 400
        else:
            if status >= 500 and exc is not None:
                log.error("unhandled error answering %s %s from %s\n%s", request.method,
                          request.path, request.remote,
                          "".join(traceback.format_exception(exc)).rstrip())
            detail = "internal error; see the node log" if status >= 500 else None
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; closing the connection")
        # The parser's placeholder request says nothing true about the path.
        problem = Problem(status, detail=detail)
        response = _outside_chain(problem, request)
        response.force_close()
        return response


def _outside_chain(problem: Problem, request: web.BaseRequest) -> web.Response:
    response = problem.to_response(request)
    # on_response_prepare does not run for answers given outside the app: set its headers.
    response.headers["Server"] = "maia-node"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _answer_expectations(handle: Any) -> Any:
    """Wrap the app's request handler: refuse an unknown `Expect` before aiohttp's default
    expect handler (which runs before the chain for router 404/405) can echo it."""

    async def handle_request(request: web.BaseRequest) -> web.StreamResponse:
        problem = expectation_problem(request)
        if problem is not None:
            return _outside_chain(problem, request)
        try:
            return await handle(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _outside_chain(problem_from_http_exception(exc), request)

    return handle_request


class _MalformedLog:
    """One WARNING line per interval for requests the HTTP parser refused, never a traceback."""

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self.count = 0
        self.last: float | None = None

    def record(self, remote: str | None, exc: HttpProcessingError) -> None:
        self.count += 1
        now = time.monotonic()
        if self.last is not None and now - self.last < MALFORMED_LOG_INTERVAL:
            return
        log.warning("%s: malformed request from %s (%s); %d malformed since the last such line",
                    self.listener, remote, type(exc).__name__, self.count)
        self.count = 0
        self.last = now
