"""Web page routes: the login, the page itself and its files (SPEC-003 §11).

Only the login form, the token-for-cookie exchange and the page's static files are public;
the page, the session details (its CSRF token) and logout need a credential like every other
route. The page holds no data of its own: it reads everything through the ``/v1`` API.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from ..api.middleware import BODY_KEY, PRINCIPAL_KEY
from ..api.problem import Problem
from ..api.routes import Handler, RouteTable

if TYPE_CHECKING:
    from .feature import WebPage

log = logging.getLogger(__name__)

WEB_KEY: web.AppKey[WebPage] = web.AppKey("maia_web", object)  # type: ignore[arg-type]
ui_routes = RouteTable("ui", requires=[WEB_KEY])

CSP = "default-src 'self'; frame-ancestors 'none'"
LOGIN_REASON = (
    "the web page's login form: a fixed HTML file with no data in it; the node's data is "
    "only reachable after logging in"
)
LOGIN_POST_REASON = (
    "exchanges the local API token (typed by the owner) for a login cookie; the token is "
    "the credential, compared in constant time, and the JSON-only body keeps cross-site "
    "forms out (SPEC-003 §11.2)"
)
STATIC_REASON = (
    "a fixed file of the login form (style, script, icon) from the installed package, with "
    "no data in it"
)
LOGIN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["token"],
    "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 512}},
}
PUBLIC_ASSETS = ("style.css", "login.js", "icon.svg")
PRIVATE_ASSETS = ("app.js",)
_STATIC_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}


def _files():
    return resources.files("node.web") / "static"


def _page(name: str) -> web.Response:
    """An HTML page from the package, with the headers SPEC-003 §10.1 and §11.1 ask of HTML."""
    html = (_files() / name).read_text(encoding="utf-8")
    return web.Response(
        text=html, content_type="text/html", charset="utf-8",
        headers={"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"},
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@ui_routes.get("/ui/login", public=LOGIN_REASON)
async def login_page(request: web.Request) -> web.StreamResponse:
    """The login form; a browser already logged in goes on to the page."""
    page = request.app[WEB_KEY]
    if page.authenticator is not None and page.authenticator.login_of(request) is not None:
        raise web.HTTPSeeOther(location="/ui/")
    return _page("login.html")


@ui_routes.post("/ui/login", public=LOGIN_POST_REASON, body_schema=LOGIN_SCHEMA)
async def login(request: web.Request) -> web.Response:
    """Exchange the local API token for a login cookie (HttpOnly, SameSite=Strict)."""
    page = request.app[WEB_KEY]
    if not page.token_matches(request[BODY_KEY]["token"]):
        log.info("web page login refused from %s: wrong token", request.remote)
        raise Problem(401, "Wrong token",
                      "that is not this node's API token (the file runtime/api.token in its "
                      "data directory)")
    page.logins.end(request.cookies.get(page.cookie_name))  # a fresh login replaces the old
    cookie, created = page.logins.create()
    log.info("web page login %s from %s", created.label, request.remote)
    response = web.json_response({"logged_in": True, "expires_at": _iso(created.expires)})
    response.set_cookie(
        page.cookie_name, cookie, max_age=created.seconds_left(), path="/",
        httponly=True, samesite="Strict", secure=request.secure,
    )
    return response


@ui_routes.post("/ui/logout")
async def logout(request: web.Request) -> web.Response:
    """End this browser's login now: the cookie stops working and its live stream closes."""
    page = request.app[WEB_KEY]
    ended = page.logins.end(request.cookies.get(page.cookie_name))
    response = web.json_response({"logged_out": ended})
    response.del_cookie(page.cookie_name, path="/", samesite="Strict", secure=request.secure)
    return response


@ui_routes.get("/ui/session")
async def session(request: web.Request) -> web.Response:
    """This browser login: its CSRF token (for every write the page sends) and its expiry."""
    page = request.app[WEB_KEY]
    principal = request[PRINCIPAL_KEY]
    current = page.authenticator.login_of(request) if page.authenticator else None
    if current is None or principal.id != f"browser:{current.label}":
        raise Problem(404, "No browser login", "this request was not made with a login cookie")
    return web.json_response({
        "login": current.label,
        "csrf_header": "X-CSRF-Token",
        "csrf_token": current.csrf_token,
        "expires_at": _iso(current.expires),
    })


@ui_routes.get("/ui/")
async def index(request: web.Request) -> web.Response:
    """The web page: devices, peers, documents, memory, sessions, cortices and backups."""
    return _page("index.html")


@ui_routes.get("/ui")
async def index_no_slash(request: web.Request) -> web.Response:
    """Redirect to the page."""
    raise web.HTTPPermanentRedirect(location="/ui/")


@ui_routes.get("/")
async def root(request: web.Request) -> web.Response:
    """Redirect to the page (a person typing the node's address lands on it)."""
    raise web.HTTPSeeOther(location="/ui/")


def _asset(name: str) -> web.Response:
    """A file of the page from the package, typed by its suffix."""
    content_type = _STATIC_TYPES[name[name.rfind("."):]]
    body = (_files() / name).read_bytes()
    charset = "utf-8" if content_type.startswith("text/") else None
    return web.Response(body=body, content_type=content_type, charset=charset)


def _serve(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return _asset(name)

    handler.__doc__ = f"The page's {name}."
    return handler


# The login form's files are public, one route per file (the inventory lists each); the rest
# of the page's code is served only after login.
for _name in PUBLIC_ASSETS:
    ui_routes.get(f"/ui/static/{_name}", public=STATIC_REASON)(_serve(_name))
for _name in PRIVATE_ASSETS:
    ui_routes.get(f"/ui/{_name}")(_serve(_name))
