"""The identity a trusted SSO proxy asserts on a request governs that request, and live consoles follow it.

Issue 10 item 3: with proxy sign-in, a user the identity provider moved out of a group kept that group's
rights for the cookie's lifetime. These tests drive the real gateway app (and, for replicas, a real
redis-server) through its public interfaces: the proxy's identity headers, the API and the console socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from yarl import URL

from gateway.auth.cookie import generate_key
from tests.support.gateway import (
    WAIT,
    ConsoleRefused,
    Operator,
    RecordingTransport,
    RunningGateway,
    as_asserted,
    behind_sso_proxy,
)
from tests.support.polling import wait_for
from tests.support.redis_server import RedisServer
from tests.support.rfb_client import RFBClient


async def _closed(transport: RecordingTransport, client: RFBClient) -> tuple[int | None, str]:
    await asyncio.wait_for(client.wait_closed(), WAIT)
    return transport.close_code, transport.close_reason or ""


async def _connected(op: Operator, name: str) -> tuple[RecordingTransport, RFBClient]:
    transport = await op.open_console(name)
    client = RFBClient(transport)
    await client.handshake()
    return transport, client


async def test_groups_the_proxy_asserts_now_govern_the_session_and_live_consoles(
    gateways: Callable[..., Any],
) -> None:
    def operators_administer(data: dict[str, Any]) -> None:
        behind_sso_proxy(data)
        data["policy"]["admins"]["groups"] = ["operators"]

    gateway: RunningGateway = await gateways(operators_administer)
    op = Operator(gateway)
    try:
        me = await as_asserted(op, "pat", "operators")
        assert (me["groups"], me["admin"]) == (["operators"], True)
        assert (await op.get("/api/admin/sessions"))[0] == 200
        control, control_client = await _connected(op, "web-01")
        assert control.notices[0]["permission"] == "control"

        # The identity provider moved pat from operators to support: the next request says so.
        assert (await as_asserted(op, "pat", "support"))["groups"] == ["support"]
        code, reason = await _closed(control, control_client)
        assert code == 4003 and "permission" in reason
        del op.http.headers["X-Auth-Request-User"], op.http.headers["X-Auth-Request-Groups"]
        status, me = await op.get("/api/me")
        assert (status, me["groups"]) == (200, ["support"]), "the cookie was reissued with the new groups"
        assert (await op.get("/api/admin/sessions"))[0] == 403, "admin rights went with the group"

        view, view_client = await _connected(op, "web-01")
        assert view.notices[0]["permission"] == "view"
        assert (await as_asserted(op, "pat", ""))["groups"] == [], "no group left at the identity provider"
        code, reason = await _closed(view, view_client)
        assert code == 4003 and "withdrawn" in reason
        with pytest.raises(ConsoleRefused) as refused:
            await op.open_console("web-01")
        assert refused.value.code == 4403

        changes = [e for e in gateway.audit_events() if e["event"] == "identity_changed"]
        assert [(e["user"], e["groups"], e["method"]) for e in changes] == [
            ("pat", ["support"], "proxy-header"),
            ("pat", [], "proxy-header"),
        ]

        def closed_by() -> list[str]:
            return [e["closed_by"] for e in gateway.audit_events() if e["event"] == "console_closed"]

        await wait_for(lambda: len(closed_by()) == 2, WAIT, "both console_closed lines")
        assert closed_by() == ["policy", "policy"]
    finally:
        await op.close()


async def test_a_group_change_seen_by_one_replica_closes_a_console_on_another(
    redis: RedisServer, gateways: Callable[..., Any]
) -> None:
    key = generate_key()

    def replica(data: dict[str, Any]) -> None:
        behind_sso_proxy(data)
        data["session"]["keys"] = [key]
        data["state"] = {"backend": "redis", "redis": {"url": redis.url}}

    one, other = await gateways(replica), await gateways(replica)
    at_one, at_other = Operator(one), Operator(other)
    try:
        await as_asserted(at_other, "pat", "operators")
        control, control_client = await _connected(at_other, "web-01")
        assert control.notices[0]["permission"] == "control"
        # The same browser session (one cookie) reaches the other replica with the new groups.
        at_one.http.cookie_jar.update_cookies(at_other.http.cookie_jar.filter_cookies(URL(other.url)))
        assert (await as_asserted(at_one, "pat", "support"))["groups"] == ["support"]
        code, reason = await _closed(control, control_client)
        assert code == 4003 and "permission" in reason
        closed = await other.wait_for_audit("console_closed")
        assert (closed["closed_by"], closed["user"]) == ("policy", "pat")
    finally:
        await at_one.close()
        await at_other.close()
