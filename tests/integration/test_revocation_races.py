"""A lock, sign-out or terminate that lands while a console is still opening (the cloud can take seconds to
describe the server) must stop it before it relays a byte. Real demo cloud, real websockify, a slow API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.consoles.codes import CLOSE_LOCKED, CLOSE_LOGGED_OUT, CLOSE_TERMINATED
from gateway.sim.demo import PROJECT_ID, DemoCloud
from gateway.sim.ecs_api import Fault
from tests.support.gateway import ConsoleRefused, Operator, RunningGateway, server_id
from tests.support.polling import wait_for

SignIn = Callable[..., Awaitable[Operator]]


async def _revoke(how: str, demo: Operator, admin: Operator) -> None:
    if how == "lock":
        status, body = await admin.post("/api/admin/users/demo/lock", {"reason": "incident 42"})
    elif how == "sign-out":
        status, body = await demo.post("/api/logout")
    else:
        status, body = await admin.post("/api/admin/users/demo/terminate")
    assert status == 200, body


@pytest.mark.parametrize(
    ("how", "code", "failure"),
    [("lock", CLOSE_LOCKED, "admin"), ("sign-out", CLOSE_LOGGED_OUT, "logout"),
     ("terminate", CLOSE_TERMINATED, "admin")],
)  # fmt: skip
async def test_a_revocation_during_the_cloud_call_stops_the_console_before_any_byte(
    cloud: DemoCloud, gateway: RunningGateway, sign_in: SignIn, how: str, code: int, failure: str
) -> None:
    demo = await sign_in(gateway, "demo")
    admin = await sign_in(gateway, "admin")
    target = server_id(cloud, "web-01")
    seen = len(cloud.ecs.calls)
    cloud.ecs.inject(Fault(status=None, delay=2.0, path=f"/cloudservers/{target}"))  # the server lookup
    opening = asyncio.create_task(demo.open_console("web-01"))
    await wait_for(
        lambda: ("GET", f"/v1/{PROJECT_ID}/cloudservers/{target}") in cloud.ecs.calls[seen:],
        10,
        "the slow server lookup to be under way",
    )
    await _revoke(how, demo, admin)
    with pytest.raises(ConsoleRefused) as refused:
        await opening
    assert refused.value.code == code, refused.value
    failed = await gateway.wait_for_audit("console_failed", user="demo")
    assert failed["failure"] == failure and failed["close_code"] == code
    assert not [e for e in gateway.audit_events() if e["event"] == "console_opened" and e["user"] == "demo"]
    await wait_for(lambda: not gateway.gw.registry.local, 10, "the refused console to be released")
