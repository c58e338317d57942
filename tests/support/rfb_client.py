"""A minimal RFB viewer for tests: enough of RFC 6143 to prove a console works end to end.

`RFBClientProtocol` is sans-IO (feed bytes, get events, collect bytes to send) and knows nothing of
transports; `RFBClient` drives it over any `Transport` (asyncio TCP streams, an aiohttp WebSocket).
Written independently of gateway.sim so it can verify the demo server and the gateway alike.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

__all__ = [
    "AiohttpWSTransport",
    "ClientPixelFormat",
    "FramebufferUpdate",
    "RFBClient",
    "RFBClientError",
    "RFBClientProtocol",
    "RectInfo",
    "ServerInit",
    "StreamTransport",
    "Transport",
]

SECURITY_NONE = 1
ENCODING_RAW = 0
XK_RETURN = 0xFF0D


class RFBClientError(Exception):
    """The server refused us or broke the protocol."""


@dataclass(frozen=True)
class ClientPixelFormat:
    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    _S = struct.Struct(">BBBBHHHBBB3x")

    @classmethod
    def parse(cls, data: bytes) -> ClientPixelFormat:
        b, d, be, tc, rm, gm, bm, rs, gs, bs = cls._S.unpack(data)
        return cls(b, d, bool(be), bool(tc), rm, gm, bm, rs, gs, bs)

    def pack(self) -> bytes:
        return self._S.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    def decode(self, raw: bytes) -> tuple[int, int, int]:
        """One pixel to 8-bit RGB."""
        v = int.from_bytes(raw, "big" if self.big_endian else "little")
        r = (v >> self.red_shift) & self.red_max
        g = (v >> self.green_shift) & self.green_max
        b = (v >> self.blue_shift) & self.blue_max
        return (r * 255 // self.red_max, g * 255 // self.green_max, b * 255 // self.blue_max)


@dataclass(frozen=True)
class ServerInit:
    width: int
    height: int
    pixel_format: ClientPixelFormat
    name: str
    version: tuple[int, int]


@dataclass(frozen=True)
class RectInfo:
    x: int
    y: int
    width: int
    height: int
    encoding: int


@dataclass(frozen=True)
class FramebufferUpdate:
    rects: tuple[RectInfo, ...]


@dataclass
class _Pending:
    rects_left: int
    rects: list[RectInfo] = field(default_factory=list)
    current: RectInfo | None = None


class RFBClientProtocol:
    """Client side of RFB, sans-IO. Security None only; Raw rectangles only (what we ask for)."""

    def __init__(self, *, version: tuple[int, int] = (3, 8), shared: bool = True) -> None:
        if version not in ((3, 3), (3, 7), (3, 8)):
            raise ValueError("version must be 3.3, 3.7 or 3.8")
        self.version = version
        self.shared = shared
        self.state = "version"
        self.server_init: ServerInit | None = None
        self.pixel_format: ClientPixelFormat | None = None
        self.framebuffer = bytearray()
        self.cut_texts: list[bytes] = []  # ServerCutText received (what a copy in the console sends)
        self._buf = bytearray()
        self._out = bytearray()
        self._update: _Pending | None = None

    # -- requests (queue bytes)
    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def set_encodings(self, encodings: list[int]) -> None:
        self._out += struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)

    def set_pixel_format(self, pf: ClientPixelFormat) -> None:
        """Switch format; the local framebuffer is re-allocated, so request a full update next."""
        self._out += struct.pack(">B3x", 0) + pf.pack()
        self.pixel_format = pf
        if self.server_init is not None:
            self.framebuffer = bytearray(
                self.server_init.width * self.server_init.height * pf.bytes_per_pixel
            )

    def request_update(self, incremental: bool, rect: tuple[int, int, int, int] | None = None) -> None:
        if rect is None:
            assert self.server_init is not None
            rect = (0, 0, self.server_init.width, self.server_init.height)
        self._out += struct.pack(">BBHHHH", 3, int(incremental), *rect)

    def key_event(self, keysym: int, down: bool) -> None:
        self._out += struct.pack(">BBxxI", 4, int(down), keysym)

    def pointer_event(self, buttons: int, x: int, y: int) -> None:
        self._out += struct.pack(">BBHH", 5, buttons, x, y)

    def cut_text(self, text: bytes) -> None:
        self._out += struct.pack(">B3xi", 6, len(text)) + text

    # -- framebuffer access
    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        assert self.server_init is not None and self.pixel_format is not None
        bpp = self.pixel_format.bytes_per_pixel
        off = (y * self.server_init.width + x) * bpp
        return self.pixel_format.decode(bytes(self.framebuffer[off : off + bpp]))

    def region_bytes(self, x: int, y: int, w: int, h: int, source: bytes | None = None) -> bytes:
        """The raw bytes of a region of the framebuffer (or of an earlier copy of it, `source`)."""
        assert self.server_init is not None and self.pixel_format is not None
        fb = self.framebuffer if source is None else source
        bpp = self.pixel_format.bytes_per_pixel
        stride = self.server_init.width * bpp
        return b"".join(
            bytes(fb[row * stride + x * bpp : row * stride + (x + w) * bpp]) for row in range(y, y + h)
        )

    # -- input
    def receive_data(self, data: bytes) -> list[ServerInit | FramebufferUpdate]:
        self._buf += data
        events: list[ServerInit | FramebufferUpdate] = []
        while True:
            event = self._step()
            if event is None:
                break
            if event is not _NOTHING:
                events.append(event)  # type: ignore[arg-type]
        return events

    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _step(self) -> object | None:
        st = self.state
        if st == "version":
            data = self._take(12)
            if data is None:
                return None
            if not data.startswith(b"RFB 003."):
                raise RFBClientError(f"not an RFB server: {data!r}")
            self._out += b"RFB 003.%03d\n" % self.version[1]
            self.state = "security33" if self.version == (3, 3) else "security_types"
            return _NOTHING
        if st == "security33":
            if len(self._buf) < 4:
                return None
            (stype,) = struct.unpack_from(">I", self._buf)
            if stype == 0:
                reason = self._reason_after(4)
                if reason is None:
                    return None
                raise RFBClientError(f"server refused: {reason!r}")
            self._take(4)
            if stype != SECURITY_NONE:
                raise RFBClientError(f"server wants security type {stype}")
            return self._send_client_init()
        if st == "security_types":
            if not self._buf:
                return None
            n = self._buf[0]
            if n == 0:
                reason = self._reason_after(1)
                if reason is None:
                    return None
                raise RFBClientError(f"server refused: {reason!r}")
            data = self._take(1 + n)
            if data is None:
                return None
            if SECURITY_NONE not in data[1:]:
                raise RFBClientError(f"security None not offered: {list(data[1:])}")
            self._out += bytes([SECURITY_NONE])
            if self.version == (3, 8):
                self.state = "security_result"
                return _NOTHING
            return self._send_client_init()
        if st == "security_result":
            if len(self._buf) < 4:
                return None
            (result,) = struct.unpack_from(">I", self._buf)
            if result != 0:
                reason = self._reason_after(4)
                if reason is None:
                    return None
                raise RFBClientError(f"security failed: {reason!r}")
            self._take(4)
            return self._send_client_init()
        if st == "server_init":
            if len(self._buf) < 24:
                return None
            (name_len,) = struct.unpack_from(">I", self._buf, 20)
            data = self._take(24 + name_len)
            if data is None:
                return None
            w, h = struct.unpack_from(">HH", data)
            pf = ClientPixelFormat.parse(data[4:20])
            self.server_init = ServerInit(w, h, pf, data[24:].decode("utf-8", "replace"), self.version)
            self.pixel_format = pf
            self.framebuffer = bytearray(w * h * pf.bytes_per_pixel)
            self.state = "normal"
            return self.server_init
        return self._step_normal()

    def _reason_after(self, skip: int) -> bytes | None:
        if len(self._buf) < skip + 4:
            return None
        (n,) = struct.unpack_from(">I", self._buf, skip)
        if len(self._buf) < skip + 4 + n:
            return None
        return bytes(self._buf[skip + 4 : skip + 4 + n])

    def _send_client_init(self) -> object:
        self._out += bytes([int(self.shared)])
        self.state = "server_init"
        return _NOTHING

    def _step_normal(self) -> object | None:
        upd = self._update
        if upd is not None:
            return self._step_rect(upd)
        if not self._buf:
            return None
        kind = self._buf[0]
        if kind == 0:  # FramebufferUpdate
            data = self._take(4)
            if data is None:
                return None
            (n,) = struct.unpack_from(">H", data, 2)
            self._update = _Pending(rects_left=n)
            if n == 0:
                self._update = None
                return FramebufferUpdate(())
            return _NOTHING
        if kind == 2:  # Bell
            self._take(1)
            return _NOTHING
        if kind == 3:  # ServerCutText
            if len(self._buf) < 8:
                return None
            (n,) = struct.unpack_from(">I", self._buf, 4)
            message = self._take(8 + n)
            if message is None:
                return None
            self.cut_texts.append(message[8:])
            return _NOTHING
        if kind == 248:  # ServerFence
            if len(self._buf) < 9:
                return None
            return None if self._take(9 + self._buf[8]) is None else _NOTHING
        raise RFBClientError(f"unexpected server message type {kind}")

    def _step_rect(self, upd: _Pending) -> object | None:
        assert self.server_init is not None and self.pixel_format is not None
        if upd.current is None:
            data = self._take(12)
            if data is None:
                return None
            x, y, w, h, enc = struct.unpack(">HHHHi", data)
            if enc != ENCODING_RAW:
                raise RFBClientError(f"unexpected encoding {enc}")
            if x + w > self.server_init.width or y + h > self.server_init.height:
                raise RFBClientError("rectangle outside the framebuffer")
            upd.current = RectInfo(x, y, w, h, enc)
        rect = upd.current
        bpp = self.pixel_format.bytes_per_pixel
        data = self._take(rect.width * rect.height * bpp)
        if data is None:
            return None
        stride = self.server_init.width * bpp
        row_len = rect.width * bpp
        for row in range(rect.height):
            off = (rect.y + row) * stride + rect.x * bpp
            self.framebuffer[off : off + row_len] = data[row * row_len : (row + 1) * row_len]
        upd.rects.append(rect)
        upd.current = None
        upd.rects_left -= 1
        if upd.rects_left:
            return _NOTHING
        self._update = None
        return FramebufferUpdate(tuple(upd.rects))


_NOTHING = object()


# ------------------------------------------------------------------------------------- transports


class Transport(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes | None:
        """Next chunk (possibly empty), or None at end of stream."""
        ...

    async def close(self) -> None: ...


class StreamTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> StreamTransport:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes | None:
        data = await self.reader.read(65536)
        return data or None

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class AiohttpWSTransport:
    """RFB over a WebSocket: one binary message may hold any slice of the stream (websockify style)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.close_code: int | None = None

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def recv(self) -> bytes | None:
        msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msg.data
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            self.close_code = self.ws.close_code
            return None
        raise RFBClientError(f"unexpected WebSocket message type {msg.type!r}")

    async def close(self) -> None:
        await self.ws.close()


class RFBClient:
    """Async driver: `await handshake()`, then request updates and send keys."""

    def __init__(
        self,
        transport: Transport,
        *,
        version: tuple[int, int] = (3, 8),
        shared: bool = True,
        timeout: float = 5.0,
    ) -> None:
        """`shared=False` asks the server for exclusive access in ClientInit, as a hostile client may."""
        self.transport = transport
        self.proto = RFBClientProtocol(version=version, shared=shared)
        self.timeout = timeout
        self._events: list[ServerInit | FramebufferUpdate] = []

    async def _flush(self) -> None:
        if data := self.proto.data_to_send():
            await self.transport.send(data)

    async def _next_event(self) -> ServerInit | FramebufferUpdate:
        async with asyncio.timeout(self.timeout):
            while not self._events:
                data = await self.transport.recv()
                if data is None:
                    raise RFBClientError("connection closed")
                self._events.extend(self.proto.receive_data(data))
                await self._flush()
        return self._events.pop(0)

    async def handshake(self, encodings: tuple[int, ...] = (ENCODING_RAW,)) -> ServerInit:
        event = await self._next_event()
        if not isinstance(event, ServerInit):
            raise RFBClientError("expected ServerInit")
        self.proto.set_encodings(list(encodings))
        await self._flush()
        return event

    @property
    def server_init(self) -> ServerInit:
        assert self.proto.server_init is not None
        return self.proto.server_init

    async def set_pixel_format(self, pf: ClientPixelFormat) -> None:
        self.proto.set_pixel_format(pf)
        await self._flush()

    async def request_update(self, incremental: bool, rect: tuple[int, int, int, int] | None = None) -> None:
        self.proto.request_update(incremental, rect)
        await self._flush()

    async def next_update(self) -> FramebufferUpdate:
        event = await self._next_event()
        if not isinstance(event, FramebufferUpdate):
            raise RFBClientError("expected FramebufferUpdate")
        return event

    async def full_update(self) -> FramebufferUpdate:
        await self.request_update(False)
        return await self.next_update()

    async def key(self, keysym: int, *, down: bool | None = None) -> None:
        """Press and release (default), or send only the given direction."""
        if down is None:
            self.proto.key_event(keysym, True)
            self.proto.key_event(keysym, False)
        else:
            self.proto.key_event(keysym, down)
        await self._flush()

    async def type_text(self, text: str) -> None:
        for ch in text:
            await self.key(XK_RETURN if ch == "\n" else ord(ch))

    async def send_raw(self, data: bytes) -> None:
        await self.transport.send(data)

    async def wait_closed(self) -> None:
        """Read until the server closes (raise TimeoutError if it does not)."""
        async with asyncio.timeout(self.timeout):
            while await self.transport.recv() is not None:
                pass

    async def close(self) -> None:
        await self.transport.close()
