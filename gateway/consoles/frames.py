"""Cutting a server-to-client WebSocket byte stream into whole frames, sans-IO: the half of the downstream
pass-through (consoles/aiohttp_fastpath.py) that needs no socket. A server frame to a client is the same
bytes on both hops, so whole binary frames can be written to the browser as they arrived."""

from __future__ import annotations

from typing import Final

__all__ = ["CONTROL_OPS", "OP_BINARY", "OP_CONTINUATION", "Frame", "FrameError", "FrameSplitter"]


class FrameError(ValueError):
    """The console proxy's byte stream is not a valid server-to-client WebSocket stream."""


OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
CONTROL_OPS: Final = frozenset({0x8, 0x9, 0xA})
# A whole frame: (opcode, fin, payload length, pieces, start, end). A frame inside the chunk fed
# is data[start:end] (pieces None); one that straddled chunks comes as pieces (start == end == 0).
Frame = tuple[int, bool, int, list[memoryview] | None, int, int]


class FrameSplitter:
    """Cuts a server-to-client WebSocket stream into whole frames, payloads left where they are.

    Fed chunks of any size; returns the chunk (joined to a split header, if any) and its complete
    frames as offsets into it, or, for a frame that straddled chunks, as uncopied pieces.
    Enforces what aiohttp's reader would: no masking, no RSV bits (no extension is negotiated
    upstream), known opcodes, short final control frames, well-formed fragmentation, and the
    message size limit.
    """

    __slots__ = ("_head", "_max", "_meta", "_need", "_opcode", "_pieces", "_size")

    def __init__(self, max_msg_size: int) -> None:
        self._max = max_msg_size or (1 << 63)
        self._head = b""  # the start of a frame header split across chunks
        self._pieces: list[memoryview] = []  # a frame whose payload is still arriving
        self._need = 0  # payload bytes that frame still lacks
        self._meta: tuple[int, bool, int] = (0, False, 0)
        self._opcode = -1  # the data opcode of a fragmented message in progress, else -1
        self._size = 0  # payload bytes of that message so far

    @property
    def in_fragmented_message(self) -> bool:
        return self._opcode != -1

    @property
    def at_boundary(self) -> bool:
        """Between frames: nothing of a next frame seen yet."""
        return not self._need and not self._head

    def feed(self, data: bytes) -> tuple[bytes, list[Frame]]:
        frames: list[Frame] = []
        pos = 0
        if self._need:
            view = memoryview(data)
            take = min(self._need, len(data))
            self._pieces.append(view[:take])
            self._need -= take
            pos = take
            if self._need:
                return data, frames
            opcode, fin, length = self._meta
            frames.append((opcode, fin, length, self._pieces, 0, 0))
            self._pieces = []
        elif self._head:
            data = self._head + data  # a header split across chunks: rare, and at most 13 bytes
            self._head = b""
        n = len(data)
        while pos < n:
            if n - pos < 2:
                self._head = data[pos:]
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            if b1 & 0x80:
                raise FrameError("masked frame from the server")
            if b0 & 0x70:
                raise FrameError("reserved bits set")
            fin = bool(b0 & 0x80)
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            header = 2
            if length == 126:
                header = 4
                if n - pos < 4:
                    self._head = data[pos:]
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                header = 10
                if n - pos < 10:
                    self._head = data[pos:]
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise FrameError("frame length out of range")
            self._check(opcode, fin, length)
            end = pos + header + length
            if end <= n:
                frames.append((opcode, fin, length, None, pos, end))
                pos = end
            else:
                self._pieces = [memoryview(data)[pos:]]
                self._need = end - n
                self._meta = (opcode, fin, length)
                break
        return data, frames

    def _check(self, opcode: int, fin: bool, length: int) -> None:
        if opcode in CONTROL_OPS:
            if not fin or length > 125:
                raise FrameError("fragmented or over-long control frame")
            return
        if opcode == OP_CONTINUATION:
            if self._opcode == -1:
                raise FrameError("continuation frame without a message to continue")
            self._size += length
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._opcode != -1:
                raise FrameError("new message inside a fragmented message")
            self._size = length
            if not fin:
                self._opcode = opcode
        else:
            raise FrameError(f"unknown opcode {opcode}")
        if self._size > self._max:
            raise FrameError("message larger than the limit")
        if fin and opcode == OP_CONTINUATION:
            self._opcode = -1
