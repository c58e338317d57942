"""Two browsers on one live console (docs/shadowing.md), in headless Chromium against the real gateway,
the demo cloud's real websockify and a real Xvnc running a program that echoes what is typed: the owner
approves the observer from the console page, the observer's canvas follows the owner's typing, the
observer's own typing reaches nothing, and the owner stays connected while observers come and go. A
refused or unanswered join never receives a frame. (The suite's token scan checks every byte the gateway
sent either browser.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocket, expect

from gateway.sim.demo import DemoCloud
from tests.browser import test_clipboard_browser as clipboard
from tests.support.browser import canvas_digest, new_page, sign_in
from tests.support.gateway import Operator, RecordingTransport, RunningGateway, start_gateway
from tests.support.polling import wait_for
from tests.support.rfb_client import RFBClient
from tests.support.x_echo import XEcho

pytestmark = clipboard.pytestmark
WAIT_MS = clipboard.WAIT_MS
# A real Xvnc with the echo program on it, served by the demo cloud: the clipboard tests' fixtures.
session = clipboard.session
echo = clipboard.echo
cloud = clipboard.cloud


def join_rule(approval: str) -> Any:
    def tweak(data: dict[str, Any]) -> None:
        rule = {"name": "support-watch", "groups": ["support"], "permission": "none", "join": True}
        data["policy"]["rules"].append({**rule, "join_approval": approval})

    return tweak


@pytest.fixture
async def contexts(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for context in made:
        await context.close()


class Frames:
    """The binary (RFB) frames a page's console socket received."""

    def __init__(self, page: Page) -> None:
        self.binary = 0
        page.on("websocket", self._socket)

    def _socket(self, ws: WebSocket) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.binary += 1


async def owner_page(browser: Browser, contexts: list[BrowserContext], gateway: RunningGateway) -> Page:
    context, page, _ = await new_page(browser)
    contexts.append(context)
    await sign_in(page, gateway.url, "demo", "demo")
    await page.goto(f"{gateway.url}/console/demo/{clipboard.XVNC_ID}")
    await expect(page.get_by_test_id("console-status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )
    return page


async def observer_page(
    browser: Browser, contexts: list[BrowserContext], gateway: RunningGateway, console_id: str
) -> tuple[Page, Frames]:
    context, page, _ = await new_page(browser)
    contexts.append(context)
    await sign_in(page, gateway.url, "viewer", "viewer")
    frames = Frames(page)
    await page.goto(f"{gateway.url}/join/{console_id}")
    return page, frames


def console_id(gateway: RunningGateway) -> str:
    [live] = [live for live in gateway.gw.registry.local.values() if not live.record.watching]
    return live.record.id


async def typed_on(page: Page, text: str) -> None:
    await page.get_by_test_id("console-screen").locator("canvas").click()
    await page.keyboard.type(text, delay=30)


async def test_the_owner_approves_and_the_observer_watches_without_touching(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho, browser: Browser, contexts: list[BrowserContext]
) -> None:
    gateway = await start_gateway(cloud, tmp_path, join_rule("owner"))
    try:
        owner = await owner_page(browser, contexts, gateway)
        watched = console_id(gateway)
        await owner.get_by_test_id("copy-join-link").click()
        await expect(owner.get_by_test_id("watch-notice")).to_contain_text("Join link")

        observer, frames = await observer_page(browser, contexts, gateway, watched)
        await expect(observer.locator("#connecting-text")).to_contain_text(
            "Waiting for demo", timeout=WAIT_MS
        )
        pending = owner.get_by_test_id("watcher").filter(has_text="viewer")
        await expect(pending).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
        await expect(owner.get_by_test_id("watch-notice")).to_contain_text("viewer asks to watch")
        assert frames.binary == 0  # waiting for approval: no upstream, no frame

        await pending.get_by_test_id("watcher-approve").click()
        status = observer.get_by_test_id("console-status")
        await expect(status).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        await expect(observer.get_by_test_id("observer-badge")).to_have_text(
            "Watching demo's console · view only"
        )
        await expect(observer.get_by_test_id("view-only-badge")).to_be_visible()
        await expect(observer.get_by_test_id("copy-join-link")).to_be_hidden()
        joined = owner.get_by_test_id("watcher").filter(has_text="viewer")
        await expect(joined).to_have_attribute("data-status", "joined", timeout=WAIT_MS)
        await expect(joined).to_contain_text("since")
        await expect(owner.get_by_test_id("watch-notice")).to_contain_text("viewer started watching")

        # The owner types: the X program sees it, and the observer's canvas changes with it.
        before = await canvas_digest(observer)
        await typed_on(owner, "hello")
        await wait_for(lambda: echo.typed == "hello", 20, "the owner's typing at the X program")

        async def changed() -> bool:
            return await canvas_digest(observer) != before

        await wait_for(changed, 15, "the observer's canvas to show the owner's typing")

        # The observer types: nothing reaches the console (the owner's next key lands right after hello).
        await typed_on(observer, "zzz")
        await typed_on(owner, "!")
        await wait_for(lambda: echo.typed.endswith("!"), 20, "the owner's marker key")
        assert echo.typed == "hello!"

        # The observer leaves: the owner hears of it and still types into a live console.
        await observer.close()
        await expect(owner.get_by_test_id("watch-notice")).to_contain_text(
            "viewer stopped watching", timeout=WAIT_MS
        )
        await expect(owner.get_by_test_id("watchers")).to_be_hidden()
        await expect(owner.get_by_test_id("console-status")).to_have_attribute("data-state", "connected")
        await typed_on(owner, "ok")
        await wait_for(lambda: echo.typed == "hello!ok", 20, "the owner's typing after the observer left")
        closed = await gateway.wait_for_audit("console_closed", user="viewer", watching=watched)
        assert closed["dropped_messages"] > 0  # the observer's keys, dropped at the gateway
        await gateway.wait_for_audit("observer_left", user="viewer", closed_by="browser")
    finally:
        await gateway.stop()


async def test_a_refused_join_and_an_unanswered_one_never_see_a_frame(
    cloud: DemoCloud, tmp_path: Path, browser: Browser, contexts: list[BrowserContext]
) -> None:
    gateway = await start_gateway(cloud, tmp_path, join_rule("owner"))
    try:
        owner = await owner_page(browser, contexts, gateway)
        watched = console_id(gateway)
        refused, refused_frames = await observer_page(browser, contexts, gateway, watched)
        pending = owner.get_by_test_id("watcher").filter(has_text="viewer")
        await pending.get_by_test_id("watcher-refuse").click()
        await expect(refused.get_by_test_id("failure-title")).to_have_text("Join refused", timeout=WAIT_MS)
        await expect(refused.get_by_test_id("failure-code")).to_have_text("Close code 4431")
        assert refused_frames.binary == 0

        # Asked again and left unanswered: the owner's page lists it, the observer still sees nothing.
        waiting, waiting_frames = await observer_page(browser, contexts, gateway, watched)
        await expect(waiting.locator("#connecting-text")).to_contain_text("Waiting for demo", timeout=WAIT_MS)
        await expect(owner.get_by_test_id("watcher").filter(has_text="viewer")).to_have_attribute(
            "data-status", "pending", timeout=WAIT_MS
        )
        await expect(waiting.get_by_test_id("console-status")).to_have_attribute("data-state", "connecting")
        assert waiting_frames.binary == 0
        await expect(owner.get_by_test_id("console-status")).to_have_attribute("data-state", "connected")
    finally:
        await gateway.stop()


async def test_admins_watch_from_the_live_list_and_observers_end_with_the_owners_console(
    cloud: DemoCloud, tmp_path: Path, browser: Browser, contexts: list[BrowserContext]
) -> None:
    gateway = await start_gateway(cloud, tmp_path)
    try:
        owner = await owner_page(browser, contexts, gateway)
        context, admin, _ = await new_page(browser)
        contexts.append(context)
        await sign_in(admin, gateway.url, "admin", "admin")
        await admin.goto(f"{gateway.url}/admin")
        row = admin.get_by_test_id("admin-row").filter(has_text="demo")
        async with context.expect_page() as opened:
            await row.get_by_test_id("admin-watch").click()
        watching = await opened.value
        await expect(watching.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        await expect(watching.get_by_test_id("observer-badge")).to_contain_text("demo's console")
        await expect(owner.get_by_test_id("watcher").filter(has_text="admin")).to_have_attribute(
            "data-status", "joined", timeout=WAIT_MS
        )
        # The observer's own console is listed, without a watch action of its own.
        observer_row = admin.get_by_test_id("admin-row").filter(has_text="admin")
        await expect(observer_row.get_by_test_id("admin-watch")).to_be_hidden(timeout=WAIT_MS)
        await expect(observer_row).to_contain_text("observer")

        await owner.close()
        await expect(watching.get_by_test_id("failure-title")).to_have_text(
            "The watched console ended", timeout=WAIT_MS
        )
    finally:
        await gateway.stop()


async def test_an_observer_asking_for_exclusive_access_disconnects_nobody(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho, browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Xvnc drops every other client when one sends ClientInit shared-flag 0 (-DisconnectClients, its
    default): an observer's goes upstream as shared whatever it sends."""
    gateway = await start_gateway(cloud, tmp_path, join_rule("none"))
    viewer = Operator(gateway)
    try:
        owner = await owner_page(browser, contexts, gateway)
        await viewer.login("viewer")
        ws = await viewer.http.ws_connect(
            gateway.ws_url(f"/ws/join/{console_id(gateway)}"), origin=gateway.origin
        )
        transport = RecordingTransport(ws, viewer.seen)
        assert (await transport.hello())["observer"]["owner"] == "demo"
        exclusive = RFBClient(transport, shared=False, timeout=10)
        await exclusive.handshake()
        assert (await exclusive.full_update()).rects
        await typed_on(owner, "still here")
        await wait_for(lambda: echo.typed == "still here", 20, "the owner's typing after the exclusive ask")
        await expect(owner.get_by_test_id("console-status")).to_have_attribute("data-state", "connected")
        assert (await exclusive.full_update()).rects  # and the observer is served too
    finally:
        await viewer.close()
        await gateway.stop()
