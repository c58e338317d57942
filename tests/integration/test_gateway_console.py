"""The whole path: sign in, list, open a console via the gateway, the real websockify and an RFB server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.support.audit_schema import validate_line
from tests.support.gateway import ConsoleRefused, Operator, RunningGateway
from tests.support.rfb_client import RFBClient

XK_h, XK_i = 0x68, 0x69


async def test_server_list_shows_what_the_user_may_open(operator: Operator) -> None:
    await operator.login("demo")
    status, body = await operator.get("/api/servers")
    assert status == 200
    by_name = {s["name"]: s for s in body["servers"]}
    assert set(by_name) == {"web-01", "db-01", "build-runner", "legacy-app"}
    assert by_name["web-01"]["permission"] == "control"
    assert by_name["web-01"]["available"] is True
    assert by_name["legacy-app"]["available"] is False
    assert by_name["legacy-app"]["unavailable_reason"] == "the server is stopped"
    assert body["errors"] == []


async def test_console_round_trips_a_keystroke(operator: Operator, gateway: RunningGateway) -> None:
    await operator.login("demo")
    transport = await operator.open_console("web-01")
    assert transport.notices[0]["permission"] == "control"
    client = RFBClient(transport)
    init = await client.handshake()
    assert "web-01" in init.name
    before = await client.full_update()
    assert before.rects, "a full framebuffer update arrives through the gateway"
    await client.request_update(incremental=True)
    await client.type_text("hi")
    rfb = gateway.cloud.rfb[gateway.cloud.servers[0].id]
    changed = await client.next_update()
    assert changed.rects, "typing produced an incremental update"
    assert rfb.keys_received[-2:] == [XK_h, XK_i]
    await transport.close()
    closed = await gateway.wait_for_audit("console_closed", server_name="web-01")
    assert closed["closed_by"] == "browser"
    assert closed["bytes_to_browser"] > 800 * 600
    assert closed["bytes_to_upstream"] > 0
    opened = await gateway.wait_for_audit("console_opened", server_name="web-01")
    assert opened["rule"] == "demo-operators-control"
    assert opened["upstream"].startswith("127.0.0.1:")


async def test_every_connection_asks_the_cloud_afresh(operator: Operator, gateway: RunningGateway) -> None:
    await operator.login("demo")
    ecs = gateway.cloud.ecs
    assert ecs is not None
    for _ in range(2):
        transport = await operator.open_console("db-01")
        await RFBClient(transport).handshake()
        await transport.close()
    posts = [path for method, path in ecs.calls if method == "POST" and path.endswith("/remote_console")]
    assert len(posts) == 2


@pytest.mark.parametrize(
    ("server", "code", "words"),
    [
        ("legacy-app", 4423, "the server is stopped"),
        ("00000000-0000-0000-0000-000000000000", 4404, "no such server"),
    ],
)
async def test_unusable_servers_close_with_a_clear_reason(
    operator: Operator, gateway: RunningGateway, server: str, code: int, words: str
) -> None:
    await operator.login("demo")
    with pytest.raises(ConsoleRefused) as refused:
        await operator.open_console(server)
    assert refused.value.code == code
    assert words in (refused.value.reason or "").lower()


async def test_unknown_cloud_is_refused(operator: Operator) -> None:
    await operator.login("demo")
    with pytest.raises(ConsoleRefused) as refused:
        await operator.open_console("web-01", cloud="elsewhere")
    assert refused.value.code == 4404


async def test_cross_origin_websocket_is_refused_before_upgrade(operator: Operator) -> None:
    await operator.login("demo")
    import aiohttp

    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await operator.open_console("web-01", origin="https://evil.example")
    assert err.value.status == 403


async def test_unauthenticated_console_is_closed(gateway: RunningGateway) -> None:
    op = Operator(gateway)
    try:
        with pytest.raises(ConsoleRefused) as refused:
            await op.open_console("web-01")
        assert refused.value.code == 4401
    finally:
        await op.close()


async def test_audit_lines_all_match_the_schema(operator: Operator, gateway: RunningGateway) -> None:
    await operator.login("demo")
    await operator.post("/api/login", {"user": "demo", "password": "wrong"}, csrf=False)
    transport = await operator.open_console("build-runner")
    await RFBClient(transport).handshake()
    await transport.close()
    await gateway.wait_for_audit("console_closed")
    lines = gateway.audit_path.read_text().splitlines()
    events = [validate_line(line)["event"] for line in lines]
    assert {"login", "login_failed", "console_requested", "console_opened", "console_closed"} <= set(events)


async def test_concurrent_consoles_do_not_interfere(operator: Operator, gateway: RunningGateway) -> None:
    await operator.login("demo")
    names = ["web-01", "db-01", "build-runner"]
    transports = await asyncio.gather(*(operator.open_console(n) for n in names))
    clients = [RFBClient(t) for t in transports]
    inits = await asyncio.gather(*(c.handshake() for c in clients))
    for name, init in zip(names, inits, strict=True):
        assert name in init.name
    await asyncio.gather(*(t.close() for t in transports))


async def test_a_console_relays_with_the_fast_path_on_and_forced_off(
    gateways: Callable[..., Awaitable[RunningGateway]],
    sign_in: Callable[..., Awaitable[Operator]],
    frame_passthrough: bool,
) -> None:
    """`console.frame_passthrough = false` (the escape hatch for an aiohttp upgrade) reaches the relay, and
    the console works either way."""
    gateway = await gateways(
        lambda data: data.setdefault("console", {}).update(frame_passthrough=frame_passthrough)
    )
    operator = await sign_in(gateway, "demo")
    transport = await operator.open_console("web-01")
    client = RFBClient(transport)
    await client.handshake()
    assert (await client.full_update()).rects
    await client.request_update(incremental=True)
    await client.type_text("hi")
    await client.next_update()
    assert gateway.cloud.rfb[gateway.cloud.servers[0].id].keys_received[-2:] == [XK_h, XK_i]
    (live,) = gateway.gw.registry.local.values()
    passthrough = live.relay._passthrough  # type: ignore[union-attr]
    assert (passthrough is not None and passthrough.forwarding) if frame_passthrough else passthrough is None
    await transport.close()
    closed = await gateway.wait_for_audit("console_closed", server_name="web-01")
    assert closed["bytes_to_browser"] > 800 * 600
