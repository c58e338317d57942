"""Peers for relay tests: a real websockify process, a TCP target behind it, a scripted aiohttp
WebSocket upstream, and a gateway harness that opens the upstream and runs `Relay`.

Ports come from the OS (bind 0); websockify gets its listening socket on stdin (`--inetd`) so
there is no window between choosing a port and listening on it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.consoles.keepalive import KeepAlive
from gateway.consoles.relay import Relay
from gateway.consoles.relay_core import CloseInfo, RelayCore
from gateway.rfb import ClientMessageFilter
from gateway.upstream import HostAllowlist, UpstreamTarget, open_upstream, upstream_session
from tests.support.polling import wait_for

WEBSOCKIFY = str(Path(sys.executable).with_name("websockify"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Websockify:
    """websockify 0.13 as a subprocess, listening on a socket we bound."""

    def __init__(self, target: str, log_path: Path, *extra: str) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [WEBSOCKIFY, "--inetd", *extra, *([target] if target else [])],
            stdin=self._sock.fileno(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its per-connection children share our new group id
        )
        self._sock.close()  # the child holds its own copy

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The group is the one created for this child (pgid == its pid): it and its forks only.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


@dataclass
class TcpConn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: bytearray = field(default_factory=bytearray)
    eof: asyncio.Event = field(default_factory=asyncio.Event)


class TcpTarget:
    """The 'VNC server' behind websockify: records what reaches it, sends what a test asks."""

    def __init__(self, greeting: bytes = b"", *, reset_on_connect: bool = False) -> None:
        self.greeting = greeting
        self.reset_on_connect = reset_on_connect
        self.conns: list[TcpConn] = []
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> TcpTarget:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = TcpConn(reader, writer)
        self.conns.append(conn)
        if self.reset_on_connect:
            self.reset(conn)
            self.connected.set()
            return
        if self.greeting:
            writer.write(self.greeting)
        self.connected.set()
        task = asyncio.current_task()
        assert task is not None
        self._readers.add(task)
        try:
            while data := await reader.read(1 << 16):
                conn.received += data
        except ConnectionError:
            pass
        finally:
            conn.eof.set()
            self._readers.discard(task)

    @staticmethod
    def reset(conn: TcpConn) -> None:
        """Drop the connection with a TCP RST: websockify's recv() then raises, and it drops its
        WebSocket without a close frame, which is how nova reacts to a bad token after the 101."""
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()

    async def stop(self) -> None:
        for conn in self.conns:
            conn.writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


WsScript = Callable[[web.WebSocketResponse, web.Request], Awaitable[None]]


class WsUpstream:
    """An aiohttp WebSocket server standing in for the console proxy when a test needs exact
    control of messages and close frames (websockify re-chunks a TCP stream)."""

    def __init__(self, script: WsScript) -> None:
        self.script = script
        self.received: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.done = asyncio.Event()
        self.request_headers: dict[str, str] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> WsUpstream:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.request_headers = dict(request.headers)
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=1 << 20)
        await ws.prepare(request)
        try:
            await self.script(ws, request)
        finally:
            self.done.set()
        return ws

    async def record_until_close(self, ws: web.WebSocketResponse) -> None:
        """Keep every binary message until the gateway closes; note its close code and reason."""
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.received.append(msg.data)
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                self.close_code, self.close_reason = msg.data, msg.extra
                return
            elif msg.type is not aiohttp.WSMsgType.TEXT:
                self.close_code = ws.close_code
                return

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class RelayOptions:
    view_only: bool = False
    idle_timeout: float | None = None
    idle_warning: float | None = None
    max_duration: float | None = None
    close_timeout: float = 2.0
    upstream_max_msg: int = 1 << 20
    terminate_before_run: tuple[int, str] | None = None
    frame_passthrough: bool = True  # False: aiohttp's public receive/send only
    keepalive: float = 0.0  # the relay's keep-alive interval (0: off), on a 50 ms grid


class GatewayHarness:
    """A minimal gateway: GET /ws opens the upstream and relays; each relay's outcome is kept."""

    def __init__(self, target: UpstreamTarget, options: RelayOptions) -> None:
        self.target = target
        self.options = options
        self.relays: list[Relay] = []
        self.requests: list[web.Request] = []
        self.upstreams: list[aiohttp.ClientWebSocketResponse] = []
        self.browsers: list[web.WebSocketResponse] = []
        self.results: list[asyncio.Future[CloseInfo]] = []
        self.handler_tasks: list[asyncio.Task[object]] = []
        self.relay_started = asyncio.Event()
        self.keepalive = KeepAlive(resolution=0.05)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> GatewayHarness:
        self._http = upstream_session()
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ws"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        result: asyncio.Future[CloseInfo] = asyncio.get_running_loop().create_future()
        self.results.append(result)
        # autoping off on both sides, as the gateway opens them: the relay answers pings and sees pongs.
        browser = web.WebSocketResponse(max_msg_size=1 << 20, compress=False, autoping=False)
        await browser.prepare(request)
        self.requests.append(request)
        self.browsers.append(browser)
        upstream = await open_upstream(
            self._http,
            self.target,
            allowlist=HostAllowlist(["127.0.0.1"]),
            ssl_context=None,
            connect_timeout=5.0,
            max_msg_size=self.options.upstream_max_msg,
            autoping=False,
        )
        self.upstreams.append(upstream)
        relay = Relay(
            browser,
            upstream,
            RelayCore(
                ClientMessageFilter(view_only=self.options.view_only),
                idle_timeout=self.options.idle_timeout,
                idle_warning=self.options.idle_warning,
                max_duration=self.options.max_duration,
            ),
            close_timeout=self.options.close_timeout,
            max_msg_size=self.options.upstream_max_msg if self.options.frame_passthrough else None,
            keepalive=self.keepalive,
            keepalive_interval=self.options.keepalive,
        )
        self.relays.append(relay)
        task = asyncio.current_task()
        assert task is not None
        self.handler_tasks.append(task)
        self.relay_started.set()
        if self.options.terminate_before_run is not None:
            relay.terminate(*self.options.terminate_before_run)
        try:
            result.set_result(await relay.run())
        except asyncio.CancelledError:
            result.cancel()
            raise
        except Exception as exc:
            result.set_exception(exc)
            raise
        return browser

    async def result(self, index: int = 0, within: float = 10.0) -> CloseInfo:
        await wait_for(lambda: len(self.results) > index, within, "the relay to start")
        return await asyncio.wait_for(asyncio.shield(self.results[index]), within)

    async def assert_clean(self) -> None:
        """Every relay finished its tasks and closed both of its sockets, down to the TCP
        connection (a transport that is only "closing" can wait forever on a peer that does
        not read)."""
        await wait_for(lambda: all(r.close_info is not None for r in self.relays), 5.0, "the relays to end")
        for relay in self.relays:
            assert all(t.done() for t in relay.tasks), relay.tasks
        sockets = (*self.browsers, *self.upstreams)
        for ws in sockets:
            assert ws.closed
        await wait_for(
            lambda: all(ws._writer.protocol.transport is None for ws in sockets),  # type: ignore[union-attr]
            2.0,
            "the relay's TCP connections to be gone",
        )
        leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("relay-") and not t.done()]
        assert not leftover, leftover

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
