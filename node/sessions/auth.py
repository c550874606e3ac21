"""Session tokens as an HTTP credential (SPEC-003 §5.3): ``Principal(kind="session", id)``.

The token is looked up by its SHA-256 only. A token whose session ended or expired gets a 401
of type ``session-ended`` (so the shim knows to register again); any other unknown ``maia_s_``
token is simply not recognised, and the chain answers 401 ``invalid_token``.
"""

from __future__ import annotations

from aiohttp import web

from ..api.auth import Principal, bearer_token
from ..api.problem import Problem
from .registry import TOKEN_PREFIX, Registry

TYPE_SESSION_ENDED = "urn:maia-node:problem:session-ended"


class SessionAuthenticator:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sessions={len(self._registry)})"

    async def authenticate(self, request: web.Request) -> Principal | None:
        token = bearer_token(request)
        if token is None or not token.startswith(TOKEN_PREFIX):
            return None
        session, ended = self._registry.by_token(token)
        if session is not None:
            return Principal(kind="session", id=session.id, scopes=frozenset(session.scopes))
        if ended:
            raise Problem(
                401, "Session ended",
                "this session ended or expired; register a new one",
                type=TYPE_SESSION_ENDED,
                headers={"WWW-Authenticate": 'Bearer realm="maia-node", error="invalid_token"'},
            )
        return None
