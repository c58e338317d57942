"""A small RFB 3.8 server (RFC 6143) showing `DemoScreen`: the demo's stand-in for a hypervisor's VNC.

Two layers: `RFBServerProtocol` is sans-IO (bytes in, events out, bytes to send) so framing and
handshake are tested without sockets; `RFBServer` is the asyncio edge, one reader task and one sender
task per client so a client that stops reading stalls only its own sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from dataclasses import dataclass

from gateway.sim.screen import DemoScreen, PixelFormat, Rect

__all__ = [
    "ClientReady",
    "ContinuousUpdatesRequested",
    "CutTextReceived",
    "EncodingsSet",
    "FenceReceived",
    "KeyPressed",
    "PixelFormatSet",
    "PointerMoved",
    "ProtocolError",
    "RFBServer",
    "RFBServerProtocol",
    "UpdateRequested",
]

log = logging.getLogger(__name__)

ENCODING_RAW = 0
SECURITY_NONE = 1
MAX_ENCODINGS = 1024
MAX_CUT_TEXT = 1 << 20
MAX_FENCE_PAYLOAD = 64
FENCE_REQUEST = 1 << 31

_VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n")


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must close. The text is safe to log."""


# ------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ClientReady:
    """Handshake done (ClientInit received); normal messages follow."""

    version: tuple[int, int]
    shared: bool


@dataclass(frozen=True, slots=True)
class PixelFormatSet:
    pixel_format: PixelFormat


@dataclass(frozen=True, slots=True)
class EncodingsSet:
    encodings: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UpdateRequested:
    incremental: bool
    rect: Rect


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """KeyEvent, or QEMU extended key event (which adds the XT keycode)."""

    down: bool
    keysym: int
    keycode: int | None = None


@dataclass(frozen=True, slots=True)
class PointerMoved:
    buttons: int
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class CutTextReceived:
    """Clipboard text was skipped, not kept: only its length is reported."""

    length: int


@dataclass(frozen=True, slots=True)
class FenceReceived:
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ContinuousUpdatesRequested:
    enable: bool
    rect: Rect


Event = (
    ClientReady
    | PixelFormatSet
    | EncodingsSet
    | UpdateRequested
    | KeyPressed
    | PointerMoved
    | CutTextReceived
    | FenceReceived
    | ContinuousUpdatesRequested
)


# ----------------------------------------------------------------------------------------- protocol


class RFBServerProtocol:
    """Server side of one RFB connection, without I/O.

    Call `receive_data` with whatever arrived and send `data_to_send()` afterwards. Accepts 3.3, 3.7
    and 3.8 clients (other 3.x minors are treated as RFC 6143 says: 3.3, or 3.8 if higher), offers only
    security type None, and raises `ProtocolError` on anything it cannot parse.
    """

    def __init__(self, *, width: int, height: int, name: str, max_cut_text: int = MAX_CUT_TEXT) -> None:
        self.width = width
        self.height = height
        self.name = name
        self.max_cut_text = max_cut_text
        self.pixel_format = PixelFormat()
        self.version: tuple[int, int] | None = None
        self.state = "version"
        self._buf = bytearray()
        self._out = bytearray()
        self._skip = 0
        self._out += b"RFB 003.008\n"

    # -- output
    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def send_framebuffer_update(self, rects: list[tuple[Rect, bytes]]) -> None:
        """Queue one FramebufferUpdate of Raw rectangles (pixels already in `pixel_format`)."""
        self._require_normal()
        self._out += struct.pack(">BxH", 0, len(rects))
        for (x, y, w, h), pixels in rects:
            if len(pixels) != w * h * self.pixel_format.bytes_per_pixel:
                raise ValueError("pixel data does not match the rectangle")
            self._out += struct.pack(">HHHHi", x, y, w, h, ENCODING_RAW)
            self._out += pixels

    def send_fence(self, flags: int, payload: bytes) -> None:
        self._require_normal()
        self._out += struct.pack(">B3xIB", 248, flags, len(payload)) + payload

    def _require_normal(self) -> None:
        if self.state != "normal":
            raise RuntimeError("handshake not finished")

    # -- input
    def receive_data(self, data: bytes) -> list[Event]:
        if self.state == "closed":
            raise ProtocolError("connection already failed")
        self._buf += data
        events: list[Event] = []
        try:
            while True:
                if self._skip:
                    n = min(self._skip, len(self._buf))
                    del self._buf[:n]
                    self._skip -= n
                    if self._skip:
                        break
                event = self._parse_one()
                if event is None:
                    break
                if event is not _NOTHING:
                    events.append(event)  # type: ignore[arg-type]
        except ProtocolError:
            self.state = "closed"
            raise
        return events

    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _parse_one(self) -> Event | object | None:
        """Parse one item for the current state; None = need more bytes."""
        if self.state == "version":
            return self._parse_version()
        if self.state == "security":
            return self._parse_security_choice()
        if self.state == "client_init":
            data = self._take(1)
            if data is None:
                return None
            self.state = "normal"
            self._out += struct.pack(">HH", self.width, self.height) + self.pixel_format.to_bytes()
            name = self.name.encode()
            self._out += struct.pack(">I", len(name)) + name
            assert self.version is not None
            return ClientReady(version=self.version, shared=bool(data[0]))
        return self._parse_message()

    def _parse_version(self) -> object | None:
        if len(self._buf) < 12:
            if not b"RFB 003.".startswith(bytes(self._buf[:8])):
                raise ProtocolError("not an RFB client")
            return None
        match = _VERSION_RE.fullmatch(self._take(12) or b"")
        if match is None or int(match.group(1)) != 3:
            raise ProtocolError("unsupported protocol version")
        minor = int(match.group(2))
        self.version = (3, 8) if minor >= 8 else (3, 7) if minor == 7 else (3, 3)
        if self.version == (3, 3):
            self._out += struct.pack(">I", SECURITY_NONE)  # 3.3: the server decides
            self.state = "client_init"
        else:
            self._out += bytes([1, SECURITY_NONE])
            self.state = "security"
        return _NOTHING

    def _parse_security_choice(self) -> object | None:
        data = self._take(1)
        if data is None:
            return None
        if data[0] != SECURITY_NONE:
            if self.version == (3, 8):
                reason = b"security type not offered"
                self._out += struct.pack(">II", 1, len(reason)) + reason
            raise ProtocolError(f"client chose security type {data[0]}")
        if self.version == (3, 8):
            self._out += struct.pack(">I", 0)  # SecurityResult OK: 3.8 sends it even for None
        self.state = "client_init"
        return _NOTHING

    def _parse_message(self) -> Event | object | None:
        if not self._buf:
            return None
        kind = self._buf[0]
        if kind == 0:  # SetPixelFormat
            data = self._take(20)
            if data is None:
                return None
            pf = PixelFormat.from_bytes(data[4:])
            try:
                pf.validate()
            except ValueError as exc:
                raise ProtocolError(f"SetPixelFormat: {exc}") from None
            self.pixel_format = pf
            return PixelFormatSet(pf)
        if kind == 2:  # SetEncodings
            if len(self._buf) < 4:
                return None
            (count,) = struct.unpack_from(">H", self._buf, 2)
            if count > MAX_ENCODINGS:
                raise ProtocolError("SetEncodings: too many encodings")
            data = self._take(4 + 4 * count)
            if data is None:
                return None
            return EncodingsSet(struct.unpack_from(f">{count}i", data, 4))
        if kind == 3:  # FramebufferUpdateRequest
            data = self._take(10)
            if data is None:
                return None
            _, incremental, x, y, w, h = struct.unpack(">BBHHHH", data)
            return UpdateRequested(bool(incremental), (x, y, w, h))
        if kind == 4:  # KeyEvent
            data = self._take(8)
            if data is None:
                return None
            _, down, keysym = struct.unpack(">BB2xI", data)
            return KeyPressed(bool(down), keysym)
        if kind == 5:  # PointerEvent
            data = self._take(6)
            if data is None:
                return None
            _, buttons, x, y = struct.unpack(">BBHH", data)
            return PointerMoved(buttons, x, y)
        if kind == 6:  # ClientCutText: skipped as it streams in, never buffered whole
            data = self._take(8)
            if data is None:
                return None
            (length,) = struct.unpack_from(">i", data, 4)
            length = abs(length)  # negative = extended clipboard; same framing
            if length > self.max_cut_text:
                raise ProtocolError("ClientCutText too long")
            self._skip = length
            return CutTextReceived(length)
        if kind == 150:  # EnableContinuousUpdates
            data = self._take(10)
            if data is None:
                return None
            _, enable, x, y, w, h = struct.unpack(">BBHHHH", data)
            return ContinuousUpdatesRequested(bool(enable), (x, y, w, h))
        if kind == 248:  # ClientFence
            if len(self._buf) < 9:
                return None
            length = self._buf[8]
            if length > MAX_FENCE_PAYLOAD:
                raise ProtocolError("ClientFence payload too long")
            data = self._take(9 + length)
            if data is None:
                return None
            (flags,) = struct.unpack_from(">I", data, 4)
            return FenceReceived(flags, data[9:])
        if kind == 255:  # QEMU client message; only subtype 0 (extended key event) is understood
            if len(self._buf) < 2:
                return None
            if self._buf[1] != 0:
                raise ProtocolError(f"QEMU message subtype {self._buf[1]} unsupported")
            data = self._take(12)
            if data is None:
                return None
            _, _, down, keysym, keycode = struct.unpack(">BBHII", data)
            return KeyPressed(bool(down), keysym, keycode)
        raise ProtocolError(f"unknown client message type {kind}")


_NOTHING = object()


# --------------------------------------------------------------------------------------- rectangles


def _union(a: Rect | None, b: Rect | None) -> Rect | None:
    if a is None:
        return b
    if b is None:
        return a
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def _intersect(a: Rect, b: Rect) -> Rect | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _contains(outer: Rect, inner: Rect) -> bool:
    return _intersect(outer, inner) == inner


# ------------------------------------------------------------------------------------------ asyncio


class _Client:
    """Per-connection update bookkeeping: what the viewer asked for and what it has not seen yet."""

    def __init__(self, proto: RFBServerProtocol, writer: asyncio.StreamWriter, screen_rect: Rect) -> None:
        self.proto = proto
        self.writer = writer
        self.dirty: Rect | None = screen_rect  # nothing sent yet: everything is news
        self.want_full: Rect | None = None
        self.want_incremental: Rect | None = None
        self.wake = asyncio.Event()

    def take_update(self, screen: DemoScreen) -> bytes | None:
        """Build the update owed to this client now, or None when it must wait for a change."""
        screen_rect = (0, 0, screen.width, screen.height)
        region: Rect | None
        if self.want_full is not None:
            region = _intersect(self.want_full, screen_rect)
        elif self.want_incremental is not None and self.dirty is not None:
            region = _intersect(self.want_incremental, self.dirty)
            if region is None:
                return None
        else:
            return None
        self.want_full = self.want_incremental = None
        rects = [] if region is None else [(region, screen.pixels(self.proto.pixel_format, region))]
        if region is not None and self.dirty is not None and _contains(region, self.dirty):
            self.dirty = None  # otherwise keep it whole: re-sending a little is harmless
        self.proto.send_framebuffer_update(rects)
        return self.proto.data_to_send()


class RFBServer:
    """Serves one `DemoScreen` to any number of RFB clients over TCP.

    `connections` counts open connections, `total_connections` every accepted one; `keys_received`
    lists the keysyms of key-down events in arrival order.
    """

    def __init__(
        self,
        *,
        name: str,
        server_id: str,
        width: int = 800,
        height: int = 600,
        handshake_timeout: float = 10.0,
        write_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.server_id = server_id
        self.screen = DemoScreen(name=name, server_id=server_id, width=width, height=height)
        self.handshake_timeout = handshake_timeout
        self.write_timeout = write_timeout
        self.keys_received: list[int] = []
        self.connections = 0
        self.total_connections = 0
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresh_scheduled = False

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await asyncio.start_server(self._handle, host, port)
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self) -> None:
        """Stop listening, close every client and wait until no task of ours is left."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def type_key(self, keysym: int, down: bool = True) -> None:
        """Apply a key as if a viewer typed it (the connections call this too).

        The text changes now; the picture is re-rendered once per event-loop turn, so a client
        flooding key events costs one render per burst, not one per key.
        """
        if down:
            self.keys_received.append(keysym)
        if self.screen.key(keysym, down) and not self._refresh_scheduled:
            self._refresh_scheduled = True
            asyncio.get_running_loop().call_soon(self._refresh)

    def _refresh(self) -> None:
        self._refresh_scheduled = False
        rect = self.screen.refresh()
        if rect is None:
            return
        for client in self._clients:
            client.dirty = _union(client.dirty, rect)
            client.wake.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.total_connections += 1
        peer = writer.get_extra_info("peername")
        sender: asyncio.Task[None] | None = None
        client: _Client | None = None
        try:
            proto = RFBServerProtocol(width=self.screen.width, height=self.screen.height, name=self.name)
            client = _Client(proto, writer, (0, 0, self.screen.width, self.screen.height))
            writer.write(proto.data_to_send())
            async with asyncio.timeout(self.handshake_timeout) as deadline:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    for event in proto.receive_data(data):
                        if isinstance(event, ClientReady):
                            deadline.reschedule(None)
                            self._clients.add(client)
                            sender = asyncio.create_task(self._send_loop(client))
                        else:
                            self._on_event(client, event)
                    if out := proto.data_to_send():
                        writer.write(out)
        except ProtocolError as exc:
            log.info("rfb %s: closing: %s", peer, exc)
            if client is not None and (out := client.proto.data_to_send()):
                writer.write(out)  # e.g. the 3.8 SecurityResult failure reason
        except TimeoutError:
            log.info("rfb %s: closing: handshake timed out", peer)
        except (ConnectionError, OSError) as exc:
            log.debug("rfb %s: connection lost: %s", peer, exc)
        except asyncio.CancelledError:
            pass  # stop(); the finally below closes the socket
        except Exception:
            log.exception("rfb %s: unexpected error", peer)
        finally:
            if client is not None:
                self._clients.discard(client)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            # Close gracefully only when nothing is queued: a peer that stopped reading must not hold us.
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()
            else:
                writer.transport.close()
            self.connections -= 1
            self._tasks.discard(task)

    def _on_event(self, client: _Client, event: Event) -> None:
        if isinstance(event, UpdateRequested):
            if event.incremental:
                client.want_incremental = _union(client.want_incremental, event.rect)
            else:
                client.want_full = _union(client.want_full, event.rect)
            client.wake.set()
        elif isinstance(event, KeyPressed):
            if event.keysym:
                self.type_key(event.keysym, event.down)
        elif isinstance(event, FenceReceived):
            if event.flags & FENCE_REQUEST:  # echo the fence minus the request bit (RFB fence extension)
                client.proto.send_fence(event.flags & 0x7, event.payload)
                client.writer.write(client.proto.data_to_send())
        elif isinstance(event, PixelFormatSet):
            client.dirty = (0, 0, self.screen.width, self.screen.height)  # old pixels are now meaningless
        # EncodingsSet: Raw is always allowed, everything else is ignored. Pointer, cut text and
        # continuous-updates requests are accepted and ignored.

    async def _send_loop(self, client: _Client) -> None:
        peer = client.writer.get_extra_info("peername")
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                update = client.take_update(self.screen)
                if update is None:
                    continue
                client.writer.write(update)
                async with asyncio.timeout(self.write_timeout):
                    await client.writer.drain()
        except TimeoutError:
            log.info("rfb %s: closing: client not reading", peer)
            client.writer.transport.abort()
        except (ConnectionError, OSError) as exc:
            log.debug("rfb %s: send failed: %s", peer, exc)
            client.writer.transport.abort()
