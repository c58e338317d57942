"""The relay end to end: aiohttp browser client -> gateway (open_upstream + Relay) -> websockify
(a real subprocess) -> a TCP 'VNC server', or a scripted aiohttp upstream where a test needs
exact control of upstream messages and close frames."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway.consoles.codes import REASON_EXPIRED, REASON_LOST
from gateway.upstream import (
    HostAllowlist,
    UpstreamError,
    UpstreamErrorKind,
    UpstreamTarget,
    open_upstream,
    upstream_session,
)
from tests.support.ws_peers import (
    GatewayHarness,
    RelayOptions,
    TcpTarget,
    Websockify,
    WsScript,
    WsUpstream,
    wait_for,
)

# The server's side of a 3.8 handshake (version, security types [None], SecurityResult OK): the
# gateway's filter follows it, so a stand-in server must lead the handshake as a real one does.
GREETING = b"RFB 003.008\n" + b"\x01\x01" + b"\x00\x00\x00\x00"
HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
FBUR = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 10)
XVP_REBOOT = struct.pack(">BxBB", 250, 1, 2)
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)
SET_ENCODINGS = struct.pack(">BxH", 2, 3) + struct.pack(">iii", 0, 7, -316)


UPSTREAM_ARGS: dict[str, Any] = {
    "allowlist": HostAllowlist(["127.0.0.1"]),
    "ssl_context": None,
    "connect_timeout": 5.0,
    "max_msg_size": 1 << 20,
}


def cut_text(data: bytes) -> bytes:
    return struct.pack(">B3xi", 6, len(data)) + data


class Peers:
    """Starts what a test needs and stops all of it, in order, whatever the test did."""

    def __init__(self, tmp: Path, frame_passthrough: bool) -> None:
        self.tmp = tmp
        self.frame_passthrough = frame_passthrough
        self.targets: list[TcpTarget] = []
        self.websockifies: list[Websockify] = []
        self.upstreams: list[WsUpstream] = []
        self.gateways: list[GatewayHarness] = []
        self.session = aiohttp.ClientSession()
        self.browsers: list[aiohttp.ClientWebSocketResponse] = []

    async def via_websockify(self, target: TcpTarget, **options: object) -> GatewayHarness:
        await target.start()
        self.targets.append(target)
        wsk = Websockify(f"127.0.0.1:{target.port}", self.tmp / f"websockify-{len(self.websockifies)}.log")
        self.websockifies.append(wsk)
        return await self.gateway(
            UpstreamTarget("ws", "127.0.0.1", wsk.port, "/websockify", "tok"), **options
        )

    async def via_ws(self, script: WsScript, **options: object) -> tuple[GatewayHarness, WsUpstream]:
        upstream = await WsUpstream(script).start()
        self.upstreams.append(upstream)
        gw = await self.gateway(
            UpstreamTarget("ws", "127.0.0.1", upstream.port, "/websockify", "tok"), **options
        )
        return gw, upstream

    async def gateway(self, target: UpstreamTarget, **options: object) -> GatewayHarness:
        options.setdefault("frame_passthrough", self.frame_passthrough)
        gw = await GatewayHarness(target, RelayOptions(**options)).start()  # type: ignore[arg-type]
        self.gateways.append(gw)
        return gw

    async def browser(self, gw: GatewayHarness, **kwargs: object) -> aiohttp.ClientWebSocketResponse:
        ws = await self.session.ws_connect(gw.url, max_msg_size=1 << 20, **kwargs)  # type: ignore[arg-type]
        self.browsers.append(ws)
        return ws

    async def close(self) -> None:
        for ws in self.browsers:
            if not ws.closed:
                ws._writer.transport.abort()  # a test may leave a browser that stopped reading
                await ws.close()
        await self.session.close()
        for gw in self.gateways:
            await gw.stop()
        for up in self.upstreams:
            await up.stop()
        for wsk in self.websockifies:
            wsk.stop()
        for target in self.targets:
            await target.stop()


@pytest.fixture
async def peers(tmp_path: Path, frame_passthrough: bool) -> AsyncIterator[Peers]:
    p = Peers(tmp_path, frame_passthrough)
    try:
        yield p
    finally:
        await p.close()


async def receive_bytes(ws: aiohttp.ClientWebSocketResponse, n: int) -> bytes:
    out = bytearray()
    async with asyncio.timeout(10):
        while len(out) < n:
            msg = await ws.receive()
            assert msg.type is WSMsgType.BINARY, msg
            out += msg.data
    return bytes(out)


async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.CLOSE:
                return msg.data, msg.extra
            assert msg.type is not WSMsgType.CLOSED, "closed without a close frame"


# --- bytes ---------------------------------------------------------------------------------


async def test_bytes_flow_both_ways_through_websockify(peers: Peers) -> None:
    target = TcpTarget(GREETING)
    gw = await peers.via_websockify(target)
    browser = await peers.browser(gw)
    assert await receive_bytes(browser, len(GREETING)) == GREETING

    big = cut_text(os.urandom(64 * 1024 - 8))  # one 64 KiB message
    sent = [HANDSHAKE, FBUR + KEY, big, b"", POINTER]
    for m in sent:
        await browser.send_bytes(m)
    expected_up = b"".join(sent)
    conn = target.conns[0]
    await wait_for(lambda: len(conn.received) >= len(expected_up), what="the target to get every byte")
    assert bytes(conn.received) == expected_up

    down = [os.urandom(64 * 1024), b"\x00", os.urandom(3000)]
    for chunk in down:
        conn.writer.write(chunk)
    await conn.writer.drain()
    assert await receive_bytes(browser, sum(map(len, down))) == b"".join(down)

    await browser.close()
    info = await gw.result()
    assert (info.by, info.code) == ("browser", 1000)
    assert gw.upstreams[0].close_code == 1000  # websockify echoed the 1000 we passed on
    await asyncio.wait_for(conn.eof.wait(), 5)
    stats = gw.relays[0].stats
    assert stats.bytes_to_upstream == len(expected_up)
    assert stats.msgs_to_upstream == len(sent)  # the empty message went too
    assert stats.bytes_to_browser == len(GREETING) + sum(map(len, down))
    await gw.assert_clean()


async def test_messages_are_relayed_one_to_one(peers: Peers) -> None:
    big = os.urandom(64 * 1024)
    down = [b"", GREETING, big, b"", b"\x00"]

    async def script(ws: web.WebSocketResponse, _req: web.Request) -> None:
        for m in down:
            await ws.send_bytes(m)
        await upstream.record_until_close(ws)

    gw, upstream = await peers.via_ws(script)
    browser = await peers.browser(gw)
    got = []
    async with asyncio.timeout(10):
        for _ in down:
            msg = await browser.receive()
            assert msg.type is WSMsgType.BINARY
            got.append(msg.data)
    assert got == down

    up = [b"", HANDSHAKE, cut_text(big[:-8]), b"", FBUR]
    for m in up:
        await browser.send_bytes(m)
    await wait_for(lambda: len(upstream.received) >= len(up), what="the upstream to get every message")
    assert upstream.received == up
    assert upstream.request_headers.get("Origin") is None
    await browser.close()
    await gw.result()
    await gw.assert_clean()


async def test_text_frames_are_not_relayed(peers: Peers) -> None:
    async def script(ws: web.WebSocketResponse, _req: web.Request) -> None:
        await ws.send_str("not for the browser")
        await ws.send_bytes(GREETING)
        await upstream.record_until_close(ws)

    gw, upstream = await peers.via_ws(script)
    browser = await peers.browser(gw)
    msg = await asyncio.wait_for(browser.receive(), 5)
    assert (msg.type, msg.data) == (WSMsgType.BINARY, GREETING)
    await browser.send_str('{"type": "hello"}')
    await browser.send_bytes(HANDSHAKE)
    await wait_for(lambda: upstream.received == [HANDSHAKE], what="the handshake upstream")
    await browser.close()
    await gw.result()
    assert upstream.received == [HANDSHAKE]
    await gw.assert_clean()


# --- close codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "tab closed"), (4001, "bye")])
async def test_browser_close_code_reaches_the_upstream(peers: Peers, code: int, reason: str) -> None:
    async def script(ws: web.WebSocketResponse, _req: web.Request) -> None:
        await ws.send_bytes(GREETING)
        await upstream.record_until_close(ws)

    gw, upstream = await peers.via_ws(script)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    await browser.close(code=code, message=reason.encode())
    info = await gw.result()
    assert (info.by, info.code, info.reason) == ("browser", code, reason)
    await asyncio.wait_for(upstream.done.wait(), 5)
    assert (upstream.close_code, upstream.close_reason) == (code, reason)
    await gw.assert_clean()


@pytest.mark.parametrize(
    ("up_code", "up_reason", "code", "reason"),
    [
        (1000, "", 1000, ""),
        (1011, "internal", 1011, "internal"),
        (4321, "why", 4321, "why"),
        (3000, "x" * 123, 3000, "x" * 123),
        (1012, "restarting", 4500, "The console proxy closed the connection (code 1012)"),
        (1002, "", 4500, "The console proxy closed the connection (code 1002)"),
    ],
)
async def test_upstream_close_code_reaches_the_browser(
    peers: Peers, up_code: int, up_reason: str, code: int, reason: str
) -> None:
    async def script(ws: web.WebSocketResponse, _req: web.Request) -> None:
        await ws.send_bytes(GREETING)
        await ws.close(code=up_code, message=up_reason.encode())

    gw, _ = await peers.via_ws(script)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    assert await receive_close(browser) == (code, reason)
    info = await gw.result()
    assert (info.by, info.code, info.upstream_code) == ("upstream", code, up_code)
    await gw.assert_clean()


async def test_websockify_close_codes_reach_the_browser(peers: Peers) -> None:
    target = TcpTarget(GREETING)
    gw = await peers.via_websockify(target)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    target.conns[0].writer.close()  # the VNC server goes away cleanly
    assert await receive_close(browser) == (1000, "Target closed")
    await gw.assert_clean()


async def test_abrupt_upstream_close_before_the_first_byte_means_expired(peers: Peers) -> None:
    gw = await peers.via_websockify(TcpTarget(reset_on_connect=True))
    browser = await peers.browser(gw)
    assert await receive_close(browser) == (4410, REASON_EXPIRED)
    info = await gw.result()
    assert (info.by, info.code, info.upstream_code) == ("upstream", 4410, 1006)
    await gw.assert_clean()


async def test_abrupt_upstream_close_later_means_lost(peers: Peers) -> None:
    target = TcpTarget(GREETING)
    gw = await peers.via_websockify(target)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    TcpTarget.reset(target.conns[0])
    assert await receive_close(browser) == (4502, REASON_LOST)
    await gw.assert_clean()


async def test_an_over_long_upstream_message_is_a_lost_link_not_an_expired_one(peers: Peers) -> None:
    async def script(ws: web.WebSocketResponse, _req: web.Request) -> None:
        await ws.send_bytes(bytes(4096))
        await ws.receive()

    gw, _ = await peers.via_ws(script, upstream_max_msg=1024)
    browser = await peers.browser(gw)
    assert await receive_close(browser) == (4502, REASON_LOST)
    await gw.assert_clean()


async def test_cancelling_the_handler_still_closes_both_sides(peers: Peers) -> None:
    holder: list[WsUpstream] = []
    gw, upstream = await peers.via_ws(_greeter(holder))
    holder.append(upstream)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    gw.handler_tasks[0].cancel()  # what a server shutdown does to a running handler
    assert await receive_close(browser) == (1001, "The gateway is shutting down")
    await asyncio.wait_for(upstream.done.wait(), 5)
    assert upstream.close_code == 1001
    with pytest.raises(asyncio.CancelledError):
        await gw.result()
    assert gw.relays[0].close_info is not None and gw.relays[0].close_info.code == 1001
    await gw.assert_clean()


async def test_websockify_token_plugin_rejection_is_reported_as_expired(peers: Peers) -> None:
    target = await TcpTarget(GREETING).start()
    peers.targets.append(target)
    tokens = peers.tmp / "tokens"
    tokens.write_text(f"good: 127.0.0.1:{target.port}\n")
    wsk = Websockify(
        "", peers.tmp / "wsk-token.log", "--token-plugin", "TokenFile", "--token-source", str(tokens)
    )
    peers.websockifies.append(wsk)
    async with upstream_session() as http:
        ok = await open_upstream(
            http, UpstreamTarget("ws", "127.0.0.1", wsk.port, "/websockify", "good"), **UPSTREAM_ARGS
        )
        assert (await ok.receive()).data == GREETING
        await ok.close()
        with pytest.raises(UpstreamError) as info:
            await open_upstream(
                http, UpstreamTarget("ws", "127.0.0.1", wsk.port, "/websockify", "stale"), **UPSTREAM_ARGS
            )
    assert info.value.kind is UpstreamErrorKind.EXPIRED
    assert "stale" not in str(info.value)


# --- view-only -----------------------------------------------------------------------------


async def test_view_only_drops_input_end_to_end(peers: Peers) -> None:
    target = TcpTarget(GREETING)
    gw = await peers.via_websockify(target, view_only=True)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    stream = (
        HANDSHAKE + SET_ENCODINGS + FBUR + KEY + POINTER + cut_text(b"paste") + XVP_REBOOT + QEMU_KEY + FBUR
    )
    # chunked so that messages straddle WebSocket messages
    for i in range(0, len(stream), 7):
        await browser.send_bytes(stream[i : i + 7])
    await browser.close()
    conn = target.conns[0]
    await asyncio.wait_for(conn.eof.wait(), 5)
    assert bytes(conn.received) == HANDSHAKE + SET_ENCODINGS + FBUR + FBUR
    assert gw.relays[0].stats.dropped == 5
    await gw.result()
    await gw.assert_clean()


async def test_view_only_protocol_error_closes_with_4400(peers: Peers) -> None:
    target = TcpTarget(GREETING)
    gw = await peers.via_websockify(target, view_only=True)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    await browser.send_bytes(HANDSHAKE + b"\x07" + bytes(20))
    assert await receive_close(browser) == (4400, "protocol error")
    info = await gw.result()
    assert info.by == "gateway"
    await asyncio.wait_for(target.conns[0].eof.wait(), 5)
    assert bytes(target.conns[0].received) == b""  # the bad chunk went nowhere
    await gw.assert_clean()


# --- timers and terminate --------------------------------------------------------------


def _greeter(holder: list[WsUpstream]) -> WsScript:
    async def script(ws: web.WebSocketResponse, _req: web.Request) -> None:
        await ws.send_bytes(GREETING)
        await holder[0].record_until_close(ws)

    return script


async def test_the_driver_carries_out_the_cores_timer_commands(peers: Peers) -> None:
    """The timer rules are RelayCore's (tests/unit/test_relay_core.py, fake clock); here only that the
    driver sends the notice, sleeps until the wake-up and closes both sides as told. A warning as long as
    the timeout is due at once, so this takes the 50 ms timeout, not seconds."""
    holder: list[WsUpstream] = []
    gw, upstream = await peers.via_ws(_greeter(holder), idle_timeout=0.05, idle_warning=0.05)
    holder.append(upstream)
    browser = await peers.browser(gw)
    texts, data = [], b""
    async with asyncio.timeout(5):
        while (msg := await browser.receive()).type is not WSMsgType.CLOSE:
            if msg.type is WSMsgType.TEXT:
                texts.append(json.loads(msg.data))
            else:
                data += msg.data
    assert texts == [{"type": "idle_warning", "seconds_left": 1}] and data == GREETING
    assert (msg.data, msg.extra) == (4408, "Closed after 0.05 seconds without input")
    await asyncio.wait_for(upstream.done.wait(), 5)
    assert upstream.close_code == 1000
    info = await gw.result()
    assert (info.by, info.code) == ("gateway", 4408)
    await gw.assert_clean()


async def test_terminate_closes_both_sides(peers: Peers) -> None:
    holder: list[WsUpstream] = []
    gw, upstream = await peers.via_ws(_greeter(holder))
    holder.append(upstream)
    browser = await peers.browser(gw)
    await receive_bytes(browser, len(GREETING))
    gw.relays[0].terminate(4001, "Terminated by an administrator")
    gw.relays[0].terminate(4002, "second call is ignored")
    assert await receive_close(browser) == (4001, "Terminated by an administrator")
    await asyncio.wait_for(upstream.done.wait(), 5)
    assert upstream.close_code == 1000
    info = await gw.result()
    assert (info.by, info.code) == ("gateway", 4001)
    await gw.assert_clean()


async def test_terminate_before_run_is_applied_when_it_starts(peers: Peers) -> None:
    holder: list[WsUpstream] = []
    gw, upstream = await peers.via_ws(_greeter(holder), terminate_before_run=(4003, "Your session ended"))
    holder.append(upstream)
    browser = await peers.browser(gw)
    assert await receive_close(browser) == (4003, "Your session ended")
    await asyncio.wait_for(upstream.done.wait(), 5)
    assert upstream.close_code == 1000
    assert upstream.received == [] and gw.relays[0].tasks == ()
    await gw.assert_clean()


# --- backpressure --------------------------------------------------------------------------

# aiohttp 3.14 (see the report): the gateway holds at most, per direction,
#   writer: transport high-water 64 KiB + writer_limit 256 KiB + 1 message before send_bytes waits;
#   reader: queue 2 x 256 KiB + 1 message (then the transport is paused), plus <= 1 recv (256 KiB)
#           stashed in the parser;
# with websockify's 64 KiB messages that is ~384 KiB + ~832 KiB, whatever the upstream sends.
WRITE_BOUND = 64 * 1024 + 256 * 1024 + 64 * 1024 + 1024
QUEUE_BOUND = 2 * 256 * 1024 + 64 * 1024 + 16 * 1024
TOTAL = 50 * 1024 * 1024


async def test_a_browser_that_stops_reading_does_not_grow_gateway_buffers(peers: Peers) -> None:
    target = TcpTarget()
    gw = await peers.via_websockify(target)
    browser = await peers.browser(gw)
    await asyncio.wait_for(target.connected.wait(), 5)
    await wait_for(lambda: bool(gw.upstreams), what="the upstream to open")
    conn = target.conns[0]
    block = os.urandom(1 << 20)
    sent_digest = hashlib.sha256(block * (TOTAL // len(block))).hexdigest()

    async def produce() -> None:
        for _ in range(TOTAL // len(block)):
            conn.writer.write(block)
            await conn.writer.drain()

    browser_transport = gw.requests[0].transport
    upstream_ws = gw.upstreams[0]
    upstream_transport = upstream_ws._writer.transport
    peaks = {"write": 0, "queue": 0}

    def sample() -> None:
        assert browser_transport is not None
        peaks["write"] = max(peaks["write"], browser_transport.get_write_buffer_size())
        peaks["queue"] = max(peaks["queue"], upstream_ws._reader._size)

    async def sampler() -> None:
        while True:
            sample()
            await asyncio.sleep(0.001)

    producer = asyncio.create_task(produce())
    sampling = asyncio.create_task(sampler())
    try:
        # Backpressure has reached the upstream socket: the gateway stopped reading it.
        await wait_for(lambda: not upstream_transport.is_reading(), 20, "the gateway to pause the upstream")
        sample()
        relayed = gw.relays[0].stats.bytes_to_browser
        assert relayed < TOTAL // 4, relayed
        assert peaks["write"] <= WRITE_BOUND, peaks
        assert peaks["queue"] <= QUEUE_BOUND, peaks

        # The browser reads again: everything arrives, in order, and the bounds held throughout.
        digest = hashlib.sha256()
        got = 0
        async with asyncio.timeout(60):
            while got < TOTAL:
                msg = await browser.receive()
                assert msg.type is WSMsgType.BINARY
                digest.update(msg.data)
                got += len(msg.data)
        assert got == TOTAL and digest.hexdigest() == sent_digest
        await asyncio.wait_for(producer, 10)
        assert peaks["write"] <= WRITE_BOUND, peaks
        assert peaks["queue"] <= QUEUE_BOUND, peaks
    finally:
        producer.cancel()
        sampling.cancel()
        await asyncio.gather(producer, sampling, return_exceptions=True)
    await browser.close()
    await gw.result()
    await gw.assert_clean()


async def test_terminate_with_a_stuck_browser_still_ends_promptly(peers: Peers) -> None:
    target = TcpTarget()
    gw = await peers.via_websockify(target, close_timeout=0.5)
    await peers.browser(gw)  # never reads
    await asyncio.wait_for(target.connected.wait(), 5)
    await wait_for(lambda: bool(gw.upstreams), what="the upstream to open")
    conn = target.conns[0]
    upstream_transport = gw.upstreams[0]._writer.transport

    async def produce() -> None:
        block = bytes(1 << 20)
        for _ in range(32):
            conn.writer.write(block)
            await conn.writer.drain()

    producer = asyncio.create_task(produce())
    try:
        await wait_for(lambda: not upstream_transport.is_reading(), 20, "the gateway to pause the upstream")
        gw.relays[0].terminate(4001, "Terminated by an administrator")
        info = await gw.result(within=5)
        assert (info.by, info.code) == ("gateway", 4001)
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
    await gw.assert_clean()
