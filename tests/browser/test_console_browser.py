"""Real Chromium against the real gateway and demo cloud: sign in, open a console, type, see it change."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import canvas_digest, new_page, sign_in
from tests.support.gateway import RunningGateway, server_id
from tests.support.polling import wait_for

pytestmark = pytest.mark.browser
WAIT_MS = 15_000


async def open_console(page: Page, name: str) -> None:
    row = page.get_by_test_id("server-row").filter(has_text=name)
    await row.get_by_test_id("server-open").click()
    await expect(page.get_by_test_id("console-status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )
    await page.wait_for_function(
        """() => { const c = document.querySelector('[data-testid="console-screen"] canvas');
                   return c && c.width > 100; }""",
        timeout=WAIT_MS,
    )


async def test_sign_in_open_console_type_and_see_it(stack: RunningGateway, browser: Browser) -> None:
    context, page, traffic = await new_page(browser)
    try:
        await sign_in(page, stack.url, "demo", "demo")
        await expect(page.get_by_test_id("server-row")).to_have_count(4)
        await open_console(page, "web-01")
        rfb = stack.cloud.rfb[server_id(stack.cloud, "web-01")]
        # The first full frame has arrived once the canvas shows something other than its blank start.
        await page.wait_for_function(
            """() => { const c = document.querySelector('[data-testid="console-screen"] canvas');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       for (let i = 0; i < d.length; i += 4001) if (d[i] || d[i+1] || d[i+2]) return true;
                       return false; }""",
            timeout=WAIT_MS,
        )
        before = await canvas_digest(page)
        await page.get_by_test_id("console-screen").click()
        await page.keyboard.type("hello")
        await wait_for(lambda: len(rfb.keys_received) >= 5, 10, "keys at the RFB server")
        assert bytes(rfb.keys_received[-5:]).decode() == "hello"
        await page.wait_for_function(
            """(before) => { const c = document.querySelector('[data-testid="console-screen"] canvas');
                             return c.toDataURL('image/png') !== before; }""",
            arg=before,
            timeout=WAIT_MS,
        )
        assert await canvas_digest(page) != before
        assert traffic.foreign(stack.url) == [], "the browser talked to something other than the gateway"
        assert any("/ws/console/demo/" in url for url in traffic.websockets)
    finally:
        await context.close()


async def test_view_only_keys_never_reach_the_server(stack: RunningGateway, browser: Browser) -> None:
    context, page, traffic = await new_page(browser)
    try:
        await sign_in(page, stack.url, "viewer", "viewer")
        await open_console(page, "db-01")
        await expect(page.get_by_test_id("view-only-badge")).to_be_visible()
        rfb = stack.cloud.rfb[server_id(stack.cloud, "db-01")]
        screen_before = rfb.screen.version
        await page.get_by_test_id("console-screen").click()
        await page.keyboard.type("typed in view-only")
        # noVNC sends no input in view-only mode; a modified page could. Open a second socket from the page
        # itself (same cookie, same Origin) and put key events on the wire: the gateway must drop them.
        await page.evaluate(
            """async (path) => {
                const ws = new WebSocket(location.origin.replace('http', 'ws') + path);
                ws.binaryType = 'arraybuffer';
                await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
                // The server speaks first (its version, after the gateway's text hello): a client that
                // does not wait for it is refused before any of its bytes go anywhere.
                await new Promise((resolve) => {
                    ws.onmessage = (e) => { if (typeof e.data !== 'string') resolve(); };
                });
                const key = (keysym, down) => {
                    const b = new Uint8Array(8); b[0] = 4; b[1] = down ? 1 : 0;
                    new DataView(b.buffer).setUint32(4, keysym); return b; };
                ws.send(new TextEncoder().encode('RFB 003.008\\n'));
                ws.send(new Uint8Array([1]));
                ws.send(new Uint8Array([1]));
                for (const k of [0x78, 0x79]) { ws.send(key(k, true)); ws.send(key(k, false)); }
                window.rawConsole = ws;
            }""",
            f"/ws/console/demo/{server_id(stack.cloud, 'db-01')}",
        )

        def dropped() -> int:
            return sum(live.relay.stats.dropped for live in stack.gw.registry.local.values() if live.relay)

        await wait_for(lambda: dropped() >= 4, 10, "dropped key events at the gateway")
        assert rfb.keys_received == []
        # The server's screen is the ground truth (the canvas may still be painting its first frame).
        assert (rfb.screen.typed, rfb.screen.version) == ("", screen_before)
        assert traffic.foreign(stack.url) == []
    finally:
        await context.close()


async def test_stopped_server_is_shown_disabled_with_reason(stack: RunningGateway, browser: Browser) -> None:
    context, page, _traffic = await new_page(browser)
    try:
        await sign_in(page, stack.url, "demo", "demo")
        row = page.get_by_test_id("server-row").filter(has_text="legacy-app")
        await expect(row.get_by_test_id("server-open")).to_be_disabled()
        await expect(row).to_contain_text("the server is stopped")
    finally:
        await context.close()


async def test_refused_cookie_sends_the_user_to_sign_in_with_a_reason(
    stack: RunningGateway, browser: Browser
) -> None:
    context, page, _traffic = await new_page(browser)
    try:
        await context.add_cookies([{"name": "novnc-gw", "value": "AQ" + "x" * 60, "url": stack.url}])
        await page.goto(stack.url + "/servers")
        await page.wait_for_url(re.compile(r"/login\?next=/servers&error=session_ended"))
        await expect(page.get_by_text("Your sign-in has ended")).to_be_visible()
    finally:
        await context.close()
