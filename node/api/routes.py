"""Route tables: the only way a route enters the maia-node HTTP API.

Each concern (core, memory, sessions, peer, ...) owns one :class:`RouteTable`
and registers handlers on it with metadata; ``build_app`` installs all tables
into one application.  The middlewares read that metadata back from the
matched request, which is what makes the defaults enforceable: a route is
private unless registered public with a stated reason, and a route that was
added behind the tables' back has no metadata and is therefore treated as
private too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator

from .auth import PrincipalKind

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSONSchema = Mapping[str, Any]
# A domain error class -> (HTTP status, problem title); the problem's detail is ``str(error)``.
ErrorMap = Mapping[type[Exception], tuple[int, str]]

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_BODYLESS = frozenset({"GET", "DELETE"})


@dataclass(frozen=True, slots=True, eq=False)
class RouteSpec:
    """Everything the middlewares need to know about one (method, path).

    ``public_reason`` is None for private routes; for public routes it says
    why skipping bearer authentication is safe, so that making a route public
    is always a deliberate, reviewable act.  ``streaming`` routes (WebSocket,
    long polls) own their idle timeouts and are exempt from the handler time
    limit.  ``principal_kinds`` is function-level authorisation: which kinds
    of principal may call the route at all (local only unless widened).
    """

    method: str
    path: str
    handler: Handler
    table: str
    public_reason: str | None = None
    body_schema: JSONSchema | None = None
    query_schema: JSONSchema | None = None
    streaming: bool = False
    principal_kinds: frozenset[PrincipalKind] = frozenset({"local"})
    # a scope the principal must hold, checked before the body is read (SPEC-003 §6.7)
    scope: str | None = None
    summary: str = ""
    errors: ErrorMap = field(default_factory=dict)
    requires: tuple[web.AppKey, ...] = ()
    body_validator: Draft202012Validator | None = field(default=None, repr=False)
    query_validator: Draft202012Validator | None = field(default=None, repr=False)

    @property
    def public(self) -> bool:
        return self.public_reason is not None


ROUTE_SPECS_KEY: web.AppKey[dict[web.AbstractRoute, RouteSpec]] = web.AppKey(
    "maia_route_specs", dict
)


def _validator(schema: JSONSchema | None) -> Draft202012Validator | None:
    if schema is None:
        return None
    # Fail at import time, not on the first request, if a schema is invalid.
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


class RouteTable:
    """A named group of routes with metadata, installed into an app as one unit.

    ``errors`` maps the domain errors its handlers let through to problems, in this one place:
    a handler calls the domain and lets its error go (SPEC-003 §9), the errors middleware
    answers ``status`` with ``title`` and the error's own sentence as the detail. The first
    matching class wins, so list subclasses before their bases.

    ``requires`` names the app keys its handlers read (the state a feature puts there): a
    request reaching the table while one is missing gets 503 "<name> unavailable", once here
    instead of in every handler.
    """

    def __init__(self, name: str, *, errors: ErrorMap | None = None,
                 requires: Iterable[web.AppKey] = ()) -> None:
        self.name = name
        self.errors: ErrorMap = dict(errors or {})
        self.requires = tuple(requires)
        self._specs: list[RouteSpec] = []

    def __iter__(self) -> Iterator[RouteSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def specs(self) -> tuple[RouteSpec, ...]:
        return tuple(self._specs)

    def route(
        self,
        method: str,
        path: str,
        *,
        public: bool | str = False,
        reason: str | None = None,
        body_schema: JSONSchema | None = None,
        query_schema: JSONSchema | None = None,
        streaming: bool = False,
        principal_kinds: Iterable[PrincipalKind] = ("local",),
        scope: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler`` for ``method path``.

        ``public`` is False (the default: bearer authentication required), a
        reason string, or True together with ``reason=``; a public route
        without a reason is refused.
        """
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported method {method!r}")
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        public_reason = _public_reason(public, reason, method, path)
        if body_schema is not None and method in _BODYLESS:
            raise ValueError(f"{method} {path}: {method} routes take no body schema")
        kinds = frozenset(principal_kinds)
        if not kinds:
            raise ValueError(f"{method} {path}: at least one principal kind must be allowed")
        body_validator = _validator(body_schema)
        query_validator = _validator(query_schema)

        def register(handler: Handler) -> Handler:
            if any(s.method == method and s.path == path for s in self._specs):
                raise ValueError(f"{method} {path} is already registered in table {self.name!r}")
            self._specs.append(
                RouteSpec(
                    method=method,
                    path=path,
                    handler=handler,
                    table=self.name,
                    public_reason=public_reason,
                    body_schema=body_schema,
                    query_schema=query_schema,
                    streaming=streaming,
                    principal_kinds=kinds,
                    scope=scope,
                    summary=((handler.__doc__ or "").strip().splitlines() or [""])[0],
                    errors=self.errors,
                    requires=self.requires,
                    body_validator=body_validator,
                    query_validator=query_validator,
                )
            )
            return handler

        return register

    def get(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kwargs)

    def install(self, app: web.Application) -> None:
        """Add this table's routes to ``app`` and record their metadata.

        A (method, path) already installed from another table is refused so
        that two concerns cannot silently shadow each other.
        """
        if ROUTE_SPECS_KEY not in app:
            app[ROUTE_SPECS_KEY] = {}
        specs = app[ROUTE_SPECS_KEY]
        taken = {(s.method, s.path): s.table for s in specs.values()}
        for spec in self._specs:
            owner = taken.get((spec.method, spec.path))
            if owner is not None:
                raise ValueError(
                    f"{spec.method} {spec.path} from table {self.name!r} "
                    f"is already installed by table {owner!r}"
                )
            # SPEC-003 §4.3: `Expect` is answered inside the middleware chain, not before it.
            route = app.router.add_route(
                spec.method, spec.path, spec.handler, expect_handler=_expect_in_chain
            )
            specs[route] = spec
            taken[(spec.method, spec.path)] = self.name
            if spec.public:
                log.debug("public route %s %s: %s", spec.method, spec.path, spec.public_reason)


async def _expect_in_chain(request: web.Request) -> None:
    """A route's expect handler: nothing; the chain answers `Expect` (SPEC-003 §4.3).

    aiohttp runs a route's expect handler before any middleware, and its default one sends
    `100 Continue` before authentication and answers other expectations with a plain-text 417
    that echoes the header (a 500 on bytes that are not UTF-8).
    """
    return None


def _public_reason(public: bool | str, reason: str | None, method: str, path: str) -> str | None:
    if isinstance(public, str):
        if reason is not None:
            raise ValueError(f"{method} {path}: give the public reason once")
        public_reason: str | None = public
    elif public:
        public_reason = reason
    else:
        if reason is not None:
            raise ValueError(f"{method} {path}: reason= is only meaningful with public=True")
        return None
    if not public_reason or not public_reason.strip():
        raise ValueError(f"{method} {path}: a public route must say why it is safe unauthenticated")
    return public_reason.strip()


def route_spec(request: web.Request) -> RouteSpec | None:
    """Metadata of the route ``request`` matched, or None (router 404/405, or unregistered)."""
    return request.app.get(ROUTE_SPECS_KEY, {}).get(request.match_info.route)


def route_specs(app: web.Application) -> Mapping[web.AbstractRoute, RouteSpec]:
    """All installed routes of ``app`` with their metadata."""
    return app.get(ROUTE_SPECS_KEY, {})


def mapped_error(spec: RouteSpec | None, exc: Exception) -> tuple[int, str] | None:
    """The (status, title) ``spec``'s table declares for ``exc``, or None."""
    if spec is None:
        return None
    for kind, answer in spec.errors.items():
        if isinstance(exc, kind):
            return answer
    return None

