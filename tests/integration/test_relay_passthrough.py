"""The relay's downstream pass-through (Relay(max_msg_size=...)): frames forwarded as they arrived.

Real sockets on loopback: an aiohttp upstream, the relay in an aiohttp handler, an aiohttp browser.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway.consoles import aiohttp_fastpath
from gateway.consoles.codes import REASON_LOST
from gateway.consoles.relay import Relay
from gateway.consoles.relay_core import CloseInfo, RelayCore
from gateway.rfb import ClientMessageFilter
from gateway.upstream import HostAllowlist, UpstreamTarget, open_upstream, upstream_session
from tests.support.polling import wait_for

HANDSHAKE = b"RFB 003.008\n\x01\x01"
# The server's side of that handshake (version, security types [None], SecurityResult OK): the
# relay's filter follows it, and frames pass through once it no longer matters.
GREETING = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00"
Script = Callable[[web.WebSocketResponse], Awaitable[None]]


@dataclass
class Harness:
    http: aiohttp.ClientSession
    upstream_http: aiohttp.ClientSession
    fast: bool  # the frame pass-through on, or forced off (console.frame_passthrough = false)
    runners: list[web.AppRunner] = field(default_factory=list)
    relays: list[Relay] = field(default_factory=list)
    results: list[asyncio.Future[CloseInfo]] = field(default_factory=list)
    requests: list[web.Request] = field(default_factory=list)

    async def serve(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def start(self, script: Script, *, max_msg: int = 1 << 20) -> aiohttp.ClientWebSocketResponse:
        async def upstream(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(protocols=("binary",), compress=False)
            await ws.prepare(request)
            await script(ws)
            return ws

        up_port = await self.serve(upstream)

        async def gateway(request: web.Request) -> web.StreamResponse:
            browser = web.WebSocketResponse(max_msg_size=1 << 20, compress=False)
            await browser.prepare(request)
            self.requests.append(request)
            up = await open_upstream(
                self.upstream_http,
                UpstreamTarget("ws", "127.0.0.1", up_port, "/", "T"),
                allowlist=HostAllowlist(["127.0.0.1"]),
                ssl_context=None,
                connect_timeout=5.0,
                max_msg_size=max_msg,
            )
            relay = Relay(
                browser,
                up,
                RelayCore(
                    ClientMessageFilter(view_only=False),
                    idle_timeout=None,
                    idle_warning=None,
                    max_duration=None,
                ),
                close_timeout=2.0,
                max_msg_size=max_msg if self.fast else None,
            )
            self.relays.append(relay)
            result = asyncio.get_running_loop().create_future()
            self.results.append(result)
            result.set_result(await relay.run())
            return browser

        gw_port = await self.serve(gateway)
        return await self.http.ws_connect(f"http://127.0.0.1:{gw_port}/", autoclose=True)

    async def result(self) -> CloseInfo:
        await wait_for(lambda: bool(self.results), 10.0, "the relay to start")
        return await asyncio.wait_for(self.results[0], 10)


@pytest.fixture
async def harness(frame_passthrough: bool) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as http, upstream_session() as upstream_http:
        h = Harness(http, upstream_http, frame_passthrough)
        try:
            yield h
        finally:
            for runner in reversed(h.runners):
                await runner.cleanup()


async def test_messages_arrive_one_to_one_and_text_is_dropped(harness: Harness) -> None:
    big = os.urandom(300_000)
    down = [
        b"",
        b"RFB 003.008\n",
        big,
        os.urandom(65536),
        b"\x00",
        *(os.urandom(i) for i in range(1, 200, 7)),
    ]

    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(GREETING)
        await ws.receive()  # the client's handshake: the relay runs by now
        await ws.send_str("not for the browser")
        for m in down:
            await ws.send_bytes(m)
        # A fragmented message: aiohttp cannot send one, so write the frames ourselves.
        ws._writer.transport.write(b"\x02\x03abc" + b"\x8a\x00" + b"\x80\x03def")  # type: ignore[union-attr]
        await ws.send_bytes(b"end")
        await ws.receive()

    browser = await harness.start(script)
    assert (await browser.receive(timeout=5)).data == GREETING
    await browser.send_bytes(HANDSHAKE)
    got = []
    async with asyncio.timeout(10):
        while len(got) < len(down) + 2:
            msg = await browser.receive()
            assert msg.type is WSMsgType.BINARY, msg
            got.append(msg.data)
    assert got == [*down, b"abcdef", b"end"]
    relay = harness.relays[0]
    if harness.fast:
        assert relay._passthrough is not None and relay._passthrough.forwarding  # not message by message
        assert not relay._passthrough.stepped_aside
    else:
        assert relay._passthrough is None
    assert relay.stats.bytes_to_browser == sum(map(len, got)) + len(GREETING)
    assert relay.stats.msgs_to_browser == len(got) + 1
    await browser.close()
    info = await harness.result()
    assert info.by == "browser"


async def test_upstream_close_code_reaches_the_browser(harness: Harness) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(GREETING)
        await ws.receive()
        await ws.send_bytes(b"x" * 1000)
        await ws.close(code=4321, message=b"console gone")

    browser = await harness.start(script)
    await browser.receive(timeout=5)
    await browser.send_bytes(HANDSHAKE)
    assert (await browser.receive(timeout=5)).data == b"x" * 1000
    msg = await browser.receive(timeout=5)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4321, "console gone")
    info = await harness.result()
    assert (info.by, info.upstream_code) == ("upstream", 4321)


async def test_an_over_long_upstream_message_is_a_lost_link(harness: Harness) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(GREETING)
        await ws.receive()
        await ws.send_bytes(bytes(4096))
        await ws.receive()

    browser = await harness.start(script, max_msg=1024)
    await browser.receive(timeout=5)
    await browser.send_bytes(HANDSHAKE)
    msg = await browser.receive(timeout=5)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4502, REASON_LOST)
    passthrough = harness.relays[0]._passthrough
    assert (passthrough is not None and passthrough.forwarding) if harness.fast else passthrough is None


async def test_a_browser_that_stops_reading_pauses_the_upstream_and_loses_nothing(harness: Harness) -> None:
    total = 32 << 20
    block = os.urandom(65536)
    done = asyncio.Event()

    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(GREETING)
        await ws.receive()
        for _ in range(total // len(block)):
            await ws.send_bytes(block)
        done.set()
        await ws.receive()

    browser = await harness.start(script)
    await browser.receive(timeout=5)
    await browser.send_bytes(HANDSHAKE)
    await wait_for(
        lambda: (
            bool(harness.relays)
            and (getattr(harness.relays[0]._passthrough, "forwarding", False) or not harness.fast)
        ),
        10.0,
        "the relay to forward",
    )
    relay = harness.relays[0]
    up_transport = relay._upstream._writer.transport  # type: ignore[union-attr]
    browser_transport = harness.requests[0].transport
    assert browser_transport is not None
    await wait_for(lambda: not up_transport.is_reading(), 10.0, "the upstream to be paused")
    assert not done.is_set()
    assert relay.stats.bytes_to_browser < total // 2
    # Bounded by the transport's high-water mark plus one read and one frame.
    assert browser_transport.get_write_buffer_size() <= 64 * 1024 + 256 * 1024 + 65536 + 1024

    digest, want = hashlib.sha256(), hashlib.sha256(block * (total // len(block)))
    got = 0
    async with asyncio.timeout(60):
        while got < total:
            msg = await browser.receive()
            assert msg.type is WSMsgType.BINARY
            digest.update(msg.data)
            got += len(msg.data)
    assert digest.digest() == want.digest()
    await browser.close()
    assert (await harness.result()).by == "browser"


async def test_an_unchecked_aiohttp_release_relays_through_the_public_api(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version guard: on a release the hooks were not checked against, no private part is touched."""
    monkeypatch.setattr(aiohttp_fastpath, "CHECKED", frozenset())

    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(GREETING)
        await ws.receive()
        await ws.send_bytes(b"after the handshake")
        await ws.receive()

    browser = await harness.start(script)
    assert (await browser.receive(timeout=5)).data == GREETING
    await browser.send_bytes(HANDSHAKE)
    assert (await browser.receive(timeout=5)).data == b"after the handshake"
    assert harness.relays[0]._passthrough is None
    await browser.close()
    assert (await harness.result()).by == "browser"
