"""Just-in-time access in Chromium: a viewer asks for control with a reason, an approver approves it on
the admin page, and the viewer's console opens with control."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from gateway.auth.passwords import hash_password
from tests.support.browser import new_page, sign_in
from tests.support.gateway import RunningGateway, demo_stack

pytestmark = pytest.mark.browser
WAIT_MS = 15_000


def _with_approver(data: dict[str, Any]) -> None:
    data["auth"]["local"]["users"].append(
        {"name": "lead", "password_hash": hash_password("lead"), "groups": ["leads"]}
    )
    data["policy"]["rules"].append(
        {"name": "support-jit", "groups": ["support"], "permission": "control", "approvers": ["leads"]}
    )


@pytest.fixture
async def governed(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with demo_stack(tmp_path, _with_approver) as gateway:
        yield gateway


async def test_request_approve_and_open_with_control(governed: RunningGateway, browser: Browser) -> None:
    viewer_context, viewer, _ = await new_page(browser)
    lead_context, lead, _ = await new_page(browser)
    try:
        await sign_in(viewer, governed.url, "viewer", "viewer")
        row = viewer.get_by_test_id("server-row").filter(has_text="web-01")
        await row.get_by_test_id("server-request").click()
        await viewer.get_by_test_id("request-reason").fill("INC-99 restart the stuck service")
        await viewer.get_by_test_id("request-submit").click()
        await expect(viewer.get_by_test_id("request-sent")).to_contain_text("Requested control on web-01")

        await sign_in(lead, governed.url, "lead", "lead")
        await expect(lead.get_by_test_id("nav-admin")).to_be_visible()
        await lead.goto(governed.url + "/admin")
        pending = lead.get_by_test_id("access-row").filter(has_text="viewer")
        await expect(pending.get_by_test_id("access-reason")).to_have_text(
            "INC-99 restart the stuck service", timeout=WAIT_MS
        )
        await pending.get_by_test_id("access-approve").click()
        await expect(lead.get_by_test_id("access-empty")).to_be_visible(timeout=WAIT_MS)

        await viewer.reload()
        row = viewer.get_by_test_id("server-row").filter(has_text="web-01")
        await row.get_by_test_id("server-open").click()
        await expect(viewer.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        await expect(viewer.get_by_test_id("view-only-badge")).to_be_hidden()
        approved = await governed.wait_for_audit("access_approved", target_user="viewer")
        assert approved["user"] == "lead"
        opened = await governed.wait_for_audit("console_opened", user="viewer")
        assert (opened["permission"], opened["rule"]) == ("control", "support-jit")
    finally:
        await viewer_context.close()
        await lead_context.close()
