"""Moderated consoles through the real gateway, the real websockify (the demo's nova-novncproxy) and real
RFB servers: the operator's input is held until a moderator joins through the observer route, held again
when they leave (or the console closes), a moderator can end it, and across two replicas on a real Redis
the owner's replica follows the watcher list even when it misses every pub/sub message."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.consoles.codes import CLOSE_MODERATION
from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.integration import test_missed_commands as missed
from tests.integration.test_missed_commands import BOUND, Pair, signed_in
from tests.support.gateway import (
    Operator,
    RecordingTransport,
    RunningGateway,
    demo_cloud_serving,
    start_gateway,
)
from tests.support.polling import wait_for
from tests.support.rfb_client import RFBClient
from tests.support.vnc_servers import QEMU, qemu_vnc

WAIT = 10.0
SignIn = Callable[..., Awaitable[Operator]]


def moderated(on_leave: str = "pause", grace: float = 0.0) -> Callable[[dict[str, Any]], None]:
    """demo (operators) gets control only while a moderator from support (viewer) watches; support may
    join without the owner's approval."""

    def tweak(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-operators-control":
                rule["moderation"] = {"groups": ["support"], "on_leave": on_leave, "grace": grace}
            if rule["name"] == "demo-support-view":
                rule.update(join=True, join_approval="none")

    return tweak


async def console(op: Operator, name: str) -> tuple[RecordingTransport, RFBClient]:
    transport = await op.open_console(name)
    client = RFBClient(transport, timeout=WAIT)
    await client.handshake()
    return transport, client


async def join(op: Operator, console_id: str, *, shared: bool = True) -> tuple[RecordingTransport, RFBClient]:
    """The observer route, as the observer page uses it; `shared=False` asks for exclusive access."""
    ws = await op.http.ws_connect(op.gateway.ws_url(f"/ws/join/{console_id}"), origin=op.gateway.origin)
    transport = RecordingTransport(ws, op.seen)
    await transport.hello()
    client = RFBClient(transport, shared=shared, timeout=WAIT)
    await client.handshake()
    return transport, client


async def moderation(transport: RecordingTransport, client: RFBClient, state: str) -> dict[str, Any]:
    """Read the console (updates keep the stream moving) until the gateway's notice says `state`."""
    async with asyncio.timeout(WAIT + BOUND):
        while True:
            for notice in transport.notices:
                if notice.get("type") == "moderation" and notice["state"] == state:
                    transport.notices.remove(notice)
                    return notice
            await client.request_update(False, (0, 0, 1, 1))  # one pixel: an answer comes at once
            await client.next_update()


async def typed(client: RFBClient, text: str = "ab") -> None:
    await client.type_text(text)
    await client.request_update(False, (0, 0, 1, 1))  # the keys went (and were relayed) before this
    await client.next_update()


def waiting(gateway: RunningGateway) -> dict[str, float | None]:
    """The gauge of moderated consoles waiting for moderators, by reason."""
    registry = gateway.gw.metrics.registry
    name = "novnc_gateway_moderated_consoles_waiting"
    return {r: registry.get_sample_value(name, {"reason": r}) for r in ("waiting", "paused")}


def moderation_lines(gateway: RunningGateway) -> list[tuple[str, str, list[str]]]:
    lines = [e for e in gateway.audit_events() if e["event"] == "console_moderation"]
    return [(e["moderation"], e["user"], e["moderators"]) for e in lines]


async def test_input_passes_only_while_a_moderator_watches(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn
) -> None:
    gateway = await gateways(moderated())
    owner, owner_client = await console(await sign_in(gateway, "demo"), "db-01")
    hello = owner.notices[0]
    assert hello["moderation"]["state"] == "waiting" and hello["moderation"]["held"] is True
    console_id = hello["console_id"]
    relay = gateway.gw.registry.local[console_id].relay
    assert relay is not None

    await typed(owner_client)
    assert relay.stats.dropped == 4  # two keys, pressed and released: held at the gateway
    assert waiting(gateway) == {"waiting": 1, "paused": 0}
    sent = relay.stats.bytes_to_upstream

    viewer = await sign_in(gateway, "viewer")
    observer, observer_client = await join(viewer, console_id)
    # The moderator's page learns it moderates (it offers "End console") and which console that is.
    assert observer.notices[0]["observer"] == {"owner": "demo", "console_id": console_id, "moderator": True}
    notice = await moderation(owner, owner_client, "moderated")
    assert (notice["held"], notice["moderators"]) == (False, ["viewer"])
    await typed(owner_client)
    assert relay.stats.dropped == 4 and relay.stats.bytes_to_upstream >= sent + 4 * 8

    await observer_client.close()  # the moderator leaves: input is held again
    notice = await moderation(owner, owner_client, "paused")
    assert notice["reason"].startswith("Input paused because viewer left")
    assert waiting(gateway) == {"waiting": 0, "paused": 1}
    await typed(owner_client)
    assert relay.stats.dropped == 8

    _, observer_client = await join(viewer, console_id)
    await moderation(owner, owner_client, "moderated")
    status, _ = await viewer.post(f"/api/consoles/{console_id}/end")
    assert status == 200
    await asyncio.wait_for(owner_client.wait_closed(), WAIT)
    assert (owner.close_code, owner.close_reason) == (CLOSE_MODERATION, "Ended by moderator viewer")
    await gateway.wait_for_audit("console_closed", console_id=console_id)
    assert waiting(gateway) == {"waiting": 0, "paused": 0}
    assert moderation_lines(gateway) == [
        ("waiting", "demo", []),
        ("moderated", "demo", ["viewer"]),
        ("paused", "demo", []),
        ("moderated", "demo", ["viewer"]),
        ("ended", "viewer", ["viewer"]),
    ]


async def test_only_a_moderator_watching_may_end_the_console(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn
) -> None:
    gateway = await gateways(moderated())
    demo = await sign_in(gateway, "demo")
    owner, owner_client = await console(demo, "db-01")
    console_id = owner.notices[0]["console_id"]
    viewer, admin = await sign_in(gateway, "viewer"), await sign_in(gateway, "admin")
    # The owner, an admin who is no moderator, a moderator not watching, and no CSRF token: all refused.
    assert (await demo.post(f"/api/consoles/{console_id}/end"))[0] == 403
    assert (await admin.post(f"/api/consoles/{console_id}/end"))[0] == 403
    assert (await viewer.post(f"/api/consoles/{console_id}/end"))[0] == 403
    watching = await join(viewer, console_id)  # kept: a dropped socket would be a leave
    await moderation(owner, owner_client, "moderated")
    assert (await viewer.post(f"/api/consoles/{console_id}/end", csrf=False))[0] == 403
    assert (await viewer.post("/api/consoles/no-such-console/end"))[0] == 403
    await typed(owner_client)  # still open and taking input
    assert gateway.gw.registry.local[console_id].relay.stats.dropped == 0  # type: ignore[union-attr]
    await watching[1].close()


async def test_terminate_closes_the_console_when_the_moderator_leaves(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn
) -> None:
    gateway = await gateways(moderated(on_leave="terminate", grace=0.0))
    owner, owner_client = await console(await sign_in(gateway, "demo"), "db-01")
    console_id = owner.notices[0]["console_id"]
    _, observer_client = await join(await sign_in(gateway, "viewer"), console_id)
    await moderation(owner, owner_client, "moderated")
    await observer_client.close()
    await asyncio.wait_for(owner_client.wait_closed(), WAIT)
    assert (owner.close_code, owner.close_reason) == (CLOSE_MODERATION, "Closed because viewer left")
    closed = await gateway.wait_for_audit("console_closed", console_id=console_id)
    assert closed["closed_by"] == "moderation"


async def test_terminate_waits_the_grace_for_a_moderator_to_come_back(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn
) -> None:
    """A page reload is a leave and a join: within the grace the console is only held; after it, closed."""
    gateway = await gateways(moderated(on_leave="terminate", grace=1.0))
    owner, owner_client = await console(await sign_in(gateway, "demo"), "db-01")
    console_id = owner.notices[0]["console_id"]
    viewer = await sign_in(gateway, "viewer")
    _, observer_client = await join(viewer, console_id)
    await moderation(owner, owner_client, "moderated")
    await observer_client.close()
    leaving = await moderation(owner, owner_client, "leaving")
    assert leaving["held"] and "closes unless a moderator joins" in leaving["reason"]
    _, observer_client = await join(viewer, console_id)  # back in time
    await moderation(owner, owner_client, "moderated")
    await observer_client.close()
    started = time.monotonic()
    await moderation(owner, owner_client, "leaving")
    await asyncio.wait_for(owner_client.wait_closed(), WAIT)
    assert time.monotonic() - started >= 0.9  # not before the grace ran out
    assert (owner.close_code, owner.close_reason) == (
        CLOSE_MODERATION,
        "This console closed: no moderator came back in time",
    )
    states = [state for state, _, _ in moderation_lines(gateway)]
    assert states == ["waiting", "moderated", "leaving", "moderated", "leaving", "ended"]


async def test_a_reload_that_changes_moderation_reopens_control_consoles(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn
) -> None:
    """Moderation added by a reload reaches the consoles already open: control ones close (4003) and
    reopen moderated; view ones are not concerned."""
    seen: dict[str, Any] = {}
    gateway = await gateways(lambda data: seen.update(data=data))
    owner, owner_client = await console(await sign_in(gateway, "demo"), "db-01")
    assert "moderation" not in owner.notices[0]
    _, viewer_client = await console(await sign_in(gateway, "viewer"), "db-01")
    moderated()(seen["data"])
    gw = gateway.gw
    gw.apply_config(GatewayConfig.model_validate(seen["data"]))  # what SIGHUP does (gateway/server.py)
    assert gw.redecide(lambda r: gw.current_groups(r.user, r.method, r.groups)) == 1
    await asyncio.wait_for(owner_client.wait_closed(), WAIT)
    assert (owner.close_code, owner.close_reason) == (
        4003,
        "The moderation this console needs changed; reopen it",
    )
    await typed(viewer_client)  # the view-only console goes on
    again, _ = await console(await sign_in(gateway, "demo"), "db-01")
    assert again.notices[0]["moderation"]["state"] == "waiting"


pair = missed.pair  # the fixtures of two replicas on one Redis, one of which can be cut off from pub/sub
operators = missed.operators


@pytest.mark.parametrize("pair", [moderated()], indirect=True)
async def test_the_owners_replica_follows_the_watchers_without_pub_sub(
    pair: Pair, operators: list[Operator], tmp_path: Path
) -> None:
    """The owner's console is on B, cut off from pub/sub; the moderator joins and leaves through A. Every
    change reaches B by reconciliation, within one sync interval plus the tick."""
    owner, owner_client = await console(await signed_in(operators, pair.b, "demo"), "db-01")
    console_id = owner.notices[0]["console_id"]
    await pair.cut_b_off()
    viewer = await signed_in(operators, pair.a, "viewer")
    started = time.monotonic()
    _, observer_client = await join(viewer, console_id)
    await moderation(owner, owner_client, "moderated")
    assert time.monotonic() - started < BOUND + WAIT / 2
    await typed(owner_client, "x")
    await observer_client.close()
    await moderation(owner, owner_client, "paused")
    await typed(owner_client, "y")
    await owner_client.close()

    audit_b = tmp_path / "audit-b.jsonl"  # where the fixture has replica B write its audit trail

    def lines(event: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, audit_b.read_text().splitlines()) if e["event"] == event]

    closed = await wait_for(lambda: lines("console_closed"), WAIT, "B's console_closed")
    assert closed[0]["dropped_messages"] == 2  # "y" pressed and released, nothing of "x"
    assert [e["moderation"] for e in lines("console_moderation")] == ["waiting", "moderated", "paused"]


QEMU_SERVER = SimServer(id="5a5a5a5a-0000-4000-8000-00000000d3d3", name="moderated-qemu")


@pytest.fixture
async def qemu_cloud(tmp_path: Path) -> AsyncIterator[DemoCloud]:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 (qemu-system-x86) is not installed")
    async with qemu_vnc(tmp_path / "qemu.log") as address:
        async with demo_cloud_serving(tmp_path / "cloud", QEMU_SERVER, address) as demo:
            yield demo


async def test_an_observer_asking_qemu_for_exclusive_access_disturbs_nobody(
    qemu_cloud: DemoCloud, tmp_path: Path, sign_in: SignIn
) -> None:
    """QEMU honours ClientInit shared=0 by default (share=allow-exclusive): through the observer route it
    goes upstream as shared, the owner stays connected, and the observer's typing is dropped."""
    gateway = await start_gateway(qemu_cloud, tmp_path, moderated())
    try:
        owner, owner_client = await console(await sign_in(gateway, "demo"), QEMU_SERVER.id)
        console_id = owner.notices[0]["console_id"]
        before = await owner_client.full_update()
        viewer = await sign_in(gateway, "viewer")
        _, observer_client = await join(viewer, console_id, shared=False)
        await moderation(owner, owner_client, "moderated")
        await observer_client.type_text("reboot\n")
        await observer_client.send_raw(b"\xfa\x00\x01\x02")  # XVP reboot: dropped like every key
        await observer_client.full_update()
        for _ in range(3):  # the owner is still served, whole screens
            update = await owner_client.full_update()
            assert sum(r.width * r.height for r in update.rects) == sum(
                r.width * r.height for r in before.rects
            )
        await observer_client.close()
        left = await gateway.wait_for_audit("observer_left", target_user="demo")
        closed = await gateway.wait_for_audit("console_closed", console_id=left["console_id"])
        assert closed["dropped_messages"] == 2 * len("reboot\n") + 1
        assert not [
            e for e in gateway.audit_events() if e["event"] == "console_closed" and e["user"] == "demo"
        ]
    finally:
        await gateway.stop()
