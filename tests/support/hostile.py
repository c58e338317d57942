"""Hostile peers on loopback: a cloud API that misbehaves on request, console proxies that fail in every
way a TLS WebSocket server can, and raw clients (slowloris, hand-made WebSocket frames, RST instead of
close, never reading). All bind 127.0.0.1 port 0 and are stopped by their owner."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.sim.certs import CertPaths, make_self_signed
from tests.support.token_scan import SCANNER

LOOPBACK = "127.0.0.1"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOSTILE_PROJECT = "hostileproject01"
HOSTILE_SERVER = {
    "id": "0f0f0f0f-hostile-server-0000000001",
    "name": "hostile-01",
    "status": "ACTIVE",
    "tags": [],
    "metadata": {},
    "locked": False,
    "OS-EXT-AZ:availability_zone": "az-h",
}

# remote_console behaviours of HostileCloud (anything starting "upstream:" returns a console URL
# pointing at that HostileUpstreams kind).
CLOUD_FAULTS = (
    "timeout",
    "500",
    "503",
    "429-retry-after",
    "429-no-retry-after",
    "malformed",
    "wrong-types",
    "oversized",
    "oversized-chunked",
    "slow-body",
)


def _tls_server_context(certs: CertPaths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


class _Site:
    """An aiohttp app on a loopback socket we bound (port known, no race)."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.ssl_context = ssl_context
        # handler_cancellation: a handler whose client went away ends (no stray tasks in leak counts).
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        self.port = 0

    async def start(self) -> int:
        sock = socket.socket()
        sock.bind((LOOPBACK, 0))
        self.port = sock.getsockname()[1]
        await self.runner.setup()
        await web.SockSite(self.runner, sock, ssl_context=self.ssl_context).start()
        return self.port

    async def stop(self) -> None:
        await self.runner.cleanup()


@dataclass
class HostileCloud:
    """An ECS look-alike (no signature check) whose remote_console does whatever `mode` says."""

    upstreams: HostileUpstreams
    mode: str = "upstream:ok"
    requests: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _site: _Site | None = None

    def cloud_config(self, *, name: str = "hostile", read_timeout: float = 1.0) -> dict[str, Any]:
        assert self._site is not None
        return {
            "name": name,
            "region": "hostile-region",
            "project_id": HOSTILE_PROJECT,
            "endpoint": f"http://{LOOPBACK}:{self._site.port}",
            "access_key": "HOSTILEAK",
            "secret_key": "hostile-secret-key",
            "retries": 1,
            "connect_timeout": 0.5,
            "read_timeout": read_timeout,
        }

    async def start(self) -> None:
        app = web.Application()
        base = "/v1/{project}/cloudservers"
        app.router.add_get(base + "/detail", self._list)
        app.router.add_get(base + "/{server_id}", self._show)
        app.router.add_post(base + "/{server_id}/remote_console", self._console)
        self._site = _Site(app)
        await self._site.start()

    async def stop(self) -> None:
        self.release.set()
        if self._site is not None:
            await self._site.stop()

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"count": 1, "servers": [HOSTILE_SERVER]})

    async def _show(self, request: web.Request) -> web.Response:
        if request.match_info["server_id"] != HOSTILE_SERVER["id"]:
            return web.json_response({"error": {"code": "Ecs.0114", "message": "no such"}}, status=404)
        return web.json_response({"server": HOSTILE_SERVER})

    async def _console(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        mode = self.mode
        if mode.startswith("upstream:"):
            url = self.upstreams.console_url(mode.split(":", 1)[1])
            return web.json_response({"remote_console": {"protocol": "vnc", "type": "novnc", "url": url}})
        if mode == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
            return web.json_response({}, status=503)
        if mode in ("500", "503"):
            body = {"error": {"code": "Ecs.9999", "message": "internal\nerror <b>x</b>"}}
            return web.json_response(body, status=int(mode))
        if mode == "429-retry-after":
            body = {"error_code": "APIGW.0308", "error_msg": "throttled"}
            return web.json_response(body, status=429, headers={"Retry-After": "1"})
        if mode == "429-no-retry-after":
            return web.json_response({"error_code": "APIGW.0308", "error_msg": "throttled"}, status=429)
        if mode == "malformed":
            return web.Response(
                body=b'{"remote_console": {"url": "https://x', content_type="application/json"
            )
        if mode == "wrong-types":
            return web.json_response({"remote_console": {"url": ["not", "a", "string"], "type": 7}})
        if mode == "oversized":
            return web.Response(body=b" " * (2 * 1024 * 1024) + b"{}", content_type="application/json")
        if mode in ("oversized-chunked", "slow-body"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            if mode == "slow-body":
                resp.content_length = 4096
            else:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                if mode == "oversized-chunked":
                    for _ in range(40):
                        await resp.write(b" " * 65536)
                else:
                    for _ in range(4096):
                        await resp.write(b" ")
                        await asyncio.sleep(0.1)  # a trickle: the gateway's total timeout must cut it
            except (ConnectionError, asyncio.CancelledError):
                pass
            return resp
        raise AssertionError(f"unknown mode {mode}")


def _accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()  # noqa: S324


async def _read_head(reader: asyncio.StreamReader) -> dict[str, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


UPSTREAM_KINDS = (
    "plain-tcp",  # no TLS at all: answers the ClientHello with plain HTTP
    "wrong-cert",  # TLS with a certificate from a CA the gateway does not trust
    "close-in-handshake",  # TLS fine, reads the upgrade request, closes without an answer
    "partial-101",  # half a 101 response, then closes
    "stall-tls",  # accepts TCP, never speaks TLS
    "stall-handshake",  # TLS fine, never answers the upgrade
    "close-mid-stream",  # a proper WebSocket, a few RFB bytes, then a TCP reset
    "stall-stream",  # a proper WebSocket, then silence: reads nothing, answers no ping
    "firehose",  # a proper WebSocket that writes as fast as it is allowed to
    "redirect",  # answers the upgrade with 302 to the redirect target (another host)
)
# Where "redirect" sends the gateway: another loopback address, off the allow-list; it counts arrivals.
REDIRECT_TARGET_HOST = "127.0.0.2"


@dataclass
class HostileUpstreams:
    """One listener per kind; `console_url(kind)` is what the hostile cloud hands the gateway."""

    certs: CertPaths  # trusted by the gateway (the demo cloud's)
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    firehose_sent: int = 0
    connections: dict[str, int] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _sites: list[_Site] = field(default_factory=list)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def console_url(self, kind: str) -> str:
        token = secrets.token_urlsafe(32)
        SCANNER.add_token(token)
        return f"https://{LOOPBACK}:{self.ports[kind]}/vnc_auto.html?token={token}&lang=EN"

    async def start(self) -> None:
        trusted = _tls_server_context(self.certs)
        foreign = _tls_server_context(make_self_signed(self.workdir / "foreign-ca"))
        raw = {
            "plain-tcp": (self._plain, None),
            "wrong-cert": (self._handshake_then(self._answer_101), foreign),
            "close-in-handshake": (self._handshake_then(None), trusted),
            "partial-101": (self._handshake_then(self._partial_101), trusted),
            "stall-tls": (self._stall, None),
            "stall-handshake": (self._stall, trusted),
            "stall-stream": (self._handshake_then(self._answer_101_then_stall), trusted),
        }
        for kind, (handler, ctx) in raw.items():
            server = await asyncio.start_server(self._counted(kind, handler), LOOPBACK, 0, ssl=ctx)
            self._servers.append(server)
            self.ports[kind] = server.sockets[0].getsockname()[1]
        target = await asyncio.start_server(
            self._counted("redirect-target", self._handshake_then(self._answer_101)), REDIRECT_TARGET_HOST, 0
        )
        self._servers.append(target)
        self.ports["redirect-target"] = target.sockets[0].getsockname()[1]
        for kind, handler in (
            ("firehose", self._ws_firehose),
            ("close-mid-stream", self._ws_close_mid_stream),
            ("redirect", self._redirect),
        ):
            app = web.Application()
            app.router.add_get("/websockify", handler)
            site = _Site(app, trusted)
            self.ports[kind] = await site.start()
            self._sites.append(site)

    async def stop(self) -> None:
        self._stop.set()
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._servers:
            server.close()
        for site in self._sites:
            await site.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    def _counted(self, kind: str, handler: Any) -> Any:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections[kind] = self.connections.get(kind, 0) + 1
            self._writers.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                self._writers.discard(writer)
                writer.transport.abort()

        return run

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def _stall(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._stop.wait()

    def _handshake_then(self, answer: Any) -> Any:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            headers = await _read_head(reader)
            if answer is not None:
                await answer(headers, reader, writer)

        return handler

    @staticmethod
    def _response_101(headers: dict[str, str]) -> bytes:
        return (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {_accept_key(headers.get('sec-websocket-key', ''))}\r\n"
            "Sec-WebSocket-Protocol: binary\r\n\r\n"
        ).encode()

    async def _answer_101(self, headers: dict[str, str], reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(self._response_101(headers))
        await writer.drain()
        await self._stop.wait()

    async def _partial_101(self, headers: dict[str, str], reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(self._response_101(headers)[:40])
        await writer.drain()

    async def _answer_101_then_stall(
        self, headers: dict[str, str], reader: Any, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(self._response_101(headers) + frame(0x2, b"RFB 003.008\n", mask=False))
        await writer.drain()
        await self._stop.wait()  # never read again: pings go unanswered

    async def _ws_firehose(self, request: web.Request) -> web.WebSocketResponse:
        """firehose: as fast as the gateway lets us, counting what it took."""
        ws = web.WebSocketResponse(protocols=("binary",), autoping=True)
        await ws.prepare(request)
        chunk = os.urandom(65536)
        closing = asyncio.ensure_future(ws.receive())  # answers the gateway's close frame
        try:
            await ws.send_bytes(b"RFB 003.008\n")
            while not self._stop.is_set() and not closing.done():
                await ws.send_bytes(chunk)
                self.firehose_sent += len(chunk)
                await asyncio.sleep(0)  # send_bytes only yields once the transport is paused
        except (ConnectionError, RuntimeError):
            pass
        finally:
            closing.cancel()
        return ws

    async def _redirect(self, request: web.Request) -> web.Response:
        """An allow-listed proxy (or an open redirect on it) sending the console elsewhere. (The token is
        left out of the Location only so that the suite's token scan stays about the gateway.)"""
        raise web.HTTPFound(f"https://{REDIRECT_TARGET_HOST}:{self.ports['redirect-target']}/websockify")

    async def _ws_close_mid_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",))
        await ws.prepare(request)
        await ws.send_bytes(b"RFB 003.008\n")
        assert request.transport is not None
        request.transport.abort()  # no close frame: the connection just dies
        return ws


# -- raw clients ---------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One WebSocket frame (RFC 6455 §5.2); clients must mask."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else _xor(payload, key)
    return head + key + masked


def _xor(payload: bytes, key: bytes) -> bytes:
    reps = (len(payload) + 3) // 4
    stream = int.from_bytes((key * reps)[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ stream).to_bytes(len(payload), "big")


@dataclass
class RawWebSocket:
    """A WebSocket client made by hand, so it can do what a library will not: never read, send
    oversized or fragmented frames at any pace, and reset the TCP connection instead of closing."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    sock: socket.socket

    @classmethod
    async def connect(
        cls, port: int, path: str, *, cookie: str = "", origin: str = "", recv_buffer: int | None = None
    ) -> RawWebSocket:
        sock = socket.socket()
        if recv_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
        limit = recv_buffer or 2**16
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n"
            + (f"Origin: {origin}\r\n" if origin else "")
            + (f"Cookie: {cookie}\r\n" if cookie else "")
            + "\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        return cls(reader, writer, status, sock)

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        self.writer.write(frame(opcode, payload, fin=fin))
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def read_until_close(self, within: float = 10.0) -> tuple[int | None, str]:
        """Frames until a close frame (its code and reason) or EOF (None)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    opcode, payload = await self.read_frame()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None, ""
                if opcode == 0x8:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                    return code, payload[2:].decode("utf-8", "replace")

    def reset(self) -> None:
        """Abort with RST (SO_LINGER 0): the way a crashed browser or a dropped laptop disappears."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def slowloris(port: int, count: int, *, interval: float, stop: asyncio.Event) -> list[bool]:
    """`count` connections that send a request head one header line per `interval`, never finishing.
    Returns, per connection, whether the server hung up on it before `stop` was set."""

    async def one() -> bool:
        try:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            return True
        try:
            writer.write(f"GET /login HTTP/1.1\r\nHost: {LOOPBACK}\r\n".encode())
            await writer.drain()
            i = 0
            while not stop.is_set():
                try:
                    await asyncio.wait_for(reader.read(1), interval)
                except TimeoutError:
                    writer.write(f"X-Slow-{i}: {'a' * 10}\r\n".encode())
                    await writer.drain()
                    i += 1
                    continue
                return True  # EOF or anything at all: the server ended it
            return False
        except (ConnectionError, OSError):
            return True
        finally:
            writer.transport.abort()

    return list(await asyncio.gather(*(one() for _ in range(count))))
