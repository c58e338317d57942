"""The WebSocket client the benchmark uses for every system alike (aiohttp's client, as a browser would
be served by any of them). Text frames (the gateway's notices) are skipped; binary frames are RFB."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType

from bench.protocol import (
    CLIENT_STEPS,
    PONG_SIZE,
    SERVER_STEPS,
    Profile,
    ping,
    pong_id,
    stream_command,
)
from bench.systems import Target

_BINARY = WSMsgType.BINARY
_TEXT = WSMsgType.TEXT


class SessionLost(Exception):
    """The server side closed a benchmark session early."""


def new_http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )


@dataclass
class Session:
    ws: aiohttp.ClientWebSocketResponse
    opened: float  # seconds from the WebSocket request to the first RFB byte

    async def _binary(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type is _BINARY:
                return msg.data
            if msg.type is not _TEXT:
                raise SessionLost(f"{msg.type.name} {self.ws.close_code} {msg.extra}")

    async def read_exact(self, n: int, first: bytes = b"") -> bytes:
        data = bytearray(first)
        while len(data) < n:
            data += await self._binary()
        if len(data) != n:
            raise SessionLost(f"expected {n} bytes, got {len(data)}")
        return bytes(data)

    async def stream(self, profile: Profile) -> float:
        """Ask for the stream and time it until its last byte (bytes, not messages: websockify
        re-frames what it reads from TCP)."""
        total = profile.total
        receive = self.ws.receive
        received = 0
        started = time.perf_counter()
        await self.ws.send_bytes(stream_command(profile.name, total))
        while received < total:
            msg = await receive()
            if msg.type is _BINARY:
                received += len(msg.data)
            elif msg.type is not _TEXT:
                raise SessionLost(f"{msg.type.name} after {received} of {total} bytes")
        elapsed = time.perf_counter() - started
        if received != total:
            raise SessionLost(f"expected {total} bytes, got {received}")
        return elapsed

    async def ping(self, ident: int) -> float:
        """One round trip of a small input message; the seconds it took."""
        started = time.perf_counter()
        await self.ws.send_bytes(ping(ident))
        record = await self.read_exact(PONG_SIZE)
        elapsed = time.perf_counter() - started
        if pong_id(record) != ident & 0xFFFFFFFF:
            raise SessionLost("pong out of order")
        return elapsed

    async def close(self) -> None:
        await self.ws.close()


async def open_session(http: aiohttp.ClientSession, target: Target) -> Session:
    """Connect, time the first RFB byte, complete the RFB handshake."""
    started = time.perf_counter()
    ws = await http.ws_connect(
        target.url,
        headers=target.headers,
        ssl=target.ssl or True,
        protocols=("binary",),
        max_msg_size=0,
        compress=0,
        autoping=True,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
    )
    session = Session(ws, 0.0)
    try:
        first = await session._binary()
        session.opened = time.perf_counter() - started
        await session.read_exact(len(SERVER_STEPS[0]), first)
        for mine, answer in zip(CLIENT_STEPS, SERVER_STEPS[1:], strict=True):
            await ws.send_bytes(mine)
            await session.read_exact(len(answer))
    except BaseException:
        await ws.close()
        raise
    return session
