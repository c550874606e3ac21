"""The web page's HTTP contract on real nodes: login cookie, CSRF, navigation, live events,
documents (SPEC-003 §11). The browser itself is exercised in tests/test_web_ui.py."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.web.live import Stream
from node.web.logins import Logins
from tests.nodes import NodeProc, connected_pair, wait_for

CSP = "default-src 'self'; frame-ancestors 'none'"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc]]:
    with connected_pair(tmp_path_factory.mktemp("web")) as pair:
        yield pair


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: keep cookies set by an IP address host (127.0.0.1), as a browser does.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def login(http: aiohttp.ClientSession, node: NodeProc) -> str:
    """Log in with the node's token; returns the CSRF token of the new login."""
    async with http.post(f"{node.base}/ui/login", json={"token": node.token}) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(f"{node.base}/ui/session") as resp:
        assert resp.status == 200
        return (await resp.json())["csrf_token"]


def cookie_name(node: NodeProc) -> str:
    return "maia_session_" + node.device_id().replace("-", "")[:7].lower()


def bearer(node: NodeProc) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}"}


async def read_event(resp: aiohttp.ClientResponse, kind: str, timeout: float = 10.0,
                     match: Any = None) -> dict[str, Any]:
    """The data of the next SSE event of ``kind`` (optionally satisfying ``match``)."""
    deadline = time.monotonic() + timeout
    event = None
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(resp.content.readline(), deadline - time.monotonic())
        if not line:
            raise AssertionError("the stream ended")
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            event = text.removeprefix("event: ")
        elif text.startswith("data: ") and event == kind:
            data = json.loads(text.removeprefix("data: "))
            if match is None or match(data):
                return data
    raise AssertionError(f"no {kind} event within {timeout} s")


# -- login --------------------------------------------------------------------------------------
async def test_the_token_buys_a_strict_http_only_cookie_that_is_not_the_token(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.2: the right token gives a login cookie named for this node, HttpOnly,
    SameSite=Strict, Path=/, a 12 h Max-Age, no Secure over plain http; its value is a new
    random secret, never the token."""
    a, _ = mesh
    async with http.post(f"{a.base}/ui/login", json={"token": a.token}) as resp:
        assert resp.status == 200
        header = resp.headers["Set-Cookie"]
        body = await resp.text()
    name, _, rest = header.partition("=")
    value = rest.split(";")[0]
    attrs = {part.strip().split("=")[0].lower(): part.strip() for part in rest.split(";")[1:]}
    assert name == cookie_name(a)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    assert a.token not in header and a.token not in body
    assert "httponly" in attrs and attrs["samesite"] == "SameSite=Strict"
    assert attrs["path"] == "Path=/"
    assert 43000 < int(attrs["max-age"].split("=")[1]) <= 43200
    assert "secure" not in attrs
    assert json.loads(body)["logged_in"] is True


async def test_a_wrong_token_gets_401_and_stays_out_of_the_log(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.2, §5.7: a wrong token is a 401 problem without a cookie, and the log never
    holds the presented value; a body that is not JSON is refused before any comparison."""
    a, _ = mesh
    wrong = secrets.token_urlsafe(32)
    async with http.post(f"{a.base}/ui/login", json={"token": wrong}) as resp:
        assert resp.status == 401
        assert resp.content_type == PROBLEM
        assert "Set-Cookie" not in resp.headers
    async with http.post(f"{a.base}/ui/login", data={"token": a.token}) as resp:
        assert resp.status == 415  # a cross-site HTML form cannot log anyone in
        assert "Set-Cookie" not in resp.headers
    assert len(http.cookie_jar) == 0
    assert wrong not in a.log() and a.token not in a.log()


# -- the cookie as a credential -------------------------------------------------------------------
async def test_the_cookie_is_the_local_principal_and_unsafe_methods_need_the_csrf_token(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.3, §11.4: with the cookie alone the owner's routes answer; a write without
    the X-CSRF-Token header, or with a wrong one, is a 403 csrf problem and changes nothing;
    with it, the write succeeds. The bearer token needs no CSRF token."""
    a, _ = mesh
    csrf = await login(http, a)
    for path in ("/v1/status", "/v1/devices", "/v1/peers", "/v1/memory", "/v1/documents"):
        async with http.get(f"{a.base}{path}") as resp:
            assert resp.status == 200, path
    before = len(a.entries())
    for headers in ({}, {"X-CSRF-Token": secrets.token_urlsafe(32)}, {"X-CSRF-Token": ""}):
        async with http.post(f"{a.base}/v1/memory", json={"text": "forged"},
                             headers=headers) as resp:
            assert resp.status == 403
            assert resp.content_type == PROBLEM
            assert (await resp.json())["type"] == "urn:maia-node:problem:csrf"
        async with http.patch(f"{a.base}/v1/profile", json={"bio": "forged"},
                              headers=headers) as resp:
            assert resp.status == 403
    assert len(a.entries()) == before
    assert a.request("GET", "/v1/profile").get("bio") != "forged"
    async with http.post(f"{a.base}/v1/memory", json={"text": "from the page"},
                         headers={"X-CSRF-Token": csrf}) as resp:
        assert resp.status == 201
    assert len(a.entries()) == before + 1
    a.add_memory("from a script with the bearer token")  # no CSRF header at all
    assert len(a.entries()) == before + 2


async def test_a_forged_or_foreign_cookie_is_no_credential(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.2, §11.3: an invented cookie value gets 401; node a's login does not open
    node b (its own cookie name, and b never issued that value)."""
    a, b = mesh
    await login(http, a)
    async with http.get(f"{b.base}/v1/status") as resp:
        assert resp.status == 401
    value = next(c.value for c in http.cookie_jar if c.key == cookie_name(a))
    headers = {"Cookie": f"{cookie_name(b)}={value}"}
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(f"{b.base}/v1/status", headers=headers) as resp:
            assert resp.status == 401
        forged = {"Cookie": f"{cookie_name(a)}={secrets.token_urlsafe(32)}"}
        async with fresh.get(f"{a.base}/v1/status", headers=forged) as resp:
            assert resp.status == 401
            assert resp.content_type == PROBLEM


async def test_a_page_navigation_without_login_goes_to_the_login_form(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.5: a browser opening /, /ui or /ui/ without a login is sent (303) to the
    login form; a script's request to the same path, and any /v1 request, still get the 401
    problem."""
    a, _ = mesh
    navigate = [{"Accept": "text/html,application/xhtml+xml"}, {"Sec-Fetch-Mode": "navigate"}]
    for path in ("/ui/", "/ui", "/"):
        for headers in navigate:
            async with http.get(f"{a.base}{path}", headers=headers,
                                allow_redirects=False) as resp:
                assert resp.status == 303, (path, headers)
                assert resp.headers["Location"] == "/ui/login"
        async with http.get(f"{a.base}{path}", allow_redirects=False) as resp:
            assert resp.status == 401, path
            assert resp.content_type == PROBLEM
    async with http.get(f"{a.base}/v1/status", headers=navigate[1]) as resp:
        assert resp.status == 401
    async with http.get(f"{a.base}/ui/app.js") as resp:
        assert resp.status == 401  # the page's code is private; only the login's files are not
    async with http.get(f"{a.base}/ui/login") as resp:
        assert resp.status == 200
        assert 'id="login-form"' in await resp.text()


async def test_html_answers_carry_the_content_security_policy(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §10.1, §11.1: the login form and the page carry the CSP, no-referrer, nosniff
    and no-store; they hold no inline script or style for the CSP to block; the login's
    public files are served with their types."""
    a, _ = mesh
    pages = []
    async with http.get(f"{a.base}/ui/login") as resp:
        pages.append((resp.headers.copy(), await resp.text()))
    await login(http, a)
    async with http.get(f"{a.base}/ui/") as resp:
        assert resp.status == 200
        pages.append((resp.headers.copy(), await resp.text()))
    for headers, html in pages:
        assert headers["Content-Security-Policy"] == CSP
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Type"].startswith("text/html")
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
        assert "style=" not in html and "<style" not in html
        assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    async with aiohttp.ClientSession() as anonymous:
        for name, kind in (("style.css", "text/css"), ("login.js", "text/javascript"),
                           ("icon.svg", "image/svg+xml")):
            async with anonymous.get(f"{a.base}/ui/static/{name}") as resp:
                assert resp.status == 200 and resp.content_type == kind
    async with http.get(f"{a.base}/ui/app.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"


async def test_logout_ends_the_login_and_its_live_stream(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.6, §11.4: logout needs the CSRF token; it clears the cookie, the cookie
    stops working, and the login's open event stream closes at once."""
    a, _ = mesh
    csrf = await login(http, a)
    value = next(c.value for c in http.cookie_jar if c.key == cookie_name(a))
    async with http.get(f"{a.base}/v1/live") as stream:
        assert stream.status == 200
        assert await stream.content.readline() == b"retry: 2000\n"
        async with http.post(f"{a.base}/ui/logout") as resp:
            assert resp.status == 403  # no CSRF token: a cross-site page cannot log you out
        async with http.post(f"{a.base}/ui/logout", headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
            assert (await resp.json())["logged_out"] is True
            assert "Max-Age=0" in resp.headers["Set-Cookie"]
        rest = await asyncio.wait_for(stream.content.read(), 5)
        assert b"event:" not in rest  # ended, without further events
    async with aiohttp.ClientSession() as fresh:
        headers = {"Cookie": f"{cookie_name(a)}={value}"}
        async with fresh.get(f"{a.base}/v1/status", headers=headers) as resp:
            assert resp.status == 401


async def test_ui_session_needs_a_browser_login(mesh: tuple[NodeProc, NodeProc],
                                                 http: aiohttp.ClientSession) -> None:
    """SPEC-003 §11.4: the CSRF token is handed only to a cookie login; a bearer client is told
    it has none (404), and nobody without a credential learns anything (401)."""
    a, _ = mesh
    async with http.get(f"{a.base}/ui/session", headers=bearer(a)) as resp:
        assert resp.status == 404
    async with http.get(f"{a.base}/ui/session") as resp:
        assert resp.status == 401


# -- live events --------------------------------------------------------------------------------
async def test_live_events_name_changed_documents_and_peers_but_carry_no_content(
    mesh: tuple[NodeProc, NodeProc], http: aiohttp.ClientSession
) -> None:
    """SPEC-003 §11.7: b's stream announces a document that changed by sync from a (not
    local), without the entry's text; a peer leaving and coming back is announced too."""
    a, b = mesh
    secret_text = f"private words {secrets.token_hex(8)}"
    async with http.get(f"{b.base}/v1/live", headers=bearer(b)) as stream:
        assert stream.status == 200
        assert stream.content_type == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-store"
        entry = a.add_memory(secret_text)
        month = entry["created_at"][:7]
        data = await read_event(stream, "doc", match=lambda d: d["doc"].startswith("memory/"))
        assert data == {"doc": data["doc"], "local": False}
        assert f"/{month}/" in data["doc"]
        a_id = a.device_id()
        async with http.get(f"{a.base}/v1/live", headers=bearer(a)) as on_a:
            assert await on_a.content.readline() == b"retry: 2000\n"
            started = time.monotonic()
            a.stop()
            assert time.monotonic() - started < 5  # an open stream does not hold the node up
            await asyncio.wait_for(on_a.content.read(), 5)  # and it ended with the node
        left = await read_event(stream, "peer", timeout=15)
        assert left == {"device_id": a_id, "connected": False}
        a.start()
        back = await read_event(stream, "peer", timeout=30)
        assert back == {"device_id": a_id, "connected": True}
        seen = stream.content.read_nowait()
    assert secret_text.encode() not in seen
    wait_for(lambda: a.connected() and b.connected(), what="a and b reconnected")


async def test_the_number_of_live_streams_is_bounded(mesh: tuple[NodeProc, NodeProc]) -> None:
    """SPEC-003 §11.7: at most 16 streams at once; one more gets a 503 overloaded problem with
    Retry-After; a stream whose client left is noticed at the next write and frees its place."""
    _, b = mesh
    b.add_memory("flush streams whose clients left")  # each stale stream fails its next write
    wait_for(lambda: b.request("GET", "/v1/status")["web"]["streams"] == 0, what="no streams")
    web = b.request("GET", "/v1/status")["web"]
    sessions = [aiohttp.ClientSession() for _ in range(web["max_streams"] + 1)]
    try:
        opened = []
        for s in sessions[:-1]:
            resp = await s.get(f"{b.base}/v1/live", headers=bearer(b))
            assert resp.status == 200
            await resp.content.readline()
            opened.append(resp)
        async with sessions[-1].get(f"{b.base}/v1/live", headers=bearer(b)) as resp:
            assert resp.status == 503
            assert resp.content_type == PROBLEM
            assert (await resp.json())["type"] == "urn:maia-node:problem:overloaded"
            assert int(resp.headers["Retry-After"]) >= 1
        opened.pop().close()
        await sessions[-2].close()
        b.add_memory("a write wakes every stream")
        deadline = time.monotonic() + 10
        while True:
            resp = await sessions[-1].get(f"{b.base}/v1/live", headers=bearer(b))
            if resp.status == 200:
                resp.close()
                break
            resp.close()
            assert time.monotonic() < deadline, "the freed place was never noticed"
            await asyncio.sleep(0.2)
    finally:
        for s in sessions:
            await s.close()
        # Leave b as the other tests of the module expect it, in any order: the streams whose
        # clients just left hold their places until their next write.
        b.add_memory("flush the streams this test opened")
        wait_for(lambda: b.request("GET", "/v1/status")["web"]["streams"] == 0,
                 what="the streams this test opened are gone")


# -- documents ----------------------------------------------------------------------------------
async def test_documents_list_heads_size_and_sync_state_per_peer(
    mesh: tuple[NodeProc, NodeProc],
) -> None:
    """SPEC-003 §11.8, §7.6: each document with hex heads, change count and stored size; its
    state with the other member is in_sync once both hold the same heads (and the heads agree
    with the other node's own listing); pages are cut by an opaque cursor."""
    a, b = mesh
    a.add_memory("documents panel")

    def settled() -> Any:
        docs = a.request("GET", "/v1/documents")["documents"]
        return docs if all(p["state"] == "in_sync" for d in docs for p in d["peers"]) else None

    docs = wait_for(settled, what="a and b in sync")
    assert docs[0]["id"] == "identity"
    assert any(d["id"].startswith("memory/") for d in docs)
    b_docs = {d["id"]: d for d in b.request("GET", "/v1/documents")["documents"]}
    b_id = b.device_id()
    for doc in docs:
        assert doc["heads"] and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in doc["heads"])
        assert doc["changes"] >= 1 and doc["size_bytes"] > 0
        assert [p["device_id"] for p in doc["peers"]] == [b_id]
        assert b_docs[doc["id"]]["heads"] == doc["heads"]
    first = a.request("GET", "/v1/documents?limit=1")
    assert len(first["documents"]) == 1 and first["cursor"]
    second = a.request("GET", f"/v1/documents?limit=1&cursor={first['cursor']}")
    assert second["documents"][0]["id"] == docs[1]["id"]
    with pytest.raises(Exception, match="400"):
        a.request("GET", "/v1/documents?cursor=not-a-cursor")


# -- units: logins and coalescing -----------------------------------------------------------------
def test_logins_expire_are_bounded_and_report_their_end() -> None:
    """SPEC-003 §11.2: a login lasts its lifetime and no longer; beyond the bound the oldest
    ends; every end is reported (so its streams close); repr never shows a cookie value."""
    now = [1000.0]
    logins = Logins(lifetime=60, max_logins=2, clock=lambda: now[0])
    ended: list[str] = []
    logins.on_end.append(ended.append)
    c1, l1 = logins.create()
    c2, _ = logins.create()
    assert logins.get(c1) is l1 and c1 not in repr(logins)
    c3, _ = logins.create()
    assert logins.get(c1) is None and ended == [l1.label]
    now[0] += 61
    assert logins.get(c2) is None and logins.get(c3) is None
    assert len(ended) == 3 and len(logins) == 0
    assert logins.get(None) is None and logins.get("") is None


def test_a_stream_coalesces_per_document_and_overflows_into_one_resync() -> None:
    """SPEC-003 §11.7: many changes to one document are one pending event; past the bound
    the stream sends a single resync instead of an unbounded backlog."""
    stream = Stream(owner=None)
    for _ in range(100):
        stream.push("doc", "identity", {"doc": "identity", "local": True})
    assert stream.take() == [("doc", {"doc": "identity", "local": True})]
    for i in range(5000):
        stream.push("doc", f"d{i}", {"doc": f"d{i}", "local": False})
    assert len(stream.pending) <= 1000
    assert stream.take() == [("resync", {})]
    assert stream.take() == []


def test_the_static_files_ship_as_package_data() -> None:
    """SPEC-003 §11.1: every file the page routes serve is declared as package data, so a
    non-editable install carries the page."""
    import tomllib

    from node.web.routes import PRIVATE_ASSETS, PUBLIC_ASSETS

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["node.web"]
    static = root / "node" / "web" / "static"
    for name in (*PUBLIC_ASSETS, *PRIVATE_ASSETS, "index.html", "login.html"):
        assert (static / name).is_file(), name
        assert any(fnmatch(f"static/{name}", g) for g in globs), name


def test_the_page_script_never_parses_markup() -> None:
    """SPEC-003 §11.9: everything from the node (device names, tasks, memory text, cortex
    names: what any member of the mesh can write) goes on the page as text. The page's scripts
    use no HTML-parsing sink, so a hostile string cannot become markup or script."""
    static = Path(__file__).resolve().parent.parent / "node" / "web" / "static"
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
             "new Function", "DOMParser", "createContextualFragment")
    scripts = sorted(static.glob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        assert "textContent" in text, script.name
        for sink in sinks:
            assert sink not in text, f"{script.name} uses {sink}"
