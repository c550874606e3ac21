"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against two
real, paired node processes (SPEC-003 §11).

No browser is ever downloaded: Playwright launches /usr/bin/chromium (``scripts/install-chromium``
installs it as root in CI). Without it, or without the playwright package, these tests skip and
say which is missing. Screenshots land in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodes import NodeProc, connected_pair, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

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
