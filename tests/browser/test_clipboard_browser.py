"""The clipboard dialog in Chromium against a real Xvnc: "Type it" sends the text as key presses, which a
program on the X display echoes; when the rule denies pasting, the page offers neither paste nor typing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.browser import new_page, sign_in
from tests.support.echo_console import echo_console_fixtures
from tests.support.gateway import RunningGateway, start_gateway
from tests.support.polling import wait_for
from tests.support.vnc_servers import XVNC
from tests.support.x_echo import XEcho

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(XVNC is None, reason="Xvnc (tigervnc-standalone-server) is not installed"),
]
WAIT_MS = 15_000
XVNC_ID = "5a5a5a5a-0000-4000-8000-00000000c1b1"


session, echo, cloud = echo_console_fixtures(SimServer(id=XVNC_ID, name="type-xvnc"))


def paste(setting: str) -> Any:
    def tweak(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-operators-control":
                rule["clipboard_paste"] = setting

    return tweak


async def open_console(page: Page, gateway: RunningGateway) -> None:
    await sign_in(page, gateway.url, "demo", "demo")
    await page.goto(f"{gateway.url}/console/demo/{XVNC_ID}")
    await expect(page.get_by_test_id("console-status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )


async def test_type_the_clipboard_into_a_console_at_a_safe_rate(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho, browser: Browser
) -> None:
    gateway = await start_gateway(cloud, tmp_path, paste("allow"))
    context, page, _ = await new_page(browser)
    try:
        await open_console(page, gateway)
        text = "Typed: root@host:~# ls -la /tmp"
        await page.get_by_test_id("clipboard-open").click()
        await page.get_by_test_id("clipboard-text").fill(text)
        started = time.monotonic()
        await page.get_by_test_id("clipboard-type").click()
        await wait_for(lambda: echo.typed == text, 20, "the typed text at the X program")
        # Paced at TYPE_RATE (static/js/keys.js, 50 characters a second), not sent in one burst.
        assert time.monotonic() - started >= (len(text) - 1) / 50
    finally:
        await context.close()
        await gateway.stop()


async def test_a_rule_that_denies_pasting_leaves_neither_paste_nor_typing(
    cloud: DemoCloud, tmp_path: Path, browser: Browser
) -> None:
    gateway = await start_gateway(cloud, tmp_path, paste("deny"))
    context, page, _ = await new_page(browser)
    try:
        await open_console(page, gateway)
        await page.get_by_test_id("clipboard-open").click()
        await expect(page.get_by_test_id("clipboard-send")).to_be_disabled()
        await expect(page.get_by_test_id("clipboard-type")).to_be_disabled()
        await expect(page.locator("#clipboard-status")).to_contain_text("does not allow pasting")
    finally:
        await context.close()
        await gateway.stop()
