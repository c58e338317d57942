"""The relay's keep-alive (gateway/consoles/keepalive.py) on real sockets: a peer that stops answering
pings is closed within the documented bound (1.5 to 2 intervals after its last byte, on the 50 ms grid
the harness uses), on either side; a live idle console outlives a real nginx's idle timeout, which cuts
the same console when the keep-alive is off."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from gateway.consoles.codes import CLOSE_GOING_AWAY, CLOSE_UPSTREAM_LOST, REASON_LOST
from tests.integration.test_relay import (
    GREETING,
    HANDSHAKE,
    Peers,
    _greeter,
    peers,
    receive_bytes,
    receive_close,
)
from tests.support import nginx
from tests.support.hostile import RawWebSocket
from tests.support.ws_peers import WsUpstream, wait_for

__all__ = ["peers"]  # the fixture, shared with the relay tests

INTERVAL = 0.4
# Dead between 1.5 and 2 intervals after the peer's last byte; the grid adds up to 50 ms, a loaded
# machine some more.
EARLIEST, LATEST = 1.5 * INTERVAL - 0.05, 2 * INTERVAL + 0.05 + 0.6


async def test_an_upstream_that_stops_answering_pings_is_closed_within_the_bound(peers: Peers) -> None:
    async def greet_then_play_dead(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(GREETING)
        # Never reads again (aiohttp answers pings only in receive()): no pong, ever, until dropped.
        await wait_for(lambda: request.transport is None, 30.0, "the gateway to drop the silent upstream")

    gw, _ = await peers.via_ws(greet_then_play_dead, keepalive=INTERVAL)
    browser = await peers.browser(gw)
    assert await receive_bytes(browser, len(GREETING)) == GREETING
    last_byte = time.monotonic()
    # Reading, as a browser always is: aiohttp's client answers the gateway's pings while it reads.
    closed = asyncio.create_task(receive_close(browser))
    info = await gw.result()
    took = time.monotonic() - last_byte
    assert (info.by, info.code, info.upstream_code) == ("upstream", CLOSE_UPSTREAM_LOST, 1006)
    assert EARLIEST <= took <= LATEST, took
    assert await closed == (CLOSE_UPSTREAM_LOST, REASON_LOST)
    await gw.assert_clean()


async def test_a_browser_that_stops_answering_pings_is_closed_within_the_bound(peers: Peers) -> None:
    async def greet_and_record(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(GREETING)
        await up.record_until_close(ws)

    gw, up = await peers.via_ws(greet_and_record, keepalive=INTERVAL)
    raw = await RawWebSocket.connect(gw.port, "/ws")  # reads nothing, answers nothing
    try:
        assert raw.status == 101
        await raw.send(0x2, HANDSHAKE)  # its last byte
        last_byte = time.monotonic()
        info = await gw.result()
        took = time.monotonic() - last_byte
        assert (info.by, info.code) == ("browser", 1006)
        assert EARLIEST <= took <= LATEST, took
        await wait_for(lambda: up.close_code is not None, 5.0, "the upstream to be closed")
        assert up.close_code == CLOSE_GOING_AWAY
        assert up.received == [HANDSHAKE]
        await gw.assert_clean()
    finally:
        raw.writer.transport.abort()


def _nginx_site(listen: int, gateway: int, idle: str) -> str:
    """A reverse proxy with a short idle timeout: nginx cuts an upgraded connection when neither side
    sends anything for `proxy_read_timeout`."""
    return f"""server {{
    listen 127.0.0.1:{listen};
    location / {{
        proxy_pass http://127.0.0.1:{gateway};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_read_timeout {idle};
        proxy_send_timeout {idle};
    }}
}}
"""


@pytest.mark.parametrize("keepalive", [INTERVAL, 0.0], ids=["keepalive", "off"])
async def test_a_live_idle_console_outlives_a_proxy_idle_timeout(
    peers: Peers, tmp_path: Path, keepalive: float, frame_passthrough: bool
) -> None:
    async def greet_and_record(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(GREETING)
        await up.record_until_close(ws)

    gw, up = await peers.via_ws(greet_and_record, keepalive=keepalive)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy_idle = 1.5  # seconds; the keep-alive's longest silence on the wire is 1.5 x 0.4 s + 50 ms
    prefix = tmp_path / "nginx"
    conf = nginx.prepare(prefix, _nginx_site(port, gw.port, f"{int(proxy_idle * 1000)}ms"))
    proxy = await nginx.Nginx(prefix, conf, ports=[port]).start()
    try:
        browser = await peers.session.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=1 << 20)
        peers.browsers.append(browser)
        assert await receive_bytes(browser, len(GREETING)) == GREETING
        await browser.send_bytes(HANDSHAKE)
        await wait_for(lambda: up.received == [HANDSHAKE], 5.0, "the handshake upstream")
        idle_until = time.monotonic() + 3 * proxy_idle
        ended = None
        while ended is None and time.monotonic() < idle_until:
            try:
                msg = await asyncio.wait_for(browser.receive(), idle_until - time.monotonic())
            except TimeoutError:
                break
            ended = msg if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR) else None
        if keepalive:
            assert ended is None, ended
            await browser.send_bytes(b"\x04\x01\x00\x00\x00\x00\x00\x61")  # a key, after the idle spell
            await wait_for(lambda: len(up.received) == 2, 5.0, "the key upstream")
            assert not gw.results[0].done()
            # The upstream's pongs: taken by the pass-through (no pump wakes), or by the pump.
            passthrough = gw.relays[0]._passthrough
            assert (passthrough is not None and passthrough.pongs > 0) is frame_passthrough
        else:
            assert ended is not None, "nginx kept an idle console without keep-alive: the test proves nothing"
    finally:
        proxy.stop()
    if keepalive:
        await browser.close()
    await gw.assert_clean()


async def test_an_idle_console_runs_no_task_but_its_two_pumps(peers: Peers) -> None:
    """Idle consoles that cost nothing: the keep-alive is the process's one timer, and the console's own
    timers (idle warning and cut) wait on a loop timer, not on a task asleep per console. A task comes
    only to send the warning, and the cut still lands on time."""
    holder: list[WsUpstream] = []
    gw, upstream = await peers.via_ws(_greeter(holder), idle_timeout=1.5, idle_warning=0.5, keepalive=0.2)
    holder.append(upstream)
    browser = await peers.browser(gw)
    assert await receive_bytes(browser, len(GREETING)) == GREETING
    started = time.monotonic()
    relay = gw.relays[0]
    running = [t.get_name() for t in relay.tasks if not t.done()]
    assert sorted(running) == ["relay-browser-to-upstream", "relay-upstream-to-browser"]
    msg = await asyncio.wait_for(browser.receive(), 5)  # pings are answered inside receive()
    assert msg.type is WSMsgType.TEXT and "idle_warning" in msg.data
    assert 1.0 - 0.1 <= time.monotonic() - started, "the warning came early"
    assert await receive_close(browser) == (4408, "Closed after 1.5 seconds without input")
    assert 1.5 - 0.1 <= time.monotonic() - started <= 1.5 + 1.0
    await gw.assert_clean()
