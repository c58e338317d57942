"""Access governance on the real console path (demo cloud, real websockify): what a rule demands before a
console opens, and that it is stored with the console (audit, admin list, hello)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.gateway import ConsoleRefused, Operator, RunningGateway
from tests.support.rfb_client import RFBClient

TICKET = "^(INC|CHG)-[0-9]+$"


def justification_required(data: dict[str, Any]) -> None:
    for rule in data["policy"]["rules"]:
        if rule["name"] == "demo-operators-control":
            rule.update(justification="required", ticket_pattern=TICKET)


async def test_a_console_that_needs_a_reason_is_refused_without_one_and_opens_with_one(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: Callable[..., Awaitable[Operator]]
) -> None:
    gateway = await gateways(justification_required)
    demo = await sign_in(gateway, "demo")
    for given, words in [
        (None, "A reason is required"),
        ("disk full", f"ticket reference matching {TICKET}"),
    ]:
        with pytest.raises(ConsoleRefused) as refused:
            await demo.open_console("web-01", justification=given)
        assert refused.value.code == 4428
        assert words in (refused.value.reason or "")
        denied = await gateway.wait_for_audit("console_denied", reason=refused.value.reason)
        assert denied["rule"] == "demo-operators-control"
    assert not [r for r in gateway.cloud.ecs.calls if r[1].endswith("/remote_console")], (
        "no console URL is asked for before the reason is given"
    )

    transport = await demo.open_console("web-01", justification="INC-4711 nginx hangs")
    assert transport.notices[0]["justification"] == "INC-4711 nginx hangs"
    await RFBClient(transport).handshake()
    admin = await sign_in(gateway, "admin")
    status, body = await admin.get("/api/admin/sessions")
    assert status == 200
    assert [c["justification"] for c in body["consoles"]] == ["INC-4711 nginx hangs"]
    await transport.close()
    requested = await gateway.wait_for_audit("console_requested", justification="INC-4711 nginx hangs")
    assert requested["server_id"]
    opened = await gateway.wait_for_audit("console_opened", server_name="web-01")
    assert opened["justification"] == "INC-4711 nginx hangs"


async def test_a_rule_without_the_demand_needs_no_reason(operator: Operator) -> None:
    await operator.login("demo")
    transport = await operator.open_console("web-01")
    assert "justification" not in transport.notices[0]
    await transport.close()
