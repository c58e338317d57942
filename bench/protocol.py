"""The benchmark's byte streams, sans-IO: both sources and the client speak exactly these bytes.

Everything is valid RFB 3.8 so that the gateway's client-message filter parses it as it would a
real console: the client asks for a stream with a ClientCutText command and measures latency with
PointerEvents, which the source answers with a 12-byte ServerCutText carrying the same id.
"""

from __future__ import annotations

import functools
import random
import struct
from dataclasses import dataclass

__all__ = [
    "CLIENT_HANDSHAKE",
    "CLIENT_STEPS",
    "FRAMED",
    "PONG_SIZE",
    "SERVER_HANDSHAKE",
    "SERVER_STEPS",
    "Profile",
    "SourceParser",
    "framed_update",
    "key",
    "ping",
    "pong_id",
    "profile",
    "stream_command",
]

_PIXEL_FORMAT = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
_NAME = b"bench"
_SERVER_INIT = struct.pack(">HH", 1280, 800) + _PIXEL_FORMAT + struct.pack(">I", len(_NAME)) + _NAME
# The handshake in RFB 3.8's steps, as a real VNC server takes them: the version on connect, then each
# step after the client's step before it: security types [None] after the client's version,
# SecurityResult OK after its choice, ServerInit after ClientInit (shared=1). A server that sent it all
# at once would run ahead of the protocol, and a gateway that frames the server's stream from ServerInit
# on (a recorded console) refuses that.
SERVER_STEPS = (b"RFB 003.008\n", b"\x01\x01", b"\x00\x00\x00\x00", _SERVER_INIT)
CLIENT_STEPS = (b"RFB 003.008\n", b"\x01", b"\x01")
SERVER_HANDSHAKE = b"".join(SERVER_STEPS)
CLIENT_HANDSHAKE = b"".join(CLIENT_STEPS)
PONG_SIZE = 12
_MAX_COMMAND = 256


def ping(ident: int) -> bytes:
    """A PointerEvent whose x,y carry a 32-bit id."""
    return b"\x05\x00" + (ident & 0xFFFFFFFF).to_bytes(4, "big")


def key(down: bool, keysym: int) -> bytes:
    """A KeyEvent: the gateway's filter parses it, the source ignores it."""
    return struct.pack(">BBxxI", 4, int(down), keysym)


def pong_id(record: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(record[8:12], "big")


def _pong(ident: bytes) -> bytes:
    return b"\x03\x00\x00\x00\x00\x00\x00\x04" + ident


def stream_command(name: str, total: int) -> bytes:
    text = f"stream {name} {total}".encode()
    return b"\x06\x00\x00\x00" + struct.pack(">I", len(text)) + text


@dataclass(frozen=True, slots=True)
class Profile:
    """A downstream stream: the sizes of the messages the WebSocket source sends, in order."""

    name: str
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def framed(self) -> bool:
        """Whether each message is a whole FramebufferUpdate (`framed_update`), not opaque bytes."""
        return self.name.endswith(FRAMED)


# A profile name suffix: the same sizes, each message a valid FramebufferUpdate of Raw rectangles with
# terminal-like pixels, so a recorded console (which frames and stores every server message) can carry
# it (bench/recording.py). Sizes are rounded to what such an update can have.
FRAMED = "+fbu"
_WIDTH = 1280  # SERVER_HANDSHAKE's framebuffer width


def _framed_sizes(sizes: tuple[int, ...], total: int) -> tuple[int, ...]:
    """Multiples of 4 of at least 20 bytes (any such size is an update of Raw rectangles at 32 bpp) that
    still add up to `total` (a multiple of 4): the largest message takes up the difference."""
    framed = [max(20, s - s % 4) for s in sizes]
    largest = framed.index(max(framed))
    framed[largest] += total - sum(framed)
    if total % 4 or framed[largest] < 20:
        raise ValueError(f"no framed profile of {total} bytes")
    return tuple(framed)


def _rects(size: int) -> list[tuple[int, int]]:
    """(width, height) of the Raw rectangles of a FramebufferUpdate `size` bytes long (one or two)."""
    pixels = (size - 16) // 4
    if pixels <= _WIDTH or not pixels % _WIDTH:
        return [(min(pixels, _WIDTH), max(1, pixels // _WIDTH))]
    pixels = (size - 28) // 4
    rows = pixels // _WIDTH
    if pixels % _WIDTH:
        return [(_WIDTH, rows), (pixels % _WIDTH, 1)]
    return [(_WIDTH - 1, rows), (rows, 1)]


@functools.cache
def _screen() -> bytes:
    """128 rows of a 1280-pixel terminal, 32 bpp: light glyphs (6x13 cells of a seeded font) on black."""
    rng = random.Random(1290)
    ink, paper = b"\xaa\xaa\xaa\x00", b"\x00\x00\x00\x00"
    font = [
        [b"".join(ink if rng.random() < 0.3 else paper for _ in range(6)) for _ in range(13)]
        for _ in range(90)
    ]
    blank = [paper * 6] * 13
    rows = []
    for _line in range(10):
        cells = [font[rng.randrange(90)] if rng.random() < 0.55 else blank for _ in range(_WIDTH // 6)]
        for y in range(13):
            rows.append(b"".join(cell[y] for cell in cells) + paper * (_WIDTH % 6))
    return b"".join(rows)[: 128 * _WIDTH * 4]


def framed_update(size: int) -> bytes:
    """A FramebufferUpdate of `size` bytes (a multiple of 4, at least 20): Raw rectangles of terminal-like
    pixels."""
    rects = _rects(size)
    parts = [struct.pack(">BxH", 0, len(rects))]
    y = 0
    screen = _screen()
    for w, h in rects:
        parts.append(struct.pack(">HHHHi", 0, y, w, h, 0))
        parts.append(screen[: w * h * 4])
        y += h
    return b"".join(parts)


# (share, smallest, largest): a VNC session is mostly small updates (cursor, text, tiles) with
# occasional large ones (scrolling, a full refresh). Sizes are log-uniform within a band.
_MIX_BANDS = ((0.50, 16, 256), (0.30, 256, 4096), (0.15, 4096, 65536), (0.05, 65536, 524288))


def _band(pick: float) -> tuple[int, int]:
    for share, low, high in _MIX_BANDS:
        if pick < share:
            return low, high
        pick -= share
    return _MIX_BANDS[-1][1:]


@functools.lru_cache(maxsize=8)
def profile(name: str, total: int) -> Profile:
    """`64k`: 64 KiB messages; `mix`: the seeded VNC-like mix; either + FRAMED: as FramebufferUpdates.
    Deterministic for (name, total)."""
    if name.endswith(FRAMED):
        return Profile(name, _framed_sizes(profile(name.removesuffix(FRAMED), total).sizes, total))
    if name == "64k":
        return Profile(name, (65536,) * max(1, total // 65536))
    if name != "mix":
        raise ValueError(f"unknown profile {name!r}")
    rng = random.Random(6143)
    sizes: list[int] = []
    left = total
    while left > 0:
        low, high = _band(rng.random())
        size = min(left, int(low * (high / low) ** rng.random()))
        sizes.append(size)
        left -= size
    return Profile(name, tuple(sizes))


class SourceParser:
    """What the client asked the source for, from the client's byte stream (chunks of any size)."""

    __slots__ = ("_buf", "_steps")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._steps = 0  # of CLIENT_STEPS received

    def feed(self, data: bytes) -> list[Profile | bytes]:
        """Profiles to stream, and handshake steps and pong bytes to send, in order."""
        buf = self._buf
        buf += data
        out: list[Profile | bytes] = []
        pos = 0
        n = len(buf)
        while self._steps < len(CLIENT_STEPS):
            step = CLIENT_STEPS[self._steps]
            if n - pos < len(step):
                del buf[:pos]
                return out
            if bytes(buf[pos : pos + len(step)]) != step:
                raise ValueError("unexpected client handshake")
            pos += len(step)
            self._steps += 1
            out.append(SERVER_STEPS[self._steps])
        while pos < n:
            kind = buf[pos]
            if kind == 5:  # PointerEvent
                if n - pos < 6:
                    break
                out.append(_pong(bytes(buf[pos + 2 : pos + 6])))
                pos += 6
            elif kind == 3:  # FramebufferUpdateRequest: nothing to do
                if n - pos < 10:
                    break
                pos += 10
            elif kind == 4:  # KeyEvent: nothing to do
                if n - pos < 8:
                    break
                pos += 8
            elif kind == 6:  # ClientCutText: a command
                if n - pos < 8:
                    break
                (length,) = struct.unpack_from(">I", buf, pos + 4)
                if length > _MAX_COMMAND:
                    raise ValueError("command too long")
                if n - pos < 8 + length:
                    break
                words = bytes(buf[pos + 8 : pos + 8 + length]).decode().split()
                if len(words) != 3 or words[0] != "stream":
                    raise ValueError("unknown command")
                out.append(profile(words[1], int(words[2])))
                pos += 8 + length
            else:
                raise ValueError(f"unexpected client message type {kind}")
        del buf[:pos]
        return out
