"""The edges of the HTTP API on real nodes: hostile bytes, foreign names, closed clients.

Each test talks to real ``maia up`` processes on loopback, over raw sockets where a client
library would refuse to send what a hostile one can (SPEC-003 §2.4, §2.5, §4.3, §9.7, §11.7).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.nodes import NodeProc, make_mesh, wait_for

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    root = tmp_path_factory.mktemp("edges")
    (one,) = make_mesh(root, ["edge"])
    config = one.data_dir / "config.toml"
    config.write_text(config.read_text() + '\n[api]\nallowed_hosts = ["maia.home.arpa"]\n')
    one.start()
    try:
        yield one
    finally:
        one.stop()


def raw(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are; return (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and _complete(head, body):
                break
    return _parse(data)


def _complete(head: bytes, body: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_problem(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, (status, body)
    assert headers.get("content-type", "").startswith(PROBLEM), headers
    problem = json.loads(body)
    assert problem["status"] == expected
    return problem


def get(path: str, *extra: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- §4.3 Expect -------------------------------------------------------------------------------
@pytest.mark.parametrize("listener", ["local", "peer"])
@pytest.mark.parametrize("path", ["/health", "/no/such/path"])
def test_an_unknown_expectation_is_a_417_problem_that_echoes_nothing(
    node: NodeProc, listener: str, path: str
) -> None:
    """SPEC-003 003.4.3, 003.9.1: any `Expect` other than 100-continue, in any bytes, answers a
    417 problem in the limits step (before authentication, like a 413, so an unknown path learns
    nothing), never a 5xx, and the answer does not echo the header; both listeners."""
    port = node.port if listener == "local" else node.peer_port
    for value in (b"caf\xe9", b"\xff\xfe", b"something-else"):
        request = get(path).replace(b"Connection: close", b"Connection: close\r\nExpect: " + value)
        status, headers, body = raw(port, request)
        problem = assert_problem(status, headers, body, 417)
        assert value not in body and b"caf" not in body, problem
    assert node.request("GET", "/health", auth=False) == {"status": "ok"}


def test_100_continue_is_sent_only_after_authentication(node: NodeProc) -> None:
    """SPEC-003 003.4.3: `Expect: 100-continue` is answered inside the chain; an anonymous
    caller gets its 401 problem without a `100 Continue`, an authenticated one gets
    `100 Continue` and then its answer."""
    body = json.dumps({"display_name": "Edge"}).encode()
    head = (
        "PATCH /v1/profile HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    status, headers, answer = raw(node.port, (head + "\r\n").encode())
    assert_problem(status, headers, answer, 401)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall((head + f"Authorization: Bearer {node.token}\r\n\r\n").encode())
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, _, answer = _parse(data)
    assert status == 200 and json.loads(answer)["display_name"] == "Edge"


# -- §9.7 malformed requests -------------------------------------------------------------------
MALFORMED = [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad\x01: 1\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /he\x00alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
]


def test_malformed_requests_are_problems_and_one_rate_limited_log_line(node: NodeProc) -> None:
    """SPEC-003 003.9.7, 003.9.1: a request the HTTP parser refuses answers a 4xx problem, and
    a flood of them leaves no traceback and no ERROR in the log, only rate-limited lines."""
    before = len(node.log())
    for listener in (node.port, node.peer_port):
        for _ in range(20):
            for request in MALFORMED:
                status, headers, body = raw(listener, request)
                assert 400 <= status < 500, (request[:60], status, body)
                assert headers.get("content-type", "").startswith(PROBLEM), (request[:60], body)
                assert b"Traceback" not in body
    assert node.request("GET", "/health", auth=False) == {"status": "ok"}
    log = node.log()[before:]
    assert "Traceback" not in log, log[-3000:]
    assert "ERROR" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if "malformed request" in line]
    assert 1 <= len(lines) <= 4, lines  # 280 requests, a line per listener per interval


# -- §2.4 Host, §2.5 Origin --------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:7411", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "10.0.0.1"])
def test_a_foreign_host_is_refused_on_the_local_api(node: NodeProc, host: str) -> None:
    """SPEC-003 003.2.4: the local API answers only loopback names, its own address and the
    configured `[api] allowed_hosts`; anything else (DNS rebinding) is a 403 problem, with or
    without credentials, on public routes too."""
    for request in (
        f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        f"GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Authorization: Bearer {node.token}\r\n\r\n",
    ):
        problem = assert_problem(*raw(node.port, request.encode()), 403)
        assert problem["type"] == "urn:maia-node:problem:forbidden-host"
    login = json.dumps({"token": node.token}).encode()
    request = (f"POST /ui/login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(login)}\r\n\r\n")
    status, headers, body = raw(node.port, request.encode() + login)
    assert_problem(status, headers, body, 403)
    assert "set-cookie" not in headers


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:{port}", "127.0.0.1:{port}",
                                  "[::1]:{port}", "maia.home.arpa:{port}", "app.localhost"])
def test_loopback_and_configured_names_are_served(node: NodeProc, host: str) -> None:
    """SPEC-003 003.2.4: loopback names and configured names pass the Host check."""
    request = (f"GET /v1/status HTTP/1.1\r\nHost: {host.format(port=node.port)}\r\n"
               f"Connection: close\r\nAuthorization: Bearer {node.token}\r\n\r\n")
    status, _, body = raw(node.port, request.encode())
    assert status == 200, body


async def test_a_foreign_origin_cannot_write_or_open_a_websocket(node: NodeProc) -> None:
    """SPEC-003 003.2.5: a state-changing request or a WebSocket upgrade carrying a browser
    `Origin` other than the node's own page is a 403 problem, whatever its credentials (bearer,
    or cookie with the CSRF token); the node's own origin and requests without `Origin` pass;
    on the peer listener every browser `Origin` is refused before any handshake."""
    own = f"http://127.0.0.1:{node.port}"
    bearer = {"Authorization": f"Bearer {node.token}"}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(f"{node.base}/ui/login", json={"token": node.token},
                             headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403 and resp.content_type == PROBLEM
            assert (await resp.json())["type"] == "urn:maia-node:problem:forbidden-origin"
            assert not jar.filter_cookies(node.base)
        async with http.post(f"{node.base}/ui/login", json={"token": node.token},
                             headers={"Origin": own}) as resp:
            assert resp.status == 200
        async with http.get(f"{node.base}/ui/session") as resp:
            csrf = (await resp.json())["csrf_token"]
        for origin in ("http://evil.example", "null", f"http://localhost:{node.port + 1}",
                       f"https://127.0.0.1:{node.port}"):
            async with http.post(f"{node.base}/v1/memory", json={"text": "cross-site write"},
                                 headers={"X-CSRF-Token": csrf, "Origin": origin}) as resp:
                assert resp.status == 403, (origin, await resp.text())
                assert (await resp.json())["type"] == "urn:maia-node:problem:forbidden-origin"
        async with http.post(f"{node.base}/v1/memory", json={"text": "own page write"},
                             headers={"X-CSRF-Token": csrf, "Origin": own}) as resp:
            assert resp.status in (200, 201), await resp.text()
        async with http.post(f"{node.base}/v1/memory", json={"text": "a script's write"},
                             headers=bearer) as resp:
            assert resp.status in (200, 201), await resp.text()
        async with http.get(f"{node.base}/v1/status",
                            headers={**bearer, "Origin": "http://evil.example"}) as resp:
            assert resp.status == 200  # a read: without CORS the page cannot see the answer
        for path in ("/v1/peer", "/v1/pair"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"http://127.0.0.1:{node.peer_port}{path}",
                                      origin="http://evil.example")
            assert refused.value.status == 403
            if path == "/v1/pair":  # without the Origin: refused for another reason, no window
                with pytest.raises(aiohttp.WSServerHandshakeError) as no_window:
                    await http.ws_connect(f"http://127.0.0.1:{node.peer_port}{path}")
                assert no_window.value.status == 409
                continue
            ws = await http.ws_connect(f"http://127.0.0.1:{node.peer_port}{path}")
            await ws.close()
    assert not any("cross-site" in e.get("text", "") for e in node.entries())


# -- §11.7 live streams ------------------------------------------------------------------------
async def test_a_closed_live_stream_frees_its_place_at_once(node: NodeProc) -> None:
    """SPEC-003 003.11.7: a client that closes its live stream frees its place at once, so
    twenty page reloads in a row are all served (16 places) without waiting for a write."""
    bearer = {"Authorization": f"Bearer {node.token}"}
    started = time.monotonic()
    for i in range(20):
        async with (aiohttp.ClientSession() as http,
                    http.get(f"{node.base}/v1/live", headers=bearer) as resp):
            assert resp.status == 200, (i, await resp.text())
            await resp.content.readline()
        wait_for(lambda: node.request("GET", "/v1/status")["web"]["streams"] == 0,
                 timeout=2, what="the closed stream is noticed")
    assert time.monotonic() - started < 14  # well inside one 15 s heartbeat
