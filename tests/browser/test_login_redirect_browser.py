"""Real Chromium: no `next` on the sign-in page can send the browser off our origin (issue 10, item 8).

Browsers drop tab, CR and LF anywhere in a URL, so `/<TAB>/host` is navigated to as `//host`, and treat
`\\` like `/`. The page follows `next` itself when the visitor is already signed in, so it must refuse
what the server's `safe_next` refuses. The "attacker" is a real HTTP server on loopback, on another
origin: it must never be asked for anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from tests.support.browser import new_page
from tests.support.ecs import serve
from tests.support.gateway import RunningGateway

pytestmark = pytest.mark.browser
WAIT_MS = 15_000

# Raw query-string values of `next`; {host} is the attacker's host:port.
VARIANTS = [
    "/%09/{host}/",
    "/%0A/{host}/",
    "/%0D/{host}/",
    "/%0D%0A/{host}/",
    "/%09%09/{host}/",
    "//{host}/",
    "/%5C{host}/",
    "/\\{host}/",
    "/%2F/{host}/",
    "/%5C/{host}/",
    "%2F%2F{host}/",
    "%2F%09%2F{host}/",
    "/%252F/{host}/",
    "%09//{host}/",
    "http://{host}/",
]


@pytest.fixture
async def attacker() -> AsyncIterator[tuple[str, list[str]]]:
    """Another origin on loopback that records every request it gets."""
    hits: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        hits.append(str(request.url))
        return web.Response(text="attacker")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with serve(app) as url:
        yield urlsplit(url).netloc, hits


async def _landing(page: Page, base: str) -> str:
    """Where the sign-in page sends the browser once it leaves /login."""
    await page.wait_for_url(lambda url: not url.startswith(f"{base}/login"), timeout=WAIT_MS)
    return page.url


async def test_sign_in_page_never_leaves_our_origin(
    stack: RunningGateway, browser: Browser, attacker: tuple[str, list[str]]
) -> None:
    host, hits = attacker
    escaped: dict[str, str] = {}
    for variant in VARIANTS:
        query = variant.format(host=host)
        context, page, _ = await new_page(browser)
        try:
            # Signing in through the form: the server's answer decides where to go.
            await page.goto(f"{stack.url}/login?next={query}")
            await page.get_by_test_id("login-user").fill("demo")
            await page.get_by_test_id("login-password").fill("demo")
            await page.get_by_test_id("login-submit").click()
            after_form = await _landing(page, stack.url)
            # Already signed in: the page follows `next` by itself.
            await page.goto(f"{stack.url}/login?next={query}")
            after_visit = await _landing(page, stack.url)
        finally:
            await context.close()
        for how, url in (("form", after_form), ("signed-in visit", after_visit)):
            if not url.startswith(stack.url + "/"):
                escaped[f"{variant} ({how})"] = url
    assert escaped == {}, f"the sign-in page left our origin: {escaped}"
    assert hits == [], f"the attacker's server was asked for {hits}"
