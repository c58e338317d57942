"""Headless Debian Chromium driven by Playwright, recording every address the page talks to."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root needs --no-sandbox; the rest keep it from reaching for the (closed) network on its own.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
]


@dataclass
class Traffic:
    """Every request URL and WebSocket URL the browser opened, and console errors the page logged."""

    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def foreign(self, origin: str) -> list[str]:
        ws_origin = origin.replace("http", "ws", 1)
        return [
            url
            for url in self.requests + self.websockets
            if not (url.startswith((origin + "/", ws_origin + "/")) or url.startswith(("data:", "blob:")))
        ]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser) -> tuple[BrowserContext, Page, Traffic]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    traffic = Traffic()
    context.on("request", lambda request: traffic.requests.append(request.url))
    page = await context.new_page()
    page.on("websocket", lambda ws: traffic.websockets.append(ws.url))
    page.on("console", lambda msg: traffic.console_errors.append(msg.text) if msg.type == "error" else None)
    return context, page, traffic


async def sign_in(page: Page, base: str, user: str, password: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_test_id("login-user").fill(user)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()
    await page.wait_for_url(f"{base}/servers")


async def canvas_digest(page: Page) -> str:
    """A fingerprint of what the console canvas shows."""
    return await page.evaluate(
        """() => {
            const canvas = document.querySelector('[data-testid="console-screen"] canvas');
            return canvas ? canvas.toDataURL('image/png') : '';
        }"""
    )
