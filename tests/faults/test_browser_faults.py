"""Hostile and broken browsers: resets instead of closes, oversized and endless tiny WebSocket messages.

Each case checks what the misbehaving client gets, that the upstream connection it caused is closed
(the RFB server sees its connection end), that the audit trail closes what it opened, that another
user's console streams on, and that descriptors and tasks come back down.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from yarl import URL

from tests.faults.conftest import REPORT, Rig, build_rig
from tests.support import leaks
from tests.support.gateway import server_id
from tests.support.hostile import RawWebSocket
from tests.support.polling import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

VICTIM_SERVER = "db-01"  # the healthy console uses web-01


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def brig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async for value in build_rig(tmp_path_factory.mktemp("browser-rig"), keepalive=20.0):
        yield value


def _cookie(rig: Rig) -> str:
    jar = rig.victim.http.cookie_jar.filter_cookies(URL(rig.gateway.url))
    return "; ".join(f"{k}={v.value}" for k, v in jar.items())


async def _raw_console(rig: Rig, name: str = VICTIM_SERVER, **kw: Any) -> RawWebSocket:
    sid = server_id(rig.cloud, name)
    port = int(rig.gateway.url.rsplit(":", 1)[1])
    raw = await RawWebSocket.connect(
        port, f"/ws/console/demo/{sid}", cookie=_cookie(rig), origin=rig.gateway.origin, **kw
    )
    assert raw.status == 101
    return raw


async def _hello(raw: RawWebSocket) -> dict[str, Any]:
    import json

    opcode, payload = await asyncio.wait_for(raw.read_frame(), 10)
    assert opcode == 0x1, (opcode, payload[:80])
    return json.loads(payload)


async def _rfb_handshake(raw: RawWebSocket) -> None:
    """Read the server's version, then answer version, security None and ClientInit in one go."""
    got = b""
    while len(got) < 12:
        opcode, payload = await asyncio.wait_for(raw.read_frame(), 10)
        if opcode == 0x2:
            got += payload
    await raw.send(0x2, b"RFB 003.008\n\x01\x01")


def _victim_rfb(rig: Rig) -> Any:
    return rig.cloud.rfb[server_id(rig.cloud, VICTIM_SERVER)]


async def _all_clean(rig: Rig, baseline: leaks.Snapshot, name: str, saw: dict[str, Any]) -> None:
    rfb = _victim_rfb(rig)
    await wait_for(lambda: rfb.connections == 0, 10, "the upstream connection to be closed")
    await wait_for(lambda: len(rig.gateway.gw.registry.local) == 1, 10, "the console to be released")
    after = await leaks.settle(leaks.here, baseline, fd_slack=2, task_slack=1)
    await rig.everyone_else_is_served()
    growth = after.minus(baseline)
    REPORT.append(
        {
            "fault": f"browser:{name}",
            "before": baseline.as_dict(),
            "after": after.as_dict(),
            "growth": growth,
            "user_saw": saw,
        }
    )
    assert growth["fds"] <= 2 and growth["tasks"] <= 1, growth
    events = rig.gateway.audit_events()
    opened = {e["console_id"] for e in events if e["event"] == "console_opened"}
    closed = {e["console_id"] for e in events if e["event"] == "console_closed"}
    assert opened - closed == {rig.healthy_console.notices[0]["console_id"]}


async def test_reset_before_the_console_is_ready(brig: Rig) -> None:
    """The browser is gone (RST) while the gateway is still asking the cloud and connecting upstream:
    the upstream it then holds must be closed, not left open with nobody to relay to."""
    baseline = leaks.here()
    for _ in range(3):
        raw = await _raw_console(brig)
        raw.reset()
    rfb = _victim_rfb(brig)
    await wait_for(lambda: rfb.total_connections >= 1, 10, "the gateway to reach the upstream")
    await _all_clean(brig, baseline, "reset-before-ready", {"what": "nothing: it is gone"})


async def test_reset_mid_stream(brig: Rig) -> None:
    baseline = leaks.here()
    raw = await _raw_console(brig)
    hello = await _hello(raw)
    await _rfb_handshake(raw)
    await raw.send(0x2, struct.pack(">BBHHHH", 3, 0, 0, 0, 800, 600))  # ask for a full frame
    await asyncio.wait_for(raw.read_frame(), 10)
    raw.reset()
    closed = await brig.gateway.wait_for_audit("console_closed", console_id=hello["console_id"])
    assert closed["closed_by"] == "browser"
    await _all_clean(brig, baseline, "reset-mid-stream", {"audit_closed_by": closed["closed_by"]})


@pytest.mark.parametrize("shape", ["one-2MiB-frame", "claimed-2**62-bytes", "fragments-over-limit"])
async def test_oversized_message(brig: Rig, shape: str) -> None:
    baseline = leaks.here()
    raw = await _raw_console(brig)
    hello = await _hello(raw)
    if shape == "one-2MiB-frame":
        await raw.send(0x2, b"\0" * (2 * 1024 * 1024))
    elif shape == "claimed-2**62-bytes":
        raw.writer.write(bytes([0x82, 0xFF]) + struct.pack(">Q", 2**62) + b"mask")  # header only
        await raw.writer.drain()
    else:
        await raw.send(0x2, b"\0" * 600_000, fin=False)
        with contextlib.suppress(ConnectionError, OSError):  # the gateway may hang up mid-send
            for _ in range(4):
                await raw.send(0x0, b"\0" * 600_000, fin=False)
    code, reason = await raw.read_until_close()
    assert code in (1009, None), (code, reason)  # 1009 "message too big", or the socket is simply dropped
    closed = await brig.gateway.wait_for_audit("console_closed", console_id=hello["console_id"])
    raw.reset()
    await _all_clean(
        brig, baseline, f"oversized:{shape}", {"code": code, "audit_closed_by": closed["closed_by"]}
    )


async def test_flood_of_tiny_messages_from_a_view_only_user(brig: Rig) -> None:
    """20 000 one-byte frames that spell key events: none reaches the server, others stay served."""
    viewer = brig.victim
    await viewer.post("/api/logout")
    await viewer.login("viewer")
    baseline = leaks.here()
    rfb = _victim_rfb(brig)
    keys_before = len(rfb.keys_received)
    raw = await _raw_console(brig)
    hello = await _hello(raw)
    assert hello["permission"] == "view"
    await _rfb_handshake(raw)
    key = struct.pack(">BBxxI", 4, 1, 0x61)
    started = time.monotonic()
    latencies = []
    for _batch in range(10):
        for _ in range(250):
            for byte in key:
                raw.writer.write(_tiny(byte))
        await raw.writer.drain()
        t0 = time.monotonic()
        await brig.everyone_else_is_served()
        latencies.append(time.monotonic() - t0)
    flood_seconds = time.monotonic() - started
    await raw.send(0x8, struct.pack(">H", 1000))
    closed = await brig.gateway.wait_for_audit("console_closed", console_id=hello["console_id"])
    raw.reset()
    assert len(rfb.keys_received) == keys_before, "a view-only key event reached the server"
    assert closed["dropped_messages"] == 2500
    assert max(latencies) < 3.0, latencies
    await viewer.post("/api/logout")
    await viewer.login("demo")
    await _all_clean(
        brig,
        baseline,
        "flood-20000-tiny-frames",
        {
            "dropped": closed["dropped_messages"],
            "flood_seconds": round(flood_seconds, 2),
            "healthy_update_latency_max": round(max(latencies), 3),
        },
    )


def _tiny(byte: int) -> bytes:
    return bytes([0x82, 0x81]) + b"\0\0\0\0" + bytes([byte])  # masked with a zero key
