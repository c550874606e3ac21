"""Scopes: what a session principal may do beyond its own session objects (SPEC-003 §6.7).

The local principal holds every scope. A session holds the scopes granted when it registered
(SPEC-004 §2.11); nothing in a request can widen them. A missing scope is a 403 problem of type
``insufficient-scope`` that names it, so an agent (and the person reading its transcript) learns
exactly which grant it lacks.
"""

from __future__ import annotations

from aiohttp import web

from ..scopes import (  # noqa: F401  (re-exported for the routes)
    DEFAULT_AGENT_SCOPES,
    MEMORY_ADMIN,
    MEMORY_READ,
    MEMORY_WRITE,
    MODELS_ASK,
    SCOPES,
)
from .auth import Principal
from .middleware import PRINCIPAL_KEY
from .problem import TYPE_INSUFFICIENT_SCOPE, insufficient_scope  # noqa: F401 (re-exported)


def has_scope(principal: Principal, scope: str) -> bool:
    return principal.holds(scope)


def require_scope(request: web.Request, scope: str) -> Principal:
    """The request's principal, if it holds ``scope``; else the 403 ``insufficient-scope``."""
    principal: Principal = request[PRINCIPAL_KEY]
    if not principal.holds(scope):
        raise insufficient_scope(scope)
    return principal
