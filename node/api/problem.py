"""RFC 9457 problem details: the only error shape the maia-node HTTP API speaks.

Every error, whether raised by a handler, by a middleware or by the aiohttp
router (404, 405, 413), leaves the node as ``application/problem+json`` so a
client needs exactly one error parser and nothing internal (tracebacks,
exception text) can leak through a framework default page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Problem type URIs for errors that are specific to maia-node.  Generic HTTP
# errors use "about:blank" with the status phrase as title, as RFC 9457 §4.2.1
# recommends; these URNs let clients branch on the kind without parsing titles.
TYPE_MALFORMED_JSON = "urn:maia-node:problem:malformed-json"
TYPE_VALIDATION = "urn:maia-node:problem:validation"
TYPE_TIMEOUT = "urn:maia-node:problem:timeout"
TYPE_RATE_LIMITED = "urn:maia-node:problem:rate-limited"
TYPE_OVERLOADED = "urn:maia-node:problem:overloaded"
TYPE_INSUFFICIENT_SCOPE = "urn:maia-node:problem:insufficient-scope"
TYPE_FORBIDDEN_HOST = "urn:maia-node:problem:forbidden-host"
TYPE_FORBIDDEN_ORIGIN = "urn:maia-node:problem:forbidden-origin"

_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class Problem(Exception):
    """An error answer; raise it from a handler or middleware to reply with it.

    ``extra`` becomes extension members of the problem object (for example the
    ``errors`` list of a validation failure), so it must be JSON-serialisable
    and must never carry secrets or internal state.
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a problem must have an error status, got {status}")
        clash = _STANDARD_MEMBERS.intersection(extra)
        if clash:
            raise ValueError(f"extension members shadow standard members: {sorted(clash)}")
        self.status = status
        self.title = title if title is not None else _phrase(status)
        self.detail = detail
        self.type = type
        self.headers: dict[str, str] = dict(headers or {})
        self.extra = extra
        super().__init__(f"{status} {self.title}" + (f": {detail}" if detail else ""))

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        """The problem object; ``instance`` identifies this occurrence (the request path)."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body

    def to_response(self, request: web.BaseRequest | None = None) -> web.Response:
        """Render as an ``application/problem+json`` response for ``request``."""
        instance = request.path if request is not None else None
        return web.Response(
            status=self.status,
            text=json.dumps(self.to_dict(instance), separators=(",", ":")),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# Headers of a framework HTTP exception that carry meaning for the client and
# are safe to forward onto the problem response.
_FORWARDED_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def problem_from_http_exception(exc: web.HTTPException) -> Problem:
    """Translate an aiohttp HTTP error (router 404/405, body 413, ...) into a Problem.

    The framework's own body text is dropped except for the few cases where it
    is known to be safe and useful, so nothing unexpected reaches the client.
    """
    status = exc.status
    headers = {h: exc.headers[h] for h in _FORWARDED_HEADERS if h in exc.headers}
    detail: str | None = None
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods)) or "none"
        detail = f"method {exc.method} is not allowed here; allowed: {allowed}"
    elif isinstance(exc, web.HTTPNotFound):
        detail = "no such resource"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        detail = "request body exceeds the size limit"
    return Problem(status, exc.reason or None, detail, headers=headers)


def insufficient_scope(scope: str) -> Problem:
    """The 403 for a session token that lacks ``scope`` (SPEC-003 §6.7): it names the scope,
    so an agent (and the person reading its transcript) learns exactly which grant it lacks."""
    return Problem(
        403, "Insufficient scope",
        f"this session token was not granted the scope {scope!r}; the owner grants it "
        f"when the session registers (maia mcp --scopes)",
        type=TYPE_INSUFFICIENT_SCOPE, scope=scope,
    )
