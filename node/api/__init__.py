"""The maia-node HTTP API: one process standard (SPEC-003) for every route."""

from .app import build_app, make_runner
from .auth import (
    Authenticator,
    LocalTokenAuthenticator,
    Principal,
    TokenFileError,
    load_or_create_token,
)
from .middleware import BODY_KEY, MIDDLEWARES, PRINCIPAL_KEY, QUERY_KEY, HostPolicy, Limits
from .problem import PROBLEM_CONTENT_TYPE, Problem
from .routes import RouteSpec, RouteTable, route_spec, route_specs
from .services import SERVICES_KEY, NodeServices

__all__ = [
    "BODY_KEY",
    "MIDDLEWARES",
    "PRINCIPAL_KEY",
    "PROBLEM_CONTENT_TYPE",
    "QUERY_KEY",
    "SERVICES_KEY",
    "Authenticator",
    "HostPolicy",
    "Limits",
    "LocalTokenAuthenticator",
    "NodeServices",
    "Principal",
    "Problem",
    "RouteSpec",
    "RouteTable",
    "TokenFileError",
    "build_app",
    "load_or_create_token",
    "make_runner",
    "route_spec",
    "route_specs",
]
