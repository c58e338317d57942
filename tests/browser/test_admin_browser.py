"""Admin actions in Chromium: an admin ends and locks an operator's console; the operator sees why."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import new_page, sign_in
from tests.support.gateway import RunningGateway

pytestmark = pytest.mark.browser
WAIT_MS = 15_000


async def open_console(page: Page, name: str) -> None:
    row = page.get_by_test_id("server-row").filter(has_text=name)
    await row.get_by_test_id("server-open").click()
    await expect(page.get_by_test_id("console-status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )


async def test_admin_terminates_and_locks_from_the_admin_page(
    stack: RunningGateway, browser: Browser
) -> None:
    op_context, operator, _ = await new_page(browser)
    admin_context, admin, _ = await new_page(browser)
    try:
        await sign_in(operator, stack.url, "demo", "demo")
        await open_console(operator, "web-01")

        await sign_in(admin, stack.url, "admin", "admin")
        await admin.goto(stack.url + "/admin")
        row = admin.get_by_test_id("admin-row").filter(has_text="web-01")
        await expect(row).to_contain_text("demo", timeout=WAIT_MS)
        await row.get_by_test_id("admin-terminate").click()
        await admin.get_by_test_id("confirm-ok").click()

        await expect(operator.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "failed", timeout=WAIT_MS
        )
        await expect(operator.get_by_test_id("failure-reason")).to_contain_text("administrator (admin)")
        await expect(admin.get_by_test_id("admin-row")).to_have_count(0, timeout=WAIT_MS)

        await operator.get_by_test_id("reconnect").click()
        await expect(operator.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        row = admin.get_by_test_id("admin-row").filter(has_text="web-01")
        await row.get_by_test_id("admin-lock").click()
        await admin.get_by_test_id("confirm-reason").fill("incident 7")
        await admin.get_by_test_id("confirm-ok").click()
        await expect(operator.get_by_test_id("failure-reason")).to_contain_text("locked", timeout=WAIT_MS)
        await expect(admin.get_by_test_id("locked-row").filter(has_text="demo")).to_be_visible(
            timeout=WAIT_MS
        )

        await operator.get_by_test_id("reconnect").click()
        await expect(operator.get_by_test_id("failure-reason")).to_contain_text("locked", timeout=WAIT_MS)

        await (
            admin.get_by_test_id("locked-row").filter(has_text="demo").get_by_test_id("admin-unlock").click()
        )
        await expect(admin.get_by_test_id("locked-row")).to_have_count(0, timeout=WAIT_MS)
        await operator.get_by_test_id("reconnect").click()
        await expect(operator.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        events = [e["event"] for e in stack.audit_events()]
        assert {"admin_terminate", "admin_lock", "admin_unlock"} <= set(events)
    finally:
        await op_context.close()
        await admin_context.close()


async def test_operators_cannot_open_the_admin_page(stack: RunningGateway, browser: Browser) -> None:
    context, page, _ = await new_page(browser)
    try:
        await sign_in(page, stack.url, "demo", "demo")
        response = await page.goto(stack.url + "/admin")
        assert response is not None and response.status == 403
        await expect(page.locator("h1")).to_contain_text("Administrators and approvers only")
    finally:
        await context.close()
