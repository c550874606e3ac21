"""SPEC-003 error handling and limits, exercised over a real loopback server.

Every failure must come back as application/problem+json, and the node must
keep serving afterwards: each test ends by checking /health and an
authenticated /v1/status still answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.api import (
    PROBLEM_CONTENT_TYPE,
    QUERY_KEY,
    Limits,
    Problem,
    RouteTable,
    TokenFileError,
    build_app,
    load_or_create_token,
)
from node.api.problem import TYPE_MALFORMED_JSON, TYPE_TIMEOUT, TYPE_VALIDATION
from node.api.ratelimit import RateLimiter

TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
LEAK_MARKER = "leak-marker-7f3a"


class DictServices:
    """A NodeServices backed by a dict, standing in for the node."""

    def __init__(self) -> None:
        self.profile: dict[str, Any] = {"display_name": "Ada"}

    async def status(self) -> dict[str, Any]:
        return {"node": "test"}

    async def get_profile(self) -> dict[str, Any]:
        return dict(self.profile)

    async def update_profile(self, changes: dict[str, Any]) -> dict[str, Any]:
        self.profile.update(changes)
        return dict(self.profile)


# Test-only routes, served from an extra table as another concern would.
test_routes = RouteTable("test-only")


@test_routes.get("/v1/test/slow")
async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(10)
    return web.json_response({"finished": True})


@test_routes.get("/v1/test/boom")
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError(f"internal state {LEAK_MARKER}")


@test_routes.get("/v1/test/teapot")
async def teapot(request: web.Request) -> web.Response:
    raise Problem(409, "Conflict", "profile changed meanwhile", current_version=7)


@test_routes.get("/v1/test/stream-then-fail", streaming=True)
async def stream_then_fail(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"partial")
    raise RuntimeError(f"failed mid-stream {LEAK_MARKER}")


@test_routes.get(
    "/v1/test/query",
    query_schema={
        "type": "object",
        "properties": {
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "full": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
)
async def echo_query(request: web.Request) -> web.Response:
    return web.json_response(request[QUERY_KEY])


@asynccontextmanager
async def serve(limits: Limits | None = None) -> AsyncIterator[TestClient]:
    app = build_app(DictServices(), token=TOKEN, limits=limits, extra_tables=[test_routes])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


async def problem_of(resp: Any, status: int) -> dict[str, Any]:
    """Assert ``resp`` is an RFC 9457 problem with ``status`` and return its body."""
    assert resp.status == status, (resp.status, await resp.text())
    assert resp.content_type == PROBLEM_CONTENT_TYPE
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    assert resp.headers.get("Cache-Control") == "no-store"
    body = await resp.json(content_type=None)
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert body["instance"] == resp.url.path
    return body


async def assert_still_serving(client: TestClient) -> None:
    async with client.get("/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    async with client.get("/v1/status", headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == {"node": "test"}


def test_middleware_order_is_the_spec_order() -> None:
    """SPEC-003 §middleware order: errors -> limits -> authentication -> rate limit ->
    validation -> handler, outermost first, as one explicit list."""
    app = build_app(DictServices(), token=TOKEN)
    assert [m.__name__ for m in app.middlewares] == [
        "errors_middleware",
        "limits_middleware",
        "auth_middleware",
        "rate_limit_middleware",
        "validation_middleware",
    ]


async def test_middleware_order_is_observable() -> None:
    """SPEC-003 §middleware order: limits run before authentication (oversized and
    unauthenticated -> 413), authentication before rate limit and validation
    (unauthenticated malformed JSON, or past the rate, -> 401)."""
    async with serve(Limits(max_body_bytes=1024, rate_per_second=0.01, rate_burst=1)) as client:
        async with client.patch("/v1/profile", data=b"{" * 4096) as resp:
            await problem_of(resp, 413)
        for _ in range(3):
            async with client.patch(
                "/v1/profile", data=b"{", headers={"Content-Type": "application/json"}
            ) as resp:
                await problem_of(resp, 401)


async def test_oversized_body_is_413() -> None:
    """SPEC-003 §limits: a body over max_body_bytes is refused with 413, both when
    Content-Length declares it and when a chunked body grows past it while read."""
    async with serve(Limits(max_body_bytes=1024)) as client:
        oversized = json.dumps({"bio": "x" * 2000}).encode()
        async with client.patch("/v1/profile", data=oversized, headers=JSON_AUTH) as resp:
            await problem_of(resp, 413)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 512

        async with client.patch("/v1/profile", data=chunks(), headers=JSON_AUTH) as resp:
            assert "Content-Length" not in resp.request_info.headers
            await problem_of(resp, 413)
        # Control: the same route takes a body under the limit.
        async with client.patch(
            "/v1/profile", json={"bio": "short"}, headers=AUTH
        ) as resp:
            assert resp.status == 200
        await assert_still_serving(client)


async def test_malformed_json_is_400() -> None:
    """SPEC-003 §validation: a body that is not JSON -> 400 "malformed JSON" problem."""
    async with serve() as client:
        for raw in (b'{"display_name": ', b"", b"\xff\xfe{}", b'{"a": NaN}', b"[" * 100_000):
            async with client.patch("/v1/profile", data=raw, headers=JSON_AUTH) as resp:
                body = await problem_of(resp, 400)
                assert body["type"] == TYPE_MALFORMED_JSON, raw[:20]
        await assert_still_serving(client)


async def test_schema_violation_is_400_with_errors() -> None:
    """SPEC-003 §validation: a schema violation -> 400 problem listing {path, message}
    per error; a valid body reaches the handler on request[BODY_KEY]."""
    async with serve() as client:
        bad = {"display_name": 5, "admin": True}
        async with client.patch("/v1/profile", json=bad, headers=AUTH) as resp:
            body = await problem_of(resp, 400)
        assert body["type"] == TYPE_VALIDATION
        paths = {e["path"] for e in body["errors"]}
        assert paths == {"", "/display_name"}
        assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])

        async with client.patch("/v1/profile", json={}, headers=AUTH) as resp:
            await problem_of(resp, 400)
        async with client.patch(
            "/v1/profile", data=b'{"bio": "x"}', headers={**AUTH, "Content-Type": "text/plain"}
        ) as resp:
            await problem_of(resp, 415)

        async with client.patch("/v1/profile", json={"locale": "de-CH"}, headers=AUTH) as resp:
            assert resp.status == 200
            assert await resp.json() == {"display_name": "Ada", "locale": "de-CH"}
        async with client.get("/v1/profile", headers=AUTH) as resp:
            assert (await resp.json())["locale"] == "de-CH"
        await assert_still_serving(client)


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"bio": [[[[1]]]]}, None),  # control: within bounds
        ({"bio": json.loads("[" * 40 + "]" * 40)}, "/bio" + "/0" * 31),
        ({"bio": "x" * (256 * 1024 + 1)}, "/bio"),
        ({"bio": "é" * (128 * 1024 + 1)}, "/bio"),  # bounds count UTF-8 bytes
        ({"bio": list(range(10_001))}, "/bio"),
    ],
    ids=["within-bounds", "too-deep", "long-string", "long-utf8-string", "long-array"],
)
async def test_json_bounds_are_enforced_before_the_schema(
    document: dict[str, Any], where: str | None
) -> None:
    """SPEC-003 §limits: JSON bounds (depth 32, string 256 KiB, array 10k items) are
    checked in validation, reported as 400 errors at the offending path."""
    async with serve() as client:
        async with client.patch("/v1/profile", json=document, headers=AUTH) as resp:
            body = await problem_of(resp, 400)
        assert body["type"] == TYPE_VALIDATION
        bound_paths = [e["path"] for e in body["errors"] if "than" in e["message"]]
        if where is None:
            assert bound_paths == []  # only the schema (bio must be a string) objects
        else:
            assert bound_paths == [where]
        await assert_still_serving(client)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"bio": "\\ud800"}',  # a lone high surrogate
        b'{"bio": "ok \\udfff end"}',  # a lone low surrogate inside text
        b'{"bio": "\\udc00\\ud800"}',  # a reversed pair is two lone halves
        b'{"\\ud800": "x"}',  # in an object key
    ],
    ids=["high", "low-inside", "reversed-pair", "key"],
)
async def test_an_unpaired_surrogate_is_refused_at_the_json_bounds(raw: bytes) -> None:
    """SPEC-003 §7.4: a string that is not encodable as UTF-8 (a JSON escape that
    decodes to an unpaired surrogate) is a 400 `validation` problem, before the
    handler: it made POST /v1/memory answer 500 and stopped the live frame."""
    async with serve() as client:
        async with client.patch("/v1/profile", data=raw, headers=JSON_AUTH) as resp:
            body = await problem_of(resp, 400)
        assert body["type"] == TYPE_VALIDATION
        assert any("surrogate" in e["message"] for e in body["errors"]), body
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # the answer echoes none
        async with client.get("/v1/profile", headers=AUTH) as resp:
            assert await resp.json() == {"display_name": "Ada"}
        # a proper pair (an astral character) is fine
        async with client.patch("/v1/profile", data=b'{"bio": "\\ud83d\\ude00"}',
                                headers=JSON_AUTH) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["bio"] == "\U0001f600"
        await assert_still_serving(client)


async def test_query_parameters_are_coerced_and_validated() -> None:
    """SPEC-003 §validation: a route's query schema sees coerced scalars; violations and
    repeated parameters -> 400 problem with errors."""
    async with serve() as client:
        async with client.get("/v1/test/query?limit=5&full=true", headers=AUTH) as resp:
            assert resp.status == 200
            assert await resp.json() == {"limit": 5, "full": True}
        for query in ("limit=abc", "limit=500", "limit=1&limit=2", "other=1"):
            async with client.get(f"/v1/test/query?{query}", headers=AUTH) as resp:
                body = await problem_of(resp, 400)
                assert body["errors"], query
        await assert_still_serving(client)


async def test_unknown_route_is_404() -> None:
    """SPEC-003 §errors: the router's 404 is a problem+json too."""
    async with serve() as client:
        async with client.get("/v1/no-such-route", headers=AUTH) as resp:
            await problem_of(resp, 404)
        await assert_still_serving(client)


async def test_wrong_method_is_405_with_allow() -> None:
    """SPEC-003 §errors: the router's 405 is a problem+json carrying the Allow header."""
    async with serve() as client:
        async with client.delete("/v1/profile", headers=AUTH) as resp:
            await problem_of(resp, 405)
            assert set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "PATCH"}
        await assert_still_serving(client)


async def test_rate_limit_is_429_with_retry_after() -> None:
    """SPEC-003 §rate limit: past the burst a client gets 429 with Retry-After; clients
    are limited separately (principal vs remote address) and recover after waiting."""
    async with serve(Limits(rate_per_second=2.0, rate_burst=3)) as client:
        for _ in range(3):
            async with client.get("/v1/status", headers=AUTH) as resp:
                assert resp.status == 200
        async with client.get("/v1/status", headers=AUTH) as resp:
            await problem_of(resp, 429)
            retry_after = int(resp.headers["Retry-After"])
        assert retry_after >= 1
        async with client.get("/health") as resp:  # the address bucket is untouched
            assert resp.status == 200
        await asyncio.sleep(retry_after)
        await assert_still_serving(client)


async def test_public_routes_are_rate_limited_by_address() -> None:
    """SPEC-003 §rate limit: unauthenticated traffic to a public route is limited per
    remote address, without using up the authenticated principal's allowance."""
    async with serve(Limits(rate_per_second=0.01, rate_burst=2)) as client:
        for _ in range(2):
            async with client.get("/health") as resp:
                assert resp.status == 200
        async with client.get("/health") as resp:
            await problem_of(resp, 429)
            assert int(resp.headers["Retry-After"]) >= 1
        async with client.get("/v1/status", headers=AUTH) as resp:
            assert resp.status == 200


async def test_handler_timeout_is_503() -> None:
    """SPEC-003 §limits: a handler running past handler_timeout is cut off with a
    503 "timed out" problem."""
    async with serve(Limits(handler_timeout=0.2)) as client:
        started = time.monotonic()
        async with client.get("/v1/test/slow", headers=AUTH) as resp:
            body = await problem_of(resp, 503)
        assert time.monotonic() - started < 5
        assert body["type"] == TYPE_TIMEOUT
        assert "timed out" in body["title"].lower()
        await assert_still_serving(client)


async def test_unexpected_exception_is_500_without_leaks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC-003 §errors: an unexpected exception -> 500 problem that says nothing about
    it; the traceback goes to the node's log only."""
    async with serve() as client:
        with caplog.at_level(logging.ERROR, logger="node.api"):
            async with client.get("/v1/test/boom", headers=AUTH) as resp:
                await problem_of(resp, 500)
                text = await resp.text()
        for leak in (LEAK_MARKER, "Traceback", "RuntimeError", "test_api_errors"):
            assert leak not in text
        assert any(
            r.exc_info and LEAK_MARKER in str(r.exc_info[1]) for r in caplog.records
        ), "the traceback must be logged server-side"
        await assert_still_serving(client)


async def test_failure_after_streaming_began_does_not_send_a_second_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC-003 §errors: once a streamed response has begun, an error cannot become a
    problem response; the connection is dropped, nothing leaks, and the failure is logged."""
    async with serve() as client:
        with caplog.at_level(logging.ERROR, logger="node.api"):
            async with client.get("/v1/test/stream-then-fail", headers=AUTH) as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        assert any(
            r.exc_info and LEAK_MARKER in str(r.exc_info[1]) for r in caplog.records
        )
        await assert_still_serving(client)


async def test_handlers_answer_errors_by_raising_problem() -> None:
    """SPEC-003 §errors: Problem(status, title, detail, **extra) raised by a handler
    becomes that problem, extension members included."""
    async with serve() as client:
        async with client.get("/v1/test/teapot", headers=AUTH) as resp:
            body = await problem_of(resp, 409)
        assert body["title"] == "Conflict"
        assert body["detail"] == "profile changed meanwhile"
        assert body["current_version"] == 7
        await assert_still_serving(client)


def test_limits_defaults() -> None:
    """SPEC-003 §limits: limits are on by default with the standard values."""
    limits = Limits()
    assert limits.max_body_bytes == 1024 * 1024
    assert limits.handler_timeout == 30
    assert (limits.rate_per_second, limits.rate_burst) == (100, 200)
    assert limits.max_json_depth == 32
    assert limits.max_json_string == 256 * 1024
    assert limits.max_json_array == 10_000
    app = build_app(DictServices(), token=TOKEN)
    assert app._client_max_size == limits.max_body_bytes


def test_rate_limiter_memory_is_bounded() -> None:
    """SPEC-003 §rate limit: idle clients are evicted and the table never exceeds its cap."""
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, max_clients=50, clock=lambda: now[0])
    for i in range(1000):
        assert limiter.acquire(f"addr:{i}") == 0.0
        assert len(limiter) <= 50
    now[0] += 3.0  # every bucket has refilled: nothing worth remembering
    limiter.acquire("addr:fresh")
    assert len(limiter) == 1
    assert limiter.acquire("addr:fresh") == 0.0
    assert limiter.acquire("addr:fresh") == pytest.approx(1.0)


def test_load_or_create_token(tmp_path: Path) -> None:
    """SPEC-003 §authentication: the token file is created 0600 in a 0700 directory,
    read back unchanged, and refused when group or others can read it."""
    path = tmp_path / "state" / "api-token"
    token = load_or_create_token(path)
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token
    assert path.read_text().strip() == token
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind
    assert load_or_create_token(tmp_path / "other") != token

    os.chmod(path, 0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        load_or_create_token(path)
    os.chmod(path, 0o640)
    with pytest.raises(TokenFileError):
        load_or_create_token(path)
    os.chmod(path, 0o600)
    assert load_or_create_token(path) == token


def test_token_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SPEC-003 §authentication: creating and loading the token logs no secret."""
    with caplog.at_level(logging.DEBUG):
        token = load_or_create_token(tmp_path / "api-token")
        load_or_create_token(tmp_path / "api-token")
    assert caplog.records  # creation is logged, so the check below is meaningful
    assert all(token not in r.getMessage() for r in caplog.records)


async def test_too_many_requests_in_flight_are_shed_with_503() -> None:
    """SPEC-003 §7.5: beyond max_in_flight concurrent requests the node answers 503
    'overloaded' with Retry-After instead of queueing, and recovers afterwards."""
    release = asyncio.Event()
    slow = RouteTable("slow-test")

    @slow.get("/v1/test-slow")
    async def slow_handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    app = build_app(DictServices(), token=TOKEN, limits=Limits(max_in_flight=2),
                    extra_tables=[slow])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        first = [asyncio.ensure_future(client.get("/v1/test-slow", headers=headers))
                 for _ in range(2)]
        await asyncio.sleep(0.2)
        shed = await client.get("/v1/status", headers=headers)
        assert shed.status == 503
        assert shed.headers["Retry-After"] == "1"
        assert (await shed.json())["type"] == "urn:maia-node:problem:overloaded"
        release.set()
        for fut in first:
            assert (await fut).status == 200
        again = await client.get("/v1/status", headers=headers)
        assert again.status == 200
        assert again.headers["Server"] == "maia-node"


# -- errors and needs declared once, by the route table (issue 12) -----------------------------
class NoSuchThing(LookupError):
    def __str__(self) -> str:
        return f"no thing is called {self.args[0]!r}"


class SecretTrouble(LookupError):
    """Not in the table's map: stays a 500 that says nothing."""


THING_KEY: web.AppKey[dict] = web.AppKey("test_things", dict)
mapped_routes = RouteTable("things", errors={NoSuchThing: (404, "No such thing")},
                           requires=[THING_KEY])


@mapped_routes.get("/v1/test/things/{name}")
async def thing(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "secret":
        raise SecretTrouble(LEAK_MARKER)
    if name not in request.app[THING_KEY]:
        raise NoSuchThing(name)
    return web.json_response({"name": name})


async def test_a_table_maps_its_domain_errors_to_problems_in_one_place() -> None:
    """SPEC-003 003.3.9: a domain error the table declares becomes its problem, with the error's own
    sentence as the detail; one it does not declare is a 500 that leaks nothing."""
    app = build_app(DictServices(), token=TOKEN, extra_tables=[mapped_routes])
    app[THING_KEY] = {"kettle": 1}
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        ok = await client.get("/v1/test/things/kettle", headers=AUTH)
        assert ok.status == 200
        resp = await client.get("/v1/test/things/teapot", headers=AUTH)
        body = await problem_of(resp, 404)
        assert body["title"] == "No such thing"
        assert body["detail"] == "no thing is called 'teapot'"
        resp = await client.get("/v1/test/things/secret", headers=AUTH)
        body = await problem_of(resp, 500)
        assert LEAK_MARKER not in json.dumps(body)


async def test_a_table_missing_its_state_answers_503_after_authentication() -> None:
    """SPEC-003 003.3.9: a table's declared state (``requires``) missing from the app is one 503,
    and only for an authenticated caller: without a credential the answer stays 401."""
    app = build_app(DictServices(), token=TOKEN, extra_tables=[mapped_routes])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        assert (await client.get("/v1/test/things/kettle")).status == 401
        body = await problem_of(await client.get("/v1/test/things/kettle", headers=AUTH), 503)
        assert body["title"] == "Things unavailable"


# -- streaming routes: a cap of their own, the body in time, the scope before the body ----------
stream_routes = RouteTable("test-streams")
SESSION_TOKEN = "session-token-" + secrets.token_urlsafe(16)
ECHO_SCHEMA = {"type": "object", "additionalProperties": False,
               "properties": {"n": {"type": "integer"}}}


@stream_routes.post("/v1/test/stream", body_schema=ECHO_SCHEMA, streaming=True,
                    principal_kinds=("local", "session"), scope="models:ask")
async def slow_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await asyncio.sleep(1.0)
    await response.write(b"done")
    return response


class ScopelessSession:
    """A session principal granted nothing beyond its own objects."""

    async def authenticate(self, request: web.Request):
        from node.api.auth import Principal

        if request.headers.get("Authorization") == f"Bearer {SESSION_TOKEN}":
            return Principal("session", "s1", frozenset())
        return None


@asynccontextmanager
async def serve_streams(limits: Limits) -> AsyncIterator[TestClient]:
    app = build_app(DictServices(), token=TOKEN, limits=limits, extra_tables=[stream_routes],
                    authenticators=[ScopelessSession()])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


async def test_streaming_routes_are_capped_of_their_own() -> None:
    """SPEC-003 §7.5, found by an attacker's read: streaming routes skip the handler time
    limit and were outside the in-flight cap, so an agent's thousands of open chat streams
    held memory and descriptors unbounded. Past ``max_streams`` the next is a 503."""
    async with serve_streams(Limits(max_streams=2)) as client:
        async def one() -> int:
            async with client.post("/v1/test/stream", json={"n": 1}, headers=AUTH) as resp:
                await resp.read()
                return resp.status

        first = [asyncio.create_task(one()) for _ in range(2)]
        await asyncio.sleep(0.3)
        async with client.post("/v1/test/stream", json={"n": 1}, headers=AUTH) as resp:
            body = await problem_of(resp, 503)
            assert "streams" in body["detail"]
        assert await asyncio.gather(*first) == [200, 200]
        async with client.post("/v1/test/stream", json={"n": 1}, headers=AUTH) as resp:
            assert resp.status == 200  # the slots came back
        await assert_still_serving(client)


@asynccontextmanager
async def stalled_post(client: TestClient, token: str,
                       partial: bytes) -> AsyncIterator[asyncio.StreamReader]:
    """A POST to the streaming test route that declares a 1,000-byte body, sends only
    ``partial`` of it and stalls; yields the reader of the node's answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /v1/test/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + partial)
        await writer.drain()
        yield reader
    finally:
        writer.close()


async def test_a_stalled_body_is_cut_off_even_on_a_streaming_route() -> None:
    """SPEC-003 §7: the body is read within the handler time limit; a streaming route has
    no handler limit, and a sender that declared 1 KiB and stalled held it open for ever."""
    async with serve_streams(Limits(handler_timeout=0.5)) as client:
        async with stalled_post(client, TOKEN, b'{"n": ') as reader:
            started = time.monotonic()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert time.monotonic() - started < 3
        await assert_still_serving(client)


async def test_a_route_s_scope_is_checked_before_its_body_is_read() -> None:
    """SPEC-003 §6.7, found by an attacker's read: the chat route checked ``models:ask`` in
    its handler, after the body was read, so a session without it could still make the node
    wait for and hold a body. A route that declares its scope refuses at once."""
    async with serve_streams(Limits(handler_timeout=30)) as client:
        async with stalled_post(client, SESSION_TOKEN, b"{") as reader:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 403"), head
            rest = await asyncio.wait_for(reader.read(4096), 5)
            assert b"models:ask" in rest
        await assert_still_serving(client)
