"""Real Chromium, two clouds in one gateway (the demo's simulated ECS and Nova): a cloud column, a cloud
filter, and a console opened on the Nova side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from gateway.sim.demo import DEMO_NOVA_SERVERS, NOVA_CLOUD_NAME
from tests.support.browser import new_page, sign_in
from tests.support.gateway import RunningGateway, demo_stack

pytestmark = pytest.mark.browser
WAIT_MS = 15_000


@pytest.fixture
async def two_clouds(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with demo_stack(tmp_path, nova_servers=DEMO_NOVA_SERVERS) as gateway:
        yield gateway


async def test_cloud_column_and_filter_then_a_nova_console(
    two_clouds: RunningGateway, browser: Browser
) -> None:
    context, page, traffic = await new_page(browser)
    try:
        await sign_in(page, two_clouds.url, "demo", "demo")
        rows = page.get_by_test_id("server-row")
        await expect(rows).to_have_count(4 + len(DEMO_NOVA_SERVERS))
        choice = page.get_by_test_id("cloud-filter")
        await expect(choice).to_be_visible()
        await choice.select_option(NOVA_CLOUD_NAME)
        await expect(rows.locator("visible=true")).to_have_count(len(DEMO_NOVA_SERVERS))
        await expect(page.get_by_test_id("server-count")).to_have_text(
            f"{len(DEMO_NOVA_SERVERS)} of {4 + len(DEMO_NOVA_SERVERS)} servers"
        )
        migrating = rows.filter(has_text="nova-migrating")
        await expect(migrating).to_have_attribute("data-cloud", NOVA_CLOUD_NAME)
        await choice.select_option("")
        await page.get_by_test_id("server-filter").fill("nova-web")
        row = rows.locator("visible=true")
        await expect(row).to_have_count(1)
        await row.get_by_test_id("server-open").click()
        await expect(page.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        assert any(f"/ws/console/{NOVA_CLOUD_NAME}/" in url for url in traffic.websockets)
        assert traffic.foreign(two_clouds.url) == []
    finally:
        await context.close()
