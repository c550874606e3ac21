"""The login cookie as a credential: an Authenticator in the SPEC-003 chain (§11.3 to §11.5).

The cookie is tried after the bearer token (``build_app`` puts the local token first), so a
request with a valid ``Authorization`` header never reaches this code path's CSRF rule, which
is right: a cross-site page cannot set that header. A cookie, by contrast, the browser attaches
on its own, so every unsafe method must also prove it came from the page (the CSRF token).
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..api.auth import Principal
from ..api.problem import Problem
from .logins import Login, Logins

log = logging.getLogger(__name__)

CSRF_HEADER = "X-CSRF-Token"
TYPE_CSRF = "urn:maia-node:problem:csrf"
LOGIN_PATH = "/ui/login"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def cookie_name(device_id: str) -> str:
    """Per node, because cookies ignore ports: two nodes on one host keep separate logins."""
    return "maia_session_" + device_id.replace("-", "")[:7].lower()


def principal_for(login: Login) -> Principal:
    return Principal(kind="local", id=f"browser:{login.label}")


def is_page_navigation(request: web.BaseRequest) -> bool:
    """A browser loading a page of ours in its window (not a script fetching data)."""
    if request.method != "GET" or "Authorization" in request.headers:
        return False
    path = request.path
    if not (path in ("/", "/ui") or path.startswith("/ui/")):
        return False
    if request.headers.get("Sec-Fetch-Mode") == "navigate":
        return True
    return request.headers.get("Accept", "").lstrip().startswith("text/html")


class BrowserLoginAuthenticator:
    """Accepts this node's login cookie as the local principal, with CSRF on unsafe methods."""

    def __init__(self, logins: Logins, name: str) -> None:
        self._logins = logins
        self.cookie_name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cookie={self.cookie_name}, {self._logins!r})"

    def login_of(self, request: web.BaseRequest) -> Login | None:
        return self._logins.get(request.cookies.get(self.cookie_name))

    async def authenticate(self, request: web.Request) -> Principal | None:
        login = self.login_of(request)
        if login is None:
            if is_page_navigation(request):
                # SPEC-003 §11.5: a person opening the page gets the login form, not JSON.
                raise web.HTTPSeeOther(location=LOGIN_PATH)
            return None
        if request.method not in SAFE_METHODS and not login.csrf_matches(
            request.headers.get(CSRF_HEADER)
        ):
            log.info("refused %s %s from browser login %s: no valid CSRF token",
                     request.method, request.path, login.label)
            raise Problem(
                403, "CSRF token missing or invalid",
                f"a request sent with the login cookie must carry the {CSRF_HEADER} header "
                "the page reads from GET /ui/session",
                type=TYPE_CSRF,
            )
        return principal_for(login)
