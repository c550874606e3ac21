"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against two
real, paired node processes (SPEC-003 §11).

No browser is ever downloaded: Playwright launches /usr/bin/chromium (``scripts/install-chromium``
installs it as root in CI). Without it, or without the playwright package, these tests skip and
say which is missing. Screenshots land in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_llm_server import FakeLLM
from tests.nodes import NodeProc, connected_pair, make_mesh, wait_for
from tests.routing_helpers import configure, models

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
REPOSITORY = "github.com/maia-test/garden"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")

# The busy mesh's tests run in file order: the last one stops node b.
pytestmark = pytest.mark.in_order

try:
    from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None  # type: ignore[assignment]

if not CHROMIUM.exists():
    pytest.skip(
        "the browser tests need Debian's Chromium at /usr/bin/chromium, which is missing "
        "(install it with: apt-get install chromium; scripts/install-chromium does it as root)",
        allow_module_level=True,
    )
if sync_playwright is None:
    pytest.skip("the browser tests need the playwright package (pip install -e '.[test]')",
                allow_module_level=True)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc]]:
    """Two real nodes of one mesh, b dialling a (the mesh_factory set-up, once per module)."""
    with connected_pair(tmp_path_factory.mktemp("web-ui")) as pair:
        yield pair


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a fresh, empty profile (no cookies from another test)."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport=DESKTOP,
    )
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        context.close()


def new_page(browser: BrowserContext) -> Page:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.script_errors = errors  # type: ignore[attr-defined]
    return page


def log_in(page: Page, node: NodeProc) -> None:
    """Open the node's page, get the login form, type the token, land on the live page."""
    page.goto(f"{node.base}/ui/")
    expect(page).to_have_url(f"{node.base}/ui/login")
    page.fill("#token", node.token)
    page.click("#login-button")
    expect(page).to_have_url(f"{node.base}/ui/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    for panel in ("#devices", "#documents", "#sessions", "#cortices", "#backups"):
        expect(page.locator(panel)).not_to_contain_text("loading")


def page_fetch(page: Page, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A request made by the page's own JavaScript (so it carries whatever the browser sends)."""
    return page.evaluate(
        """async ([method, path, body, headers]) => {
            const init = {method, headers: headers || {}, credentials: "same-origin"};
            if (body !== null) {
                init.body = JSON.stringify(body);
                init.headers["Content-Type"] = "application/json";
            }
            const resp = await fetch(path, init);
            let json = null;
            try { json = await resp.json(); } catch (_) {}
            const type = (resp.headers.get("content-type") || "").split(";")[0];
            return {status: resp.status, type, json};
        }""",
        [method, path, body, headers],
    )


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{name} looks empty"
    return path


def test_without_the_token_the_page_shows_only_the_login(
    mesh: tuple[NodeProc, NodeProc], browser: BrowserContext
) -> None:
    """SPEC-003 §11.5, §11.2, §5.4: opening the page without a login shows the login form and
    nothing of the node; the page's data calls get 401 problems; a wrong token is refused on
    the form and leaves no cookie."""
    a, _ = mesh
    page = new_page(browser)
    page.goto(f"{a.base}/ui/")
    expect(page).to_have_url(f"{a.base}/ui/login")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.locator(".panel").count() == 0
    assert a.device_id() not in page.content()
    for path in ("/v1/devices", "/v1/status", "/v1/memory", "/v1/documents", "/ui/session"):
        answer = page_fetch(page, "GET", path)
        assert answer["status"] == 401, path
        assert answer["type"] == "application/problem+json", path
    page.fill("#token", secrets.token_urlsafe(32))
    page.click("#login-button")
    expect(page.locator("#login-error")).to_have_text("That is not this node's token.")
    expect(page).to_have_url(f"{a.base}/ui/login")
    assert browser.cookies() == []
    screenshot(page, "web-login.png")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_logged_in_the_page_shows_the_two_paired_nodes(
    mesh: tuple[NodeProc, NodeProc], browser: BrowserContext
) -> None:
    """SPEC-003 §11.2, §11.3, §11.8: after login with the token the page lists both devices
    (this one, and the peer as connected), their documents in sync, and every other panel
    either filled or saying it is not available; it fits a phone's width (screenshots kept)."""
    a, b = mesh
    a_id, b_id = a.device_id(), b.device_id()
    a.add_memory("Herons nest in colonies", kind="fact", tags=["birds"])
    b.add_memory("Buy rye flour", tags=["errands"])
    page = new_page(browser)
    log_in(page, a)
    expect(page.locator("#memory")).to_contain_text("Buy rye flour")  # synced from b
    this = page.locator(f'#devices li[data-device-id="{a_id}"]')
    peer = page.locator(f'#devices li[data-device-id="{b_id}"]')
    expect(this).to_contain_text("this device")
    expect(this).to_contain_text("a")
    expect(peer).to_contain_text("b")
    expect(peer).to_contain_text("connected")
    # what each device made this node store (SPEC-005 §6.6): b's note is in a's store
    expect(peer.locator(".storage")).to_contain_text(re.compile(r"stores [0-9.]+ (B|KiB) here"))
    expect(peer.locator(".storage")).not_to_contain_text("stores 0 B")
    expect(page.locator("#devices-count")).to_have_text("2")
    expect(page.locator(f'#peers li[data-device-id="{b_id}"]')).to_contain_text("connected")
    expect(page.locator('#documents li[data-doc="identity"]')).to_contain_text("b: in sync")
    for panel in ("#nearby", "#sessions", "#leases", "#cortices", "#backups"):
        expect(page.locator(panel)).not_to_contain_text("loading")
    cookies = {c["name"]: c for c in browser.cookies()}
    login_cookie = cookies["maia_session_" + a_id.replace("-", "")[:7].lower()]
    assert login_cookie["httpOnly"] and login_cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's script cannot read it
    screenshot(page, "web-desktop.png")
    page.set_viewport_size(PHONE)
    expect(page.locator("#panel-devices")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "web-phone.png")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_an_entry_added_on_one_node_appears_live_on_the_other(
    mesh: tuple[NodeProc, NodeProc], browser: BrowserContext
) -> None:
    """SPEC-003 §11.7, §11.4: an entry added through node a's page (a write with the CSRF
    header) shows up on node b's open page by itself: no reload, pushed by the live stream.
    One browser profile holds both logins at once (each node has its own cookie name)."""
    a, b = mesh
    page_a, page_b = new_page(browser), new_page(browser)
    log_in(page_a, a)
    log_in(page_b, b)
    page_b.evaluate("window.__notReloaded = true")
    text = f"heron seen at dawn {secrets.token_hex(4)}"
    page_a.fill("#memory-text", text)
    page_a.fill("#memory-tags", "birds")
    page_a.click("#memory-add")
    started = time.monotonic()
    expect(page_a.locator("#memory")).to_contain_text(text)
    expect(page_b.locator("#memory li").first).to_contain_text(text, timeout=10_000)
    took = time.monotonic() - started
    assert page_b.evaluate("window.__notReloaded") is True
    assert took < 10  # the page's periodic refresh is 60 s: only the live stream explains this
    screenshot(page_b, "web-live-on-b.png")
    entry = next(e for e in b.entries() if e["text"] == text)
    assert entry["tags"] == ["birds"] and entry["author"] == a.device_id()
    expect(page_a.locator("#memory-text")).to_have_value("")
    assert page_a.script_errors == [] and page_b.script_errors == []  # type: ignore[attr-defined]


def test_a_write_without_the_csrf_header_is_refused_and_logout_ends_the_login(
    mesh: tuple[NodeProc, NodeProc], browser: BrowserContext
) -> None:
    """SPEC-003 §11.4, §11.6: the browser sends the login cookie with a script's POST, but
    without the X-CSRF-Token header the node answers 403 csrf and stores nothing; logging out
    returns to the login form and the page's data calls get 401 again."""
    a, _ = mesh
    page = new_page(browser)
    log_in(page, a)
    before = len(a.entries())
    answer = page_fetch(page, "POST", "/v1/memory", {"text": "sent without the CSRF header"})
    assert answer["status"] == 403
    assert answer["type"] == "application/problem+json"
    assert answer["json"]["type"] == "urn:maia-node:problem:csrf"
    assert page_fetch(page, "GET", "/v1/status")["status"] == 200  # reads need no CSRF token
    assert len(a.entries()) == before
    page.click("#logout")
    expect(page).to_have_url(f"{a.base}/ui/login")
    assert page_fetch(page, "GET", "/v1/status")["status"] == 401
    page.goto(f"{a.base}/ui/")
    expect(page).to_have_url(f"{a.base}/ui/login")


# -- a busy mesh, seen as a new user (issue 16.13) ---------------------------------------------
@pytest.fixture(scope="module")
def busy_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Nodes a and b where b hosts a cortex (backed by a fake model server) and runs an agent
    session holding a lease in a repository. a keeps a gone peer's sessions for 10 minutes and
    b's session does not expire during the module, so the slow CI machine cannot race them."""
    root = tmp_path_factory.mktemp("web-ui-busy")
    fakes = [FakeLLM("helper"), FakeLLM("scribe")]
    for fake in fakes:
        fake.start()
    a, b = make_mesh(root, ["a", "b"])
    # a consolidates with its own cortex, only when a test asks (the review panel's facts)
    configure(a, sessions={"live_stale_s": 600}, cortex={
        "scribe": {"kind": "chat", "model": "openai/scribe-1b", "api_base": fakes[1].api_base},
    }, consolidation={"cortex": "scribe", "interval_s": 3600})
    configure(b, sessions={"expires_after_s": 600}, cortex={
        "helper": {"kind": "reasoning", "model": "openai/helper-7b",
                   "api_base": fakes[0].api_base, "max_concurrency": 3},
    })
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: a.connected() and b.connected(), what="a and b connected")
        session = b.request("POST", "/v1/sessions", {
            "agent": "claude", "pid": os.getpid(), "cwd": "/home/dev/garden",
            "repository": REPOSITORY, "branch": "main", "task": "prune the roses"})
        lease = b.request("POST", "/v1/leases", {
            "pattern": "beds/roses/**", "mode": "exclusive", "ttl_s": 3600,
            "session": session["session_id"]})
        wait_for(lambda: any(x["id"] == lease["id"]
                             for x in a.request("GET", "/v1/leases")["leases"]),
                 what="a to know b's lease")
        wait_for(lambda: {"helper", "scribe"} <= set(models(a)), what="a to see the cortices")
        a.add_memory("Roses want sun", tags=["garden"])
        b.add_memory("Water the ferns", kind="fact")
        yield {"a": a, "b": b, "session": session["session_id"], "lease": lease["id"],
               "scribe": fakes[1]}
    finally:
        a.stop()
        b.stop()
        for fake in fakes:
            fake.stop()


def line_boxes(page: Page, selector: str) -> list[dict[str, float]]:
    """For each element: how many line boxes it has, its height and its line height (px)."""
    return page.eval_on_selector_all(selector, """nodes => nodes.map((n) => {
        const style = getComputedStyle(n);
        const lh = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.5;
        return {rects: n.getClientRects().length, height: n.getBoundingClientRect().height,
                lineHeight: lh, text: n.textContent, title: n.title,
                cut: n.scrollWidth > n.clientWidth};
    })""")


def assert_ids_on_one_line(page: Page, ids: set[str]) -> list[dict[str, float]]:
    """Issue 16.13: every device id on the page is one line box holding the whole id."""
    boxes = line_boxes(page, "code.id")
    assert {b["text"] for b in boxes} >= ids, boxes
    for box in boxes:
        assert box["rects"] == 1, box
        assert box["height"] < 1.6 * box["lineHeight"], box
        assert box["title"] == box["text"], box  # the full id in the tooltip
    for label in line_boxes(page, ".foot .label"):  # "device" next to it is not broken either
        assert label["height"] < 1.6 * label["lineHeight"], label
    return boxes


def same_colour_as(page: Page, selector: str, classes: str) -> bool:
    """Whether the element's colour is the one the stylesheet gives ``.<classes>``."""
    return page.evaluate("""([selector, classes]) => {
        const probe = document.createElement("span");
        probe.className = classes;
        document.body.append(probe);
        const want = getComputedStyle(probe).color;
        probe.remove();
        return getComputedStyle(document.querySelector(selector)).color === want;
    }""", [selector, classes])


def month_words(doc_id: str) -> str:
    kind, month, part = doc_id.split("/")[1:]
    words = {"note": "Notes", "fact": "Facts"}[kind]
    year, number = month.split("-")
    return f"{words} · {MONTHS[int(number) - 1]} {year} · part {int(part) + 1} of 8"


def test_a_busy_mesh_reads_in_words(busy_mesh: dict[str, Any], browser: BrowserContext) -> None:
    """SPEC-003 §11.9 (issue 16.13), SPEC-006 §4.7, as a new user reads node a's page with b
    connected: device ids on one line (the whole id in the element, its title and the Copy
    button); the lease names its repository; b's cortex shows kind, model, host and load; each
    document is named in words with its sync state per peer and its heads only in a tooltip;
    backups say "never" at most once; the header says plain "live". Desktop and phone widths."""
    a, b = busy_mesh["a"], busy_mesh["b"]
    a_id, b_id = a.device_id(), b.device_id()
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=a.base)
    page = new_page(browser)
    log_in(page, a)

    # 7. every peer connected: plain "live", in the good colour
    live = page.locator("#live")
    expect(live).to_have_text("live")
    expect(live).to_have_attribute("data-away", "0")
    assert same_colour_as(page, "#live", "badge good")

    # 1. device ids: one line each, whole; Copy puts the whole id on the clipboard
    expect(page.locator(f'#devices li[data-device-id="{b_id}"]')).to_contain_text("connected")
    assert_ids_on_one_line(page, {a_id, b_id})
    page.locator(f'#devices li[data-device-id="{b_id}"] button.copy').click()
    wait_for(lambda: page.evaluate("navigator.clipboard.readText()") == b_id,
             what="the Copy button to put b's whole id on the clipboard")

    # 2. the lease says which repository (and the session too)
    lease = page.locator(f'#leases li[data-lease="{busy_mesh["lease"]}"]')
    expect(lease).to_contain_text(f"in {REPOSITORY}")
    expect(lease).to_contain_text("beds/roses/**")
    expect(lease).to_contain_text("claude on b · prune the roses")
    expect(lease).not_to_contain_text("device offline")
    session = page.locator(f'#sessions li[data-session="{busy_mesh["session"]}"]')
    expect(session).to_contain_text(f"{REPOSITORY} @ main")
    # a session that starts while the page is open shows up by itself (no live event for it:
    # the page reads sessions again every 15 s)
    later = b.request("POST", "/v1/sessions", {
        "agent": "codex", "pid": os.getpid(), "cwd": "/home/dev/garden",
        "repository": REPOSITORY, "branch": "paths",
        "task": "lay the gravel <img src=x onerror=window.__pwned=1>"})
    expect(page.locator(f'#sessions li[data-session="{later["session_id"]}"]')).to_contain_text(
        "lay the gravel <img src=x onerror=window.__pwned=1>", timeout=40_000)
    # what a peer announces is text, never markup (SPEC-003 §11.9)
    assert page.locator("#sessions img").count() == 0
    assert page.evaluate("window.__pwned") is None

    # 3. b's cortex: kind, model, where it runs, its health and load, as /v1/models says
    info = models(a)["helper"]["maia"]
    host = info["hosts"][0]
    cortex = page.locator('#cortices li[data-cortex="helper"]')
    expect(cortex.locator(".badge.kind")).to_have_text("reasoning")
    expect(cortex.locator(".model")).to_contain_text("openai/helper-7b")
    row = cortex.locator(f'.host[data-device-id="{b_id}"]')
    expect(row.locator(".where")).to_have_text("b")
    expect(row).to_contain_text("healthy")
    expect(row.locator(".load")).to_contain_text(
        f"load {host['in_flight']}/{host['max_concurrency']}")
    assert host["max_concurrency"] == 3
    expect(page.locator("#cortices .hint")).to_contain_text(
        f"{a.base}/v1) may ask for a cortex by name, or for auto, cortex/")
    own = page.locator(f'#cortices li[data-cortex="scribe"] .host[data-device-id="{a_id}"]')
    expect(own.locator(".where")).to_have_text("this device")
    expect(own.locator(".load")).to_contain_text("load 0/4")
    expect(page.locator('#cortices li[data-cortex="scribe"] .model')).to_contain_text(
        "openai/scribe-1b · local model")

    # 4. documents in words; heads only in the tooltip
    docs = a.request("GET", "/v1/documents")["documents"]
    for doc in docs:
        item = page.locator(f'#documents li[data-doc="{doc["id"]}"]')
        title = item.locator(".doc-title")
        words = "Identity" if doc["id"] == "identity" else month_words(doc["id"])
        expect(title).to_have_text(words)
        for head in doc["heads"]:
            assert head in (title.get_attribute("title") or "")
        expect(item).to_contain_text("b: in sync")
    assert "heads" not in page.locator("#documents").inner_text()
    assert "memory/" not in page.locator("#documents").inner_text()

    # 5. backups: nothing verified or run, said once
    backups = page.locator("#backups").inner_text()
    assert backups.lower().count("never") <= 1, backups
    assert backups.count("No backup has been verified yet") == 1, backups
    assert "not run yet" in backups
    assert "no verified backup exists" not in backups  # the node's warning says the same again

    screenshot(page, "web-busy-desktop.png")
    page.set_viewport_size(PHONE)
    boxes = assert_ids_on_one_line(page, {a_id, b_id})
    assert any(b["cut"] for b in boxes)  # on a phone the ellipsis does the shortening
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "web-busy-phone.png")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_the_review_panel_accepts_edits_and_rejects_proposed_facts(
        busy_mesh: dict[str, Any], browser: BrowserContext) -> None:
    """SPEC-003 §11.9 (the review panel), SPEC-006 §12.4.2, §12.4.3 on the page: the facts a's
    consolidation cortex proposed are listed with their sources' texts (a link opens a source's
    history), the cortex and the model; Accept, Edit and Reject each call the review route with
    the CSRF header, and the API shows the result. A fact whose text is markup from a hostile
    model answer is shown as text and runs nothing."""
    a, scribe = busy_mesh["a"], busy_mesh["scribe"]
    tag = secrets.token_hex(3)
    notes = [a.add_memory(f"{text} {tag}")["id"] for text in (
        "the shed key is under the blue pot", "the boiler was serviced in may",
        "the neighbours' cat visits at night")]
    hostile = ("<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"
               f"the cat is called <b>io</b> {tag}")
    scribe.control(mode="text", answer=json.dumps({"facts": [
        {"text": f"The shed key is under the blue pot {tag}", "sources": [notes[0]]},
        {"text": f"The boiler was serviced in May {tag}", "sources": [notes[1]]},
        {"text": hostile, "sources": [notes[2], notes[0]]}]}))
    try:
        written = a.request("POST", "/v1/consolidation/run", {}, timeout=120)["written"]
    finally:
        scribe.control(mode="ok")
    assert len(written) == 3
    by_text = {w["text"]: w["id"] for w in written}  # written follows shards, not the answer
    keep = by_text[f"The shed key is under the blue pot {tag}"]
    fix = by_text[f"The boiler was serviced in May {tag}"]
    drop = by_text[hostile]

    page = new_page(browser)
    log_in(page, a)
    panel = page.locator("#review")
    item = {i: panel.locator(f'li.review-fact[data-entry-id="{i}"]') for i in (keep, fix, drop)}
    expect(item[keep]).to_contain_text(f"The shed key is under the blue pot {tag}")
    expect(item[keep].locator(".cortex")).to_have_text("scribe")
    expect(item[keep].locator(".model")).to_contain_text("scribe")
    expect(item[keep].locator(f'li[data-source-id="{notes[0]}"]')).to_contain_text(
        f"the shed key is under the blue pot {tag}")
    # the hostile fact: its markup is text, nothing of it runs
    expect(item[drop].locator(".text")).to_have_text(hostile)
    expect(item[drop].locator("li[data-source-id]")).to_have_count(2)
    assert page.locator("#review img, #review script, #review b").count() == 0
    assert page.evaluate("window.__pwned") is None
    # a source's link opens its history
    item[fix].locator(f'li[data-source-id="{notes[1]}"] a.source').click()
    expect(page.locator("#history")).to_be_visible()
    expect(page.locator("#history-title")).to_have_text(notes[1])
    screenshot(page, "web-review-panel.png")

    item[keep].locator("button.accept").click()
    expect(item[keep]).to_have_count(0)
    assert "review:pending" not in a.entry(keep)["tags"]

    item[fix].locator("button.edit").click()
    item[fix].locator("textarea.edit-text").fill(f"The boiler was serviced on 3 May {tag}")
    item[fix].locator("button.save").click()
    expect(item[fix]).to_have_count(0)
    fixed = a.entry(fix)
    assert fixed["text"] == f"The boiler was serviced on 3 May {tag}"
    assert "review:pending" not in fixed["tags"]

    item[drop].locator("button.reject").click()
    expect(item[drop]).to_have_count(0)
    assert a.entry(drop) is None
    last = a.request("GET", f"/v1/memory/{drop}/history")["history"][-1]
    assert last["op"] == "reject"
    left = {f["id"] for f in a.request("GET", "/v1/consolidation/review")["facts"]}
    assert not left & {keep, fix, drop}
    assert page.evaluate("window.__pwned") is None
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_when_a_peer_stops_the_page_says_so(busy_mesh: dict[str, Any],
                                            browser: BrowserContext) -> None:
    """SPEC-003 §11.9 (issue 16.13), SPEC-006 §3.3: b stops while a's page is open. Without a
    reload the header turns to "live · 1 of 1 peer away" in the warning colour; b's session and
    lease stay listed but dimmed and marked "device offline" with when b was last heard; b's
    cortex stays listed as offline with its last-seen time."""
    a, b = busy_mesh["a"], busy_mesh["b"]
    b_id = b.device_id()
    page = new_page(browser)
    log_in(page, a)
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")
    b.stop()

    live = page.locator("#live")
    expect(live).to_have_text("live · 1 of 1 peer away", timeout=20_000)
    expect(live).to_have_attribute("data-away", "1")
    assert same_colour_as(page, "#live", "badge warn")
    assert "b (last seen" in (live.get_attribute("title") or "")

    for selector in (f'#sessions li[data-session="{busy_mesh["session"]}"]',
                     f'#leases li[data-lease="{busy_mesh["lease"]}"]'):
        item = page.locator(selector)
        expect(item).to_have_class(re.compile(r"\baway\b"))
        expect(item.locator(".away-note")).to_contain_text(
            re.compile(r"device offline\s+last heard"))
        dimmed = item.evaluate("n => getComputedStyle(n.querySelector('.line')).opacity")
        assert float(dimmed) < 1, selector
        note = item.evaluate("n => getComputedStyle(n.querySelector('.away-note')).opacity")
        assert float(note) == 1, selector  # the reason stays readable
    expect(page.locator(f'#leases li[data-lease="{busy_mesh["lease"]}"]')).to_contain_text(
        f"in {REPOSITORY}")

    cortex = page.locator('#cortices li[data-cortex="helper"]')
    expect(cortex).to_contain_text("unavailable: every host is offline")
    expect(page.locator('#cortices li[data-cortex="scribe"]')).not_to_contain_text("unavailable")
    row = cortex.locator(f'.host[data-device-id="{b_id}"]')
    expect(row).to_contain_text("offline")
    expect(row.locator(".load")).to_contain_text("last seen")
    expect(page.locator(f'#devices li[data-device-id="{b_id}"]')).to_contain_text("offline")
    expect(page.locator('#documents li[data-doc="identity"]')).to_contain_text("b: offline")
    assert page.evaluate("window.__notReloaded") is True

    screenshot(page, "web-peer-away-desktop.png")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "web-peer-away-phone.png")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_a_revoked_device_s_page_says_who_revoked_it(busy_mesh: dict[str, Any],
                                                      browser: BrowserContext) -> None:
    """Issue 15.6, SPEC-005 §9.8: b, stopped by the test before, is revoked on a; when b
    starts again and dials a, it receives the signed tombstone, and its own page says who
    revoked it and when, in the banner, for as long as it is revoked."""
    a, b = busy_mesh["a"], busy_mesh["b"]
    b_id = next(d["device_id"] for d in a.request("GET", "/v1/devices")["devices"]
                if d["name"] == "b")
    a.request("POST", f"/v1/devices/{b_id}/revoke", {"keep": [], "reason": "sold", "confirm": b_id})
    b.start()
    b.add_peer(a)
    wait_for(lambda: b.request("GET", "/v1/status").get("revoked"), timeout=30,
             what="b to learn it was revoked")
    page = new_page(browser)
    log_in(page, b)
    banner = page.locator("#banner")
    expect(banner).to_be_visible(timeout=20_000)
    expect(banner).to_contain_text("This device was revoked by a")
    expect(banner).to_contain_text("(sold)")
    screenshot(page, "web-revoked.png")


def test_the_history_panel_shows_each_version_as_a_diff_and_restores_one(
    mesh: tuple[NodeProc, NodeProc], browser: BrowserContext
) -> None:
    """SPEC-005 §10.7, §10.9 on the page: an edited entry opens a history panel listing every
    version (newest first) with the words each one removed and added; "Restore this version"
    writes the old text again (a new signed change, with the CSRF header) and the panel grows
    by one version. Entry text is shown as text, never as markup."""
    a, b = mesh
    tag = secrets.token_hex(3)
    e = a.add_memory(f"buy <b>milk</b> and bread {tag}")
    a.request("PATCH", f"/v1/memory/{e['id']}", {"text": f"buy milk and eggs {tag}"})
    page = new_page(browser)
    log_in(page, a)
    row = page.locator(f"#memory li[data-entry-id='{e['id']}']")
    row.locator("button.history-open").click()
    panel = page.locator("#history")
    expect(panel).to_be_visible()
    versions = panel.locator("li.version")
    expect(versions).to_have_count(2)
    newest = versions.first
    expect(newest).to_contain_text("v2 update text")
    expect(newest.locator("del")).to_have_text(["<b>milk</b>", "bread"])
    expect(newest.locator("ins")).to_have_text(["milk", "eggs"])
    expect(versions.nth(1).locator("ins")).to_contain_text("<b>milk</b>")  # as text
    assert page.locator("#history b").count() == 0
    screenshot(page, "web-history-panel.png")
    versions.nth(1).locator("button.restore").click()
    expect(versions).to_have_count(3, timeout=10_000)
    expect(versions.first).to_contain_text("restore")
    wait_for(lambda: (x := b.entry(e["id"])) and x["text"].startswith("buy <b>milk</b>"),
             what="the restore reached b")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_a_cortex_waiting_for_approval_is_approved_from_the_page(
    tmp_path_factory: pytest.TempPathFactory, browser: BrowserContext,
) -> None:
    """SPEC-006 006.6.7 on the page: a peer's cortex this node has not approved reads "not
    approved: sent no prompt" with an Approve button; the button makes the same call as
    `maia cortex allow DEVICE NAME` (with the CSRF header), and the host reads healthy."""
    root = tmp_path_factory.mktemp("web-ui-approve")
    fake = FakeLLM("oracle").start()
    a, b = make_mesh(root, ["a", "b"])
    configure(a, routing={"learning_seconds": 0})
    configure(b, cortex={"oracle": {"kind": "reasoning", "model": "openai/oracle-1",
                                    "api_base": fake.api_base}})
    try:
        a.start()
        b.start()
        b.add_peer(a)
        wait_for(lambda: "oracle" in models(a), what="a to hear of b's cortex")
        page = new_page(browser)
        log_in(page, a)
        host = page.locator(f'#cortices li[data-cortex="oracle"] .host'
                            f'[data-device-id="{b.device_id()}"]')
        expect(host).to_contain_text("not approved: sent no prompt", timeout=15_000)
        host.locator("button.approve").click()
        expect(host).to_contain_text("healthy", timeout=15_000)
        expect(host.locator("button.approve")).to_have_count(0)
        hosts = models(a)["oracle"]["maia"]["hosts"]
        assert [h["approved"] for h in hosts if h["device_id"] == b.device_id()] == [True]
        assert page.script_errors == []  # type: ignore[attr-defined]
    finally:
        a.stop()
        b.stop()
        fake.stop()


def test_a_deleted_entry_is_listed_and_undeleted_from_the_page(
    mesh: tuple[NodeProc, NodeProc], browser: BrowserContext,
) -> None:
    """SPEC-005 §10.10 on the page: under the memory list, "Deleted entries" opens the entries
    that can be brought back, with who deleted them and when (read only while open); Undelete
    writes a new signed change (with the CSRF header) and the entry is back in the list, on
    the peer too. Its text is shown as text."""
    a, b = mesh
    tag = secrets.token_hex(3)
    e = a.add_memory(f"the <i>heron</i> nest is by the willow {tag}")
    a.request("DELETE", f"/v1/memory/{e['id']}")
    page = new_page(browser)
    log_in(page, a)
    page.locator("#deleted-panel summary").click()
    row = page.locator(f"#deleted li[data-entry-id='{e['id']}']")
    expect(row).to_contain_text(f"the <i>heron</i> nest is by the willow {tag}")
    expect(row).to_contain_text("deleted")
    assert page.locator("#deleted i").count() == 0
    row.locator("button.undelete").click()
    expect(page.locator(f"#memory li[data-entry-id='{e['id']}']")).to_be_visible(
        timeout=10_000)
    expect(row).to_have_count(0, timeout=10_000)
    wait_for(lambda: b.entry(e["id"]) is not None, what="the undelete reached b")
    assert page.script_errors == []  # type: ignore[attr-defined]
