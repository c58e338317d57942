"""The console page tells the operator that the session is recorded before the first frame: the gateway's
hello (a text frame) comes before any RFB byte, and the page shows the notice when it reads the hello.
Checked in Chromium at the moment the first RFB byte reaches the page, on the real gateway and demo cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import new_page, sign_in
from tests.support.gateway import demo_stack, server_id
from tests.support.recordings import recording_config

pytestmark = pytest.mark.browser
WAIT_MS = 15_000

# Wraps the page's WebSocket: at the first binary message (the first RFB byte) it notes what the
# recording notice said then.
AT_FIRST_RFB_BYTE = """
(() => {
    const Native = window.WebSocket;
    window.__atFirstRfbByte = null;
    window.WebSocket = function (...args) {
        const ws = new Native(...args);
        ws.addEventListener("message", (event) => {
            if (typeof event.data !== "string" && window.__atFirstRfbByte === null) {
                const badge = document.querySelector('[data-testid="recorded-badge"]');
                window.__atFirstRfbByte = badge && !badge.hidden ? badge.textContent : "";
            }
        });
        return ws;
    };
    window.WebSocket.prototype = Native.prototype;
    Object.assign(window.WebSocket, Native);
})();
"""


def recorded(directory: Path, record: str, record_input: bool) -> Any:
    def tweak(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-operators-control":
                rule.update(record=record, record_input=record_input)
        data["recording"] = recording_config(directory=str(directory))

    return tweak


@pytest.mark.parametrize(
    ("record", "record_input", "notice"),
    [
        ("required", True, "This session is recorded, including what you type"),
        ("optional", False, "This session is recorded"),
        ("off", False, ""),
    ],
)
async def test_the_page_says_the_session_is_recorded_before_the_first_frame(
    tmp_path: Path, browser: Browser, record: str, record_input: bool, notice: str
) -> None:
    async with demo_stack(tmp_path, recorded(tmp_path / "recordings", record, record_input)) as gateway:
        context, page, _ = await new_page(browser)
        try:
            await page.add_init_script(AT_FIRST_RFB_BYTE)
            await sign_in(page, gateway.url, "demo", "demo")
            await page.goto(f"{gateway.url}/console/demo/{server_id(gateway.cloud, 'web-01')}")
            await expect(page.get_by_test_id("console-status")).to_have_attribute(
                "data-state", "connected", timeout=WAIT_MS
            )
            assert await page.evaluate("() => window.__atFirstRfbByte") == notice
            badge = page.get_by_test_id("recorded-badge")
            if notice:
                await expect(badge).to_be_visible()
                await expect(badge).to_have_text(notice)
                await gateway.wait_for_audit("recording_started", record=record)
            else:
                await expect(badge).to_be_hidden()
        finally:
            await context.close()
