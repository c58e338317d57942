"""Access governance in Chromium: the console page asks for the reason a policy rule wants, connects with
it, shows it, and the admin page shows it next to the console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import new_page, sign_in
from tests.support.gateway import RunningGateway, demo_stack

pytestmark = pytest.mark.browser
WAIT_MS = 15_000


def _justification_required(data: dict[str, Any]) -> None:
    for rule in data["policy"]["rules"]:
        if rule["name"] == "demo-operators-control":
            rule.update(justification="required", ticket_pattern="^INC-[0-9]+$")


@pytest.fixture
async def governed(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with demo_stack(tmp_path, _justification_required) as gateway:
        yield gateway


async def test_the_page_asks_for_the_reason_and_the_admin_sees_it(
    governed: RunningGateway, browser: Browser
) -> None:
    op_context, page, _ = await new_page(browser)
    admin_context, admin, _ = await new_page(browser)
    try:
        await sign_in(page, governed.url, "demo", "demo")
        row = page.get_by_test_id("server-row").filter(has_text="web-01")
        await row.get_by_test_id("server-open").click()
        prompt = page.get_by_test_id("justify")
        await expect(prompt).to_be_visible(timeout=WAIT_MS)
        await expect(page.get_by_test_id("justify-expected")).to_contain_text("A reason is required")
        await expect(page.get_by_test_id("justify-expected")).to_contain_text("^INC-[0-9]+$")

        await page.get_by_test_id("justify-text").fill("reboot stuck service")
        await page.get_by_test_id("justify-submit").click()
        await expect(page.get_by_test_id("justify-expected")).to_have_text(
            "The reason needs a ticket reference matching ^INC-[0-9]+$.", timeout=WAIT_MS
        )
        await expect(prompt).to_be_visible()

        await page.get_by_test_id("justify-text").fill("INC-815 reboot stuck service")
        await page.get_by_test_id("justify-submit").click()
        await expect(page.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        await expect(prompt).to_be_hidden()
        await expect(page.get_by_test_id("console-justification")).to_have_text(
            "Reason: INC-815 reboot stuck service"
        )

        await sign_in(admin, governed.url, "admin", "admin")
        await admin.goto(governed.url + "/admin")
        admin_row = admin.get_by_test_id("admin-row").filter(has_text="web-01")
        await expect(admin_row.get_by_test_id("admin-justification")).to_have_text(
            "INC-815 reboot stuck service", timeout=WAIT_MS
        )
        opened = await governed.wait_for_audit("console_opened", server_name="web-01")
        assert opened["justification"] == "INC-815 reboot stuck service"
    finally:
        await op_context.close()
        await admin_context.close()
