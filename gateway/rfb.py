"""Sans-IO parsing of the RFB client-to-server stream (RFC 6143 plus the extensions noVNC sends).

View-only is enforced here, on the server, because a browser flag is a request, not a control:
the filter forwards only the handshake and the messages that ask for pixels, and drops every
byte of key, pointer, clipboard, power (xvp) and resize messages. It is fed raw bytes as they
arrive, in chunks of any size, and returns the bytes to send on.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["ClientMessageFilter", "FilterResult", "RFBProtocolError"]


class RFBProtocolError(ValueError):
    """The client sent something that is not a well-formed RFB client stream."""


@dataclass(slots=True)
class FilterResult:
    forward: bytes  # exactly the bytes to send upstream (may be the fed object itself)
    dropped: int  # whole messages dropped in this call (counted when their header is seen)
    input_events: int  # key/pointer/clipboard messages forwarded (dropped input is not activity)


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str
    view_only_allowed: bool
    is_input: bool


_SET_PIXEL_FORMAT: Final = _Kind("SetPixelFormat", True, False)
_SET_ENCODINGS: Final = _Kind("SetEncodings", True, False)
_FB_UPDATE_REQUEST: Final = _Kind("FramebufferUpdateRequest", True, False)
_KEY: Final = _Kind("KeyEvent", False, True)
_POINTER: Final = _Kind("PointerEvent", False, True)
_CUT_TEXT: Final = _Kind("ClientCutText", False, True)
_CONTINUOUS_UPDATES: Final = _Kind("EnableContinuousUpdates", True, False)
_FENCE: Final = _Kind("ClientFence", True, False)
_XVP: Final = _Kind("XVP", False, False)
_SET_DESKTOP_SIZE: Final = _Kind("SetDesktopSize", False, False)
_QEMU_KEY: Final = _Kind("QEMUExtendedKeyEvent", False, True)
_QEMU_AUDIO: Final = _Kind("QEMUAudio", False, False)

# -316 as sent on the wire: the client can send 7-byte pointer events once it announced it.
_EXTENDED_MOUSE_BUTTONS: Final = -316
_VERSION_RE: Final = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
_SECURITY_NONE: Final = 1
_SECURITY_VNC_AUTH: Final = 2
_FENCE_MAX_PAYLOAD: Final = 64

# Stream states.
_VERSION, _SECURITY, _VNC_AUTH, _CLIENT_INIT, _MESSAGES, _PASSTHROUGH, _FAILED = range(7)
_NEED_MORE: Final = None


class _Unknown(Exception):
    """Internal: a message this parser does not know (fatal in view-only, pass-through in control)."""


class ClientMessageFilter:
    """Incremental client-stream parser; in view-only mode also the filter.

    In control mode nothing is held back: `forward` is the fed object itself, and parsing only
    counts input events. If it meets something it cannot parse it stops parsing and passes the
    rest through, counting every later chunk as activity. In view-only mode only complete
    allowed messages are forwarded; dropped message bodies are skipped as they stream past, so
    only allowed messages (at most `max_buffer` bytes) are ever buffered.
    """

    __slots__ = (
        "_ext_mouse",
        "_max_buffer",
        "_max_cut_text",
        "_pending",
        "_skip",
        "_state",
        "_version",
        "_view_only",
        "dropped_by_type",
    )

    def __init__(self, *, view_only: bool, max_buffer: int = 64 * 1024, max_cut_text: int = 1 << 24) -> None:
        if max_buffer < 64:
            raise ValueError("max_buffer must be at least 64 bytes")
        self._view_only = view_only
        self._max_buffer = max_buffer
        self._max_cut_text = max_cut_text
        self._state = _VERSION
        self._version = (0, 0)
        self._pending = bytearray()
        self._skip = 0  # body bytes of the current message still to stream past
        self._ext_mouse = False
        self.dropped_by_type: dict[str, int] = {}

    @property
    def view_only(self) -> bool:
        return self._view_only

    @property
    def passthrough(self) -> bool:
        """Control mode gave up parsing (unknown message or security type)."""
        return self._state == _PASSTHROUGH

    @property
    def in_handshake(self) -> bool:
        return self._state < _MESSAGES

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a message (at most `max_buffer`)."""
        return len(self._pending)

    def feed(self, data: bytes) -> FilterResult:
        if type(data) is not bytes:
            data = bytes(data)
        state = self._state
        if state == _PASSTHROUGH:
            return FilterResult(data, 0, 1 if data else 0)
        if state == _FAILED:
            raise RFBProtocolError("the client stream already failed")
        if not data:
            return FilterResult(data, 0, 0)

        pending = self._pending
        buf: bytes | bytearray
        if pending:
            pending += data
            buf = pending
        else:
            buf = data
        try:
            pos, out, dropped, inputs = self._parse(buf)
        except RFBProtocolError:
            self._state = _FAILED
            self._pending = bytearray()
            raise

        if self._view_only:
            if buf is data and len(out) == 1 and out[0] == (0, len(data)):
                forward = data
            else:
                forward = b"".join(bytes(buf[a:b]) for a, b in out)
        else:
            forward = data
        if self._state == _PASSTHROUGH:
            self._pending = bytearray()
            inputs += 1
        elif buf is pending:
            del pending[:pos]
        elif pos < len(buf):
            self._pending = bytearray(buf[pos:])
        return FilterResult(forward, dropped, inputs)

    def _parse(self, buf: bytes | bytearray) -> tuple[int, list[tuple[int, int]], int, int]:
        """Consume whole units from `buf`; return (consumed, forward ranges, dropped, inputs)."""
        view_only = self._view_only
        n = len(buf)
        pos = 0
        out: list[tuple[int, int]] = []
        dropped = 0
        inputs = 0

        def emit(start: int, end: int) -> None:
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))

        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
                continue
            state = self._state
            avail = n - pos
            if state == _MESSAGES:
                try:
                    measured = self._measure(buf, pos, avail)
                except _Unknown as exc:
                    if view_only:
                        raise RFBProtocolError(str(exc)) from None
                    self._state = _PASSTHROUGH
                    return n, out, dropped, inputs
                if measured is _NEED_MORE:
                    break
                size, kind = measured
                if view_only:
                    if kind.view_only_allowed:
                        if size > self._max_buffer:
                            raise RFBProtocolError(f"{kind.name} of {size} bytes exceeds the limit")
                        if avail < size:
                            break
                        if kind is _SET_ENCODINGS:
                            self._note_encodings(buf, pos, size)
                        emit(pos, pos + size)
                        pos += size
                        continue
                    if kind is _CUT_TEXT and size - 8 > self._max_cut_text:
                        raise RFBProtocolError(f"ClientCutText of {size - 8} bytes exceeds the limit")
                    dropped += 1
                    self.dropped_by_type[kind.name] = self.dropped_by_type.get(kind.name, 0) + 1
                else:
                    if kind is _SET_ENCODINGS:
                        if size > self._max_buffer:
                            self._state = _PASSTHROUGH
                            return n, out, dropped, inputs
                        if avail < size:
                            break
                        self._note_encodings(buf, pos, size)
                        pos += size
                        continue
                    if kind.is_input:
                        inputs += 1
                take = min(size, avail)
                pos += take
                self._skip = size - take
                continue

            # Handshake: fixed-size units, forwarded whole.
            if state == _VERSION:
                unit = 12
            elif state == _VNC_AUTH:
                unit = 16
            else:
                unit = 1
            if avail < unit:
                break
            try:
                self._handshake_step(state, bytes(buf[pos : pos + unit]))
            except _Unknown as exc:
                if view_only:
                    raise RFBProtocolError(str(exc)) from None
                self._state = _PASSTHROUGH
                return n, out, dropped, inputs
            if view_only:
                emit(pos, pos + unit)
            pos += unit
        return pos, out, dropped, inputs

    def _handshake_step(self, state: int, unit: bytes) -> None:
        if state == _VERSION:
            m = _VERSION_RE.fullmatch(unit)
            if m is None:
                raise _Unknown("the client did not send an RFB ProtocolVersion")
            major, minor = int(m[1]), int(m[2])
            if major != 3 or minor < 3:
                raise _Unknown(f"unsupported RFB version {major}.{minor}")
            self._version = (major, minor)
            # 3.3 (and the 3.4-3.6 variants): the server picks the security type; assume None.
            self._state = _SECURITY if minor >= 7 else _CLIENT_INIT
        elif state == _SECURITY:
            sec = unit[0]
            if sec == _SECURITY_NONE:
                self._state = _CLIENT_INIT
            elif sec == _SECURITY_VNC_AUTH:
                self._state = _VNC_AUTH
            else:
                raise _Unknown(f"security type {sec} is not supported in view-only mode")
        elif state == _VNC_AUTH:
            self._state = _CLIENT_INIT
        elif state == _CLIENT_INIT:
            self._state = _MESSAGES

    def _measure(self, buf: bytes | bytearray, pos: int, avail: int) -> tuple[int, _Kind] | None:
        """Total length and kind of the message at `pos`, or None until its header is complete."""
        t = buf[pos]
        if t == 3:
            return 10, _FB_UPDATE_REQUEST
        if t == 5:
            if avail < 2:
                return _NEED_MORE
            if self._ext_mouse and buf[pos + 1] & 0x80:
                return 7, _POINTER
            return 6, _POINTER
        if t == 4:
            return 8, _KEY
        if t == 2:
            if avail < 4:
                return _NEED_MORE
            return 4 + 4 * ((buf[pos + 2] << 8) | buf[pos + 3]), _SET_ENCODINGS
        if t == 0:
            if avail >= 5 and buf[pos + 4] not in (8, 16, 32):
                raise self._malformed(f"SetPixelFormat with {buf[pos + 4]} bits per pixel")
            return 20, _SET_PIXEL_FORMAT
        if t == 6:
            if avail < 8:
                return _NEED_MORE
            length = int.from_bytes(buf[pos + 4 : pos + 8], "big", signed=True)
            return 8 + abs(length), _CUT_TEXT  # negative: extended clipboard, same framing
        if t == 150:
            return 10, _CONTINUOUS_UPDATES
        if t == 248:
            if avail < 9:
                return _NEED_MORE
            if buf[pos + 8] > _FENCE_MAX_PAYLOAD:
                raise self._malformed(f"ClientFence payload of {buf[pos + 8]} bytes")
            return 9 + buf[pos + 8], _FENCE
        if t == 250:
            return 4, _XVP
        if t == 251:
            if avail < 7:
                return _NEED_MORE
            return 8 + 16 * buf[pos + 6], _SET_DESKTOP_SIZE
        if t == 255:
            if avail < 2:
                return _NEED_MORE
            sub = buf[pos + 1]
            if sub == 0:
                return 12, _QEMU_KEY
            if sub == 1:
                if avail < 4:
                    return _NEED_MORE
                op = (buf[pos + 2] << 8) | buf[pos + 3]
                if op in (0, 1):
                    return 4, _QEMU_AUDIO
                if op == 2:
                    return 10, _QEMU_AUDIO
                raise self._malformed(f"QEMU audio operation {op}")
            raise _Unknown(f"unknown QEMU client message subtype {sub}")
        raise _Unknown(f"unknown client message type {t}")

    def _malformed(self, what: str) -> Exception:
        # Malformed is fatal in view-only; in control mode the server is the judge.
        return RFBProtocolError(what) if self._view_only else _Unknown(what)

    def _note_encodings(self, buf: bytes | bytearray, pos: int, size: int) -> None:
        encodings = struct.unpack_from(f">{(size - 4) // 4}i", buf, pos + 4)
        self._ext_mouse = _EXTENDED_MOUSE_BUTTONS in encodings


# The names `dropped_by_type` uses, for metrics and tests.
DROPPED_KINDS: Final = tuple(
    k.name for k in (_KEY, _POINTER, _CUT_TEXT, _XVP, _SET_DESKTOP_SIZE, _QEMU_KEY, _QEMU_AUDIO)
)
