"""SPEC-003 conformance: every route of the API is private unless deliberately public.

The tests walk whatever routes the application actually serves: the core
table plus every RouteTable a loaded feature declares (``Feature.route_tables``).
A route added later by any feature is therefore covered without editing this
file; the only edit ever needed here is adding a route to EXPECTED_PUBLIC,
on purpose.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.api import (
    PRINCIPAL_KEY,
    PROBLEM_CONTENT_TYPE,
    LocalTokenAuthenticator,
    Principal,
    RouteTable,
    build_app,
    route_specs,
)
from node.features import load_features, local_api_tables

TOKEN = secrets.token_urlsafe(32)

# Adding a public route is a deliberate act: it must be added here too.
EXPECTED_PUBLIC = {
    ("GET", "/health"),  # liveness, constant answer
    ("GET", "/v1/peer"),  # peer WebSocket, authenticates by device-key handshake
    ("GET", "/v1/pair"),  # pairing WebSocket: handshake + one-time code + owner's SAS check
    ("GET", "/ui/login"),  # web page login form: a fixed file, no data (SPEC-003 §11.1)
    ("POST", "/ui/login"),  # the owner's token for a login cookie (SPEC-003 §11.2)
    ("GET", "/ui/static/style.css"),  # the login form's fixed files, no data (§11.1)
    ("GET", "/ui/static/login.js"),
    ("GET", "/ui/static/icon.svg"),
}


class DictServices:
    """A NodeServices backed by a dict, standing in for the node."""

    def __init__(self) -> None:
        self.profile: dict[str, Any] = {"display_name": "Ada", "email": "ada@example.org"}

    async def status(self) -> dict[str, Any]:
        return {"node": "test", "peers": 0}

    async def get_profile(self) -> dict[str, Any]:
        return dict(self.profile)

    async def update_profile(self, changes: dict[str, Any]) -> dict[str, Any]:
        self.profile.update(changes)
        return dict(self.profile)


def discover_route_tables() -> list[RouteTable]:
    """Every RouteTable the loaded features declare (the core table comes with build_app)."""
    return local_api_tables(load_features())


ALL_TABLES = discover_route_tables()


def make_app(**kwargs: Any) -> web.Application:
    """The application under test, serving every route table the node has.

    Only the authentication layer is exercised for the discovered tables (their
    own services are not wired in here); point this at the real node to go further.
    """
    kwargs["extra_tables"] = [*ALL_TABLES, *kwargs.get("extra_tables", ())]
    return build_app(DictServices(), token=TOKEN, **kwargs)


def concrete_path(route: web.AbstractRoute) -> str:
    """A request path that the route's resource matches (placeholders filled in)."""
    info = route.resource.get_info() if route.resource else {}
    if "path" in info:
        return info["path"]
    formatter, pattern = info["formatter"], info["pattern"]
    names = re.findall(r"{(\w+)}", formatter)
    # SPEC-004 ids: session (26 base32), lease (32 hex), journal entry (SPEC-005 §10.1)
    for sample in ("1", "x", "00000000-0000-0000-0000-000000000000", "a" * 64, "a" * 26,
                   "a" * 32, "journal-202601-AAAAAAAAAA"):
        path = formatter.format(**dict.fromkeys(names, sample))
        if pattern.fullmatch(path):
            return path
    raise AssertionError(f"cannot build a sample path for {formatter!r}")


def served_routes(app: web.Application) -> list[tuple[str, str]]:
    return sorted((route.method, concrete_path(route)) for route in app.router.routes())


ROUTES = served_routes(make_app())

BAD_CREDENTIALS = {
    "none": None,
    "wrong-token": f"Bearer {secrets.token_urlsafe(32)}",
    "truncated-token": f"Bearer {TOKEN[:-1]}",
    "extended-token": f"Bearer {TOKEN}x",
    "no-scheme": TOKEN,
    "basic-scheme": "Basic " + base64.b64encode(f"local:{TOKEN}".encode()).decode(),
    "empty-bearer": "Bearer ",
}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(), host="127.0.0.1", port=0)) as c:
        yield c


def assert_security_headers(resp: Any) -> None:
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    assert resp.headers.get("Cache-Control") == "no-store"


async def test_the_walk_covers_every_route_table() -> None:
    """SPEC-003 §routes: the walk sees the core routes and every route of every
    discovered table, so it cannot pass vacuously."""
    core = {("GET", "/health"), ("GET", "/v1/status"), ("GET", "/v1/profile"),
            ("PATCH", "/v1/profile"), ("GET", "/v1/openapi.json")}
    assert core <= set(ROUTES)
    table_routes = sum(len(t) for t in ALL_TABLES)
    assert len(ROUTES) == len(core) + table_routes


async def test_every_route_is_registered_through_a_route_table() -> None:
    """SPEC-003 §routes: every served route carries route-table metadata (no side doors)."""
    app = make_app()
    specs = route_specs(app)
    unregistered = [
        (r.method, concrete_path(r)) for r in app.router.routes() if r not in specs
    ]
    assert unregistered == []
    assert len(specs) == len(list(app.router.routes()))


async def test_public_routes_are_exactly_the_expected_set() -> None:
    """SPEC-003 §routes: public routes are an explicit, reviewed list, each with a reason."""
    specs = route_specs(make_app()).values()
    public = {(s.method, s.path) for s in specs if s.public}
    assert public == EXPECTED_PUBLIC
    assert all(s.public_reason and s.public_reason.strip() for s in specs if s.public)


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS), ids=list(BAD_CREDENTIALS))
async def test_unauthenticated_requests_get_401_on_every_private_route(
    client: TestClient, credential: str
) -> None:
    """SPEC-003 §authentication: no or wrong credential -> 401 problem+json with a Bearer
    challenge, on every method of every route not marked public."""
    header = BAD_CREDENTIALS[credential]
    headers = {"Authorization": header} if header is not None else {}
    checked = 0
    for method, path in ROUTES:
        async with client.request(method, path, headers=headers) as resp:
            if (method, path) in EXPECTED_PUBLIC:
                assert resp.status != 401, (method, path)
                continue
            assert resp.status == 401, (method, path, resp.status)
            assert resp.content_type == PROBLEM_CONTENT_TYPE, (method, path)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
            assert_security_headers(resp)
            body = await resp.json(content_type=None)
            assert body["status"] == 401
            assert body["instance"] == path
            assert TOKEN not in await resp.text()
            checked += 1
    assert checked == len(ROUTES) - len(EXPECTED_PUBLIC)


async def test_the_local_token_passes_authentication_on_every_route(client: TestClient) -> None:
    """SPEC-003 §authentication: the right bearer token is accepted on every route (the
    control that shows the 401s above come from checking the token, not from refusing all);
    the scheme name is case-insensitive.  Routes of discovered tables may fail later for
    want of their services here; core routes must answer without a server error."""
    core_paths = {"/health", "/v1/status", "/v1/profile", "/v1/openapi.json"}
    for scheme in ("Bearer", "bearer"):
        for method, path in ROUTES:
            headers = {"Authorization": f"{scheme} {TOKEN}"}
            async with client.request(method, path, headers=headers) as resp:
                assert resp.status not in (401, 403), (method, path, resp.status)
                if path in core_paths:
                    assert resp.status < 500, (method, path, resp.status)
                assert_security_headers(resp)


async def test_public_health_needs_no_credential(client: TestClient) -> None:
    """SPEC-003 §routes: GET /health is public and answers {"status": "ok"}."""
    async with client.get("/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
        assert_security_headers(resp)


async def test_unknown_paths_do_not_reveal_the_inventory_unauthenticated(
    client: TestClient,
) -> None:
    """SPEC-003 §authentication: a request matching no route is private too, so without a
    credential an existing and a non-existing path answer alike (401)."""
    for method, path in (("GET", "/v1/no-such-thing"), ("POST", "/health"), ("GET", "/")):
        async with client.request(method, path) as resp:
            assert resp.status == 401, (method, path)
            assert resp.content_type == PROBLEM_CONTENT_TYPE


class SessionAuthenticator:
    """A stand-in for SPEC-004 session tokens: "Bearer session-<id>"."""

    async def authenticate(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer session-"):
            return Principal(kind="session", id=header.removeprefix("Bearer session-"))
        return None


async def test_second_credential_kind_plugs_in_with_function_level_authorisation() -> None:
    """SPEC-003 §authentication: an extra Authenticator yields a session Principal on
    request[PRINCIPAL_KEY]; routes admit only the local principal unless they widen
    principal_kinds, so a new credential kind reaches nothing by default (403)."""
    table = RouteTable("test-sessions")

    @table.get("/v1/test/whoami", principal_kinds=("local", "session"))
    async def whoami(request: web.Request) -> web.Response:
        principal = request[PRINCIPAL_KEY]
        return web.json_response({"kind": principal.kind, "id": principal.id})

    app = make_app(extra_tables=[table], authenticators=[SessionAuthenticator()])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        session = {"Authorization": "Bearer session-s1"}
        async with client.get("/v1/test/whoami", headers=session) as resp:
            assert resp.status == 200
            assert await resp.json() == {"kind": "session", "id": "s1"}
        async with client.get("/v1/status", headers=session) as resp:
            assert resp.status == 403
            assert resp.content_type == PROBLEM_CONTENT_TYPE
        local = {"Authorization": f"Bearer {TOKEN}"}
        async with client.get("/v1/test/whoami", headers=local) as resp:
            assert await resp.json() == {"kind": "local", "id": "local"}


def test_a_public_route_must_state_its_reason() -> None:
    """SPEC-003 §routes: public=True without a reason is refused; a reason string works,
    as the peer WebSocket route will need."""
    table = RouteTable("test-public")
    with pytest.raises(ValueError, match="public"):
        table.get("/v1/test/a", public=True)
    with pytest.raises(ValueError, match="public"):
        table.get("/v1/test/b", public="   ")

    @table.get("/v1/test/c", public="authenticates by device-key handshake", streaming=True)
    async def peer(request: web.Request) -> web.Response:
        return web.Response()

    @table.get("/v1/test/d", public=True, reason="constant answer")
    async def other(request: web.Request) -> web.Response:
        return web.Response()

    assert [s.public_reason for s in table] == [
        "authenticates by device-key handshake",
        "constant answer",
    ]


def test_two_tables_cannot_claim_the_same_route() -> None:
    """SPEC-003 §routes: tables are combined in one app but may not shadow each other."""
    table = RouteTable("test-dup")

    @table.get("/v1/status")
    async def shadow(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(ValueError, match="already installed"):
        make_app(extra_tables=[table])


def test_the_token_never_shows_in_repr() -> None:
    """SPEC-003 §authentication: secrets stay out of logs, including via repr()."""
    assert TOKEN not in repr(LocalTokenAuthenticator(TOKEN))
