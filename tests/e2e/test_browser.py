"""The status bar page in a real browser (Debian's chromium driven by Playwright) against the demo server.

Install what it needs with ``scripts/install-browser.sh`` (chromium) and the ``browser`` extra (playwright).
Outside CI a missing browser skips these tests; with ``CI=true`` it fails them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from integration_status.backends.memory import MemoryEngine
from integration_status.demo.server import build_app
from integration_status.demo.simulated import Incident

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

CHROMIUM = os.environ.get("INTEGRATION_STATUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGE = "/static/index.html?projectId=demo&pollMs={poll}"


def _missing() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return f"chromium not found at {CHROMIUM}: run scripts/install-browser.sh"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install 'integration-status[browser]'"
    return None


@pytest.fixture
def browser_ready() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser is missing: {reason}")
        pytest.skip(reason)


@contextlib.asynccontextmanager
async def serve_on(app: Any, port: int = 0) -> AsyncIterator[tuple[str, int]]:
    """Serve ``app`` with uvicorn on 127.0.0.1:``port`` (0: a free one); yields (base URL, port). The socket
    reuses the address so a restarted server can take the same port at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}", port
            finally:
                server.should_exit = True
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A page in a fresh headless chromium profile; fails the test on any uncaught page error."""
    from playwright.async_api import async_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1100, "height": 460},
            )
            try:
                page = await context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                yield page
            finally:
                await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


async def wait_for(page: Any, expression: str, arg: Any = None, within_ms: float = 10_000) -> Any:
    """Wait in the page until ``expression`` is truthy; its value."""
    handle = await page.wait_for_function(expression, arg=arg, timeout=within_ms)
    return await handle.json_value()


FOUR_SHOWN = "document.querySelectorAll('#bar .indicator[data-status]').length === 4"


async def test_page_shows_four_indicators_with_tooltips_and_keyboard_menu(browser_ready: None) -> None:
    """The demo page renders four indicators (colour, glyph, summary tooltip), operable by keyboard."""
    async with serve_on(build_app()) as (base, _), browser_page() as page:
        await page.goto(base + PAGE.format(poll=10_000))
        await wait_for(page, FOUR_SHOWN)
        shown = await page.eval_on_selector_all(
            "#bar .indicator",
            """els => els.map(e => ({key: e.dataset.key, status: e.dataset.status,
                title: e.querySelector('button').title, glyph: e.querySelector('.glyph').textContent,
                color: getComputedStyle(e.querySelector('button')).color,
                summary: e.querySelector('.summary').textContent}))""",
        )
        assert [s["key"] for s in shown] == ["supabase", "github", "vercel", "sanity"]
        for s in shown:
            assert s["status"] in {"connected", "warning", "error", "disconnected"}
            assert s["glyph"] in {"✓", "▲", "✕", "○"}
            assert s["title"].startswith(s["summary"])
            assert s["summary"]
        assert shown[1]["summary"].startswith("Linked to main")
        by_status = {s["status"]: s["color"] for s in shown}
        if "connected" in by_status:
            assert by_status["connected"] == "rgb(19, 115, 51)"  # --ok: 5.9:1 on white
        # Keyboard: Tab past the role selector reaches the first indicator; Enter opens its menu.
        await page.focus("#role")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.closest('.indicator')?.dataset.key") == "supabase"
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.closest('.indicator')?.dataset.key") == "vercel"
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.getAttribute('role')") == "menuitem"
        connect = page.locator('[data-key="vercel"] [data-action="connect"]')
        assert await connect.get_attribute("aria-disabled") == "true"
        assert "Already connected" in await connect.inner_text()
        assert await page.get_attribute('[data-key="vercel"] > button', "aria-expanded") == "true"
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-bar.png"))
        await page.keyboard.press("Escape")
        assert await page.is_hidden('[data-key="vercel"] .menu')
        assert await page.evaluate("document.activeElement.closest('.indicator')?.dataset.key") == "vercel"
        assert await page.get_attribute("#bar [role=status]", "aria-live") == "polite"


async def test_deploy_shows_started_then_finished_within_a_second_of_the_events(browser_ready: None) -> None:
    """Deploy in the Vercel menu shows 'Deploying…' then 'Deployed ✓', each within 1 s of its event."""
    async with serve_on(build_app(deploy_seconds=0.8)) as (base, _), browser_page() as page:
        await page.goto(base + PAGE.format(poll=10_000))
        await wait_for(page, FOUR_SHOWN)
        await wait_for(page, "document.getElementById('bar').dataset.stream === 'open'")
        # Record when the Vercel indicator's progress text changes, in page time (epoch ms like event ts).
        await page.evaluate(
            """() => {
                window.progressSeen = [];
                new MutationObserver(() => {
                    const p = document.querySelector('[data-key="vercel"] .progress')?.textContent;
                    const last = window.progressSeen.at(-1);
                    if (p && (!last || last.text !== p)) window.progressSeen.push({text: p, at: Date.now()});
                }).observe(document.getElementById('bar'),
                           {subtree: true, childList: true, characterData: true});
            }"""
        )
        await page.click('[data-key="vercel"] > button')
        await page.click('[data-key="vercel"] [data-action="deploy"]')
        await wait_for(page, "window.progressSeen.some(p => p.text.startsWith('Deployed'))")
        seen = await page.evaluate("window.progressSeen")
        events = await page.evaluate("document.getElementById('bar').state.events")
    texts = [p["text"] for p in seen]
    assert "Deploying…" in texts
    assert texts.index("Deploying…") < texts.index("Deployed ✓")
    started = next(e for e in events if e["type"] == "deploy:started")
    finished = next(e for e in events if e["type"] == "deploy:finished")
    shown_started = next(p["at"] for p in seen if p["text"] == "Deploying…")
    shown_finished = next(p["at"] for p in seen if p["text"] == "Deployed ✓")
    assert 0 <= shown_started - started["ts"] < 1000
    assert 0 <= shown_finished - finished["ts"] < 1000
    assert finished["ts"] - started["ts"] >= 700  # the deploy really took its time in between


async def test_provider_outage_shows_the_stale_hint(browser_ready: None) -> None:
    """A rate-limited GitHub serves its last good value: the page marks it stale and shows the retry hint."""
    app = build_app()
    async with serve_on(app) as (base, _), browser_page() as page:
        await page.goto(base + PAGE.format(poll=500))
        await wait_for(page, FOUR_SHOWN)
        assert await page.get_attribute('[data-key="github"]', "data-stale") == "false"
        service, world = app.state.service, app.state.world
        world.incident = Incident(provider="github", kind="rate_limit", until=time.time() + 120)
        await service.refresh_provider("demo", "github")  # what the next TTL expiry would do
        hint = await wait_for(
            page,
            """() => { const li = document.querySelector('[data-key="github"]');
                return li.dataset.stale === 'true' && li.querySelector('.hint')?.textContent; }""",
        )
        assert hint.startswith("Stale · Retry in ")
        label = await page.get_attribute('[data-key="github"] > button', "aria-label")
        assert "stale" in label
        announced = await page.text_content("#bar [role=status]")
        assert "Git (GitHub)" in announced
        assert "stale" in announced
        # Still showing the last good summary, not an error.
        assert await page.get_attribute('[data-key="github"]', "data-status") == "connected"


async def test_event_stream_resumes_after_a_server_restart_without_missing_events(
    browser_ready: None,
) -> None:
    """The browser's EventSource reconnects to a restarted server and receives, via Last-Event-ID, the event
    published while it was disconnected."""
    engine = MemoryEngine()
    first = build_app(engine=engine)
    async with browser_page() as page:
        async with serve_on(first) as (base, port):
            await page.goto(base + PAGE.format(poll=10_000))
            await wait_for(page, FOUR_SHOWN)
            await wait_for(page, "document.getElementById('bar').dataset.stream === 'open'")
            before_id = await first.state.service.publish(
                "demo",
                {"type": "sanity:webhook", "projectId": "demo", "count": 41, "ts": int(time.time() * 1000)},
            )
            await wait_for(page, "(id) => document.getElementById('bar').state.lastEventId === id", before_id)
        # The server is down: publish on the engine the next server will use.
        missed_id = await engine.events.publish(
            "demo",
            {"type": "sanity:webhook", "projectId": "demo", "count": 42, "ts": int(time.time() * 1000)},
        )
        await wait_for(page, "document.getElementById('bar').dataset.stream !== 'open'")
        async with serve_on(build_app(engine=engine), port=port):
            got = await wait_for(
                page,
                "() => document.getElementById('bar').state.events.find(e => e.count === 42)",
                within_ms=20_000,
            )
            assert got["id"] == missed_id
            events = await page.evaluate("document.getElementById('bar').state.events")
            counts = [e.get("count") for e in events if e["type"] == "sanity:webhook"]
            assert counts.count(41) == 1
            assert counts.count(42) == 1
            assert "sanity:webhook 42 doc(s)" in await page.inner_text("#log")


async def test_a_304_poll_leaves_the_page_untouched(browser_ready: None) -> None:
    """Polls answered 304 change nothing in the DOM: no mutation, identical markup."""
    async with serve_on(build_app()) as (base, _), browser_page() as page:
        await page.goto(base + PAGE.format(poll=300))
        await wait_for(page, FOUR_SHOWN)
        await wait_for(page, "document.getElementById('bar').state.notModified >= 1")
        before = await page.evaluate(
            """() => {
                const bar = document.getElementById('bar');
                window.mutations = 0;
                new MutationObserver(ms => { window.mutations += ms.length; })
                    .observe(bar, {subtree: true, childList: true, attributes: true, characterData: true});
                return {html: bar.innerHTML, polls: bar.state.polls, notModified: bar.state.notModified,
                        renders: bar.state.renders};
            }"""
        )
        await wait_for(
            page, "(n) => document.getElementById('bar').state.notModified >= n + 3", before["notModified"]
        )
        after = await page.evaluate(
            """() => { const bar = document.getElementById('bar');
                return {html: bar.innerHTML, polls: bar.state.polls, notModified: bar.state.notModified,
                        renders: bar.state.renders, mutations: window.mutations}; }"""
        )
    assert after["polls"] - before["polls"] == after["notModified"] - before["notModified"] >= 3
    assert after["mutations"] == 0
    assert after["renders"] == before["renders"]
    assert after["html"] == before["html"]
