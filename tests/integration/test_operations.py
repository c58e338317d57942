"""Limits, admin actions, idle and duration cuts, metrics and readiness, through the real gateway app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.sim.demo import DemoCloud
from tests.support.gateway import ConsoleRefused, Operator
from tests.support.rfb_client import RFBClient


async def opened(op: Operator, name: str) -> tuple[Any, RFBClient]:
    transport = await op.open_console(name)
    client = RFBClient(transport)
    await client.handshake()
    return transport, client


async def test_per_user_and_global_limits(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways(lambda d: d.update(limits={"per_user": 2, "global_max": 3}))
    demo = await sign_in(gateway, "demo")
    held = [await opened(demo, "web-01"), await opened(demo, "db-01")]  # referenced: open until the end
    with pytest.raises(ConsoleRefused) as refused:
        await demo.open_console("build-runner")
    assert refused.value.code == 4429
    assert "already have 2 consoles open" in (refused.value.reason or "")
    viewer = await sign_in(gateway, "viewer")
    held.append(await opened(viewer, "web-01"))
    with pytest.raises(ConsoleRefused) as refused:
        await viewer.open_console("db-01")
    assert refused.value.code == 4429
    assert "console limit" in (refused.value.reason or "")
    limits = [e for e in gateway.audit_events() if e["event"] == "limit_refused"]
    assert [e["limit"] for e in limits] == ["per_user", "global"]
    assert len(held) == len(gateway.gw.registry.local) == 3


async def test_console_request_rate_limit(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways(lambda d: d.update(limits={"requests_per_minute": 1, "burst": 2}))
    demo = await sign_in(gateway, "demo")
    for _ in range(2):
        transport, _client = await opened(demo, "web-01")
        await transport.close()
    with pytest.raises(ConsoleRefused) as refused:
        await demo.open_console("web-01")
    assert refused.value.code == 4429
    assert "Too many console requests; try again in" in (refused.value.reason or "")
    await gateway.wait_for_audit("limit_refused", limit="rate")


async def test_admin_lists_terminates_and_locks(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways()
    demo = await sign_in(gateway, "demo")
    admin = await sign_in(gateway, "admin")
    transport, client = await opened(demo, "web-01")

    status, body = await demo.get("/api/admin/sessions")
    assert status == 403, "operators are not admins"
    status, body = await admin.get("/api/admin/sessions")
    assert status == 200
    [console] = body["consoles"]
    assert (console["user"], console["server_name"], console["permission"]) == ("demo", "web-01", "control")
    assert console["client"] == "127.0.0.1"

    status, _ = await admin.post(f"/api/admin/consoles/{console['id']}/terminate")
    assert status == 200
    await client.wait_closed()
    assert transport.close_code == 4000
    assert "administrator (admin) closed this console" in (transport.close_reason or "")
    await gateway.wait_for_audit("admin_terminate", target_user="demo")
    assert (await gateway.wait_for_audit("console_closed"))["closed_by"] == "admin"

    transport, client = await opened(demo, "db-01")
    status, _ = await admin.post("/api/admin/users/demo/lock", {"reason": "incident 42"})
    assert status == 200
    await client.wait_closed()
    assert transport.close_code == 4002
    with pytest.raises(ConsoleRefused) as refused:
        await demo.open_console("db-01")
    assert "locked" in (refused.value.reason or "")
    status, body = await admin.get("/api/admin/sessions")
    assert body["locked"] == [{"user": "demo", "reason": "incident 42"}]
    status, _ = await admin.post("/api/admin/users/demo/unlock")
    assert status == 200
    transport, _client = await opened(demo, "db-01")
    await transport.close()
    events = [e["event"] for e in gateway.audit_events()]
    assert "admin_lock" in events and "admin_unlock" in events


async def test_admin_action_needs_csrf_token(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways()
    admin = await sign_in(gateway, "admin")
    status, body = await admin.post("/api/admin/users/demo/lock", csrf=False)
    assert (status, body["code"]) == (403, "csrf")
    assert await gateway.gw.store.locked_users() == {}


async def test_idle_warning_then_idle_close(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways(lambda d: d.update(console={"idle_timeout": 1.5, "idle_warning": 1.0}))
    demo = await sign_in(gateway, "demo")
    transport, client = await opened(demo, "web-01")
    await client.wait_closed()
    kinds = [n["type"] for n in transport.notices]
    assert kinds == ["hello", "idle_warning"]
    assert transport.close_code == 4408
    closed = await gateway.wait_for_audit("console_closed")
    assert closed["close_code"] == 4408


async def test_input_keeps_a_console_alive(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways(lambda d: d.update(console={"idle_timeout": 1.5, "idle_warning": 1.0}))
    demo = await sign_in(gateway, "demo")
    transport, client = await opened(demo, "web-01")
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.5
    while loop.time() < until:  # typing more often than the idle timeout
        await client.key(0x61)
        await asyncio.sleep(0.3)
    assert gateway.gw.registry.local, "the console is still open after more than the idle timeout"
    await transport.close()


async def test_maximum_duration(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways(lambda d: d.update(console={"max_duration": 1, "idle_timeout": 0}))
    demo = await sign_in(gateway, "demo")
    transport, client = await opened(demo, "web-01")
    await client.wait_closed()
    assert transport.close_code == 4409


def scrape(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


async def test_metrics_count_sessions_bytes_and_sign_ins(gateways: Any, sign_in: Any) -> None:
    gateway = await gateways()
    demo = await sign_in(gateway, "demo")
    transport, client = await opened(demo, "web-01")
    await client.full_update()
    status, text = await demo.get("/metrics")
    assert status == 200
    during = scrape(text)
    assert during["novnc_gateway_active_sessions{permission=control}"] == 1
    await transport.close()
    await gateway.wait_for_audit("console_closed")
    _status, text = await demo.get("/metrics")
    after = scrape(text)
    assert after["novnc_gateway_active_sessions{permission=control}"] == 0
    assert after["novnc_gateway_sessions_started_total{}"] == 1
    assert after["novnc_gateway_bytes_relayed_total{direction=to_browser}"] > 800 * 600
    assert after["novnc_gateway_signins_total{method=local,outcome=ok}"] == 1
    api = {k: v for k, v in after.items() if k.startswith("novnc_gateway_cloud_api_seconds_count")}
    assert sum(api.values()) >= 2
    assert not any("token" in k for k in after), "no label carries anything token-like"


async def test_readiness_follows_the_cloud_api_and_draining(
    gateways: Any, sign_in: Any, cloud: DemoCloud
) -> None:
    gateway = await gateways()
    demo = await sign_in(gateway, "demo")
    status, body = await demo.get("/readyz")
    assert (status, body["ready"]) == (200, True)
    assert cloud._runner is not None
    await cloud._runner.cleanup()
    cloud._runner = None
    gateway.gw.last_cloud_ok = 0.0
    status, body = await demo.get("/readyz")
    assert status == 503
    assert "cloud API unreachable" in body["problems"]
    gateway.gw.draining = True
    status, body = await demo.get("/readyz")
    assert "draining" in body["problems"]
    status, _ = await demo.get("/healthz")
    assert status == 200, "liveness does not depend on the cloud"
