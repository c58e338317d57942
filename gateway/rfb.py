"""Sans-IO parsing of the RFB stream (RFC 6143 plus the extensions noVNC sends): every message the
client sends, and the server's side of the handshake.

View-only is enforced here, on the server, because a browser flag is a request, not a control:
the filter forwards only the handshake and the messages that ask for pixels, and drops every
byte of key, pointer, clipboard, power (xvp) and resize messages.

Every console, view or control, is shared: ClientInit goes upstream as 1, because a client asking
for exclusive access (0) makes QEMU (`share=allow-exclusive`) and Xvnc (`-DisconnectClients`)
drop every other client. Only control sessions may ask, and only with `allow_exclusive`. Finding
that byte means following the handshake as the server leads it (in RFB 3.3 the server picks the
security type, and the lower of the two versions is the one spoken), so the relay also feeds the
server's bytes (`feed_server`) until the client's side no longer depends on them. A handshake the
filter cannot follow (another security type, garbage) is refused, since it could hide ClientInit;
only control sessions allowed exclusive access, with nothing to enforce, pass it through as before.
Bytes are fed as they arrive, in chunks of any size.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final, cast

__all__ = [
    "COPY_SAFE_ENCODINGS",
    "RECORDABLE_ENCODINGS",
    "ClientMessageFilter",
    "FilterResult",
    "RFBProtocolError",
    "ServerMessageFilter",
    "full_update_request",
]


class RFBProtocolError(ValueError):
    """The client sent something that is not a well-formed RFB client stream, or the handshake went
    where the gateway cannot follow it."""


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
_SHARED: Final = 1
# No server sends more than its version, security types, challenge and result before the client
# answers; one that runs this far ahead is not followed (the client then gets no further).
_SERVER_AHEAD_MAX: Final = 4096

# Client stream states. _AWAIT_SERVER: what the client sends next depends on what the server has
# not said yet (its version; in 3.3 the security type), so a byte there is out of turn (a real
# client waits, and the relay feeds the server's bytes here before the browser sees them).
_VERSION, _AWAIT_SERVER, _SECURITY, _VNC_AUTH, _CLIENT_INIT, _MESSAGES, _PASSTHROUGH, _FAILED = range(8)
# Server handshake states; from _S_DONE on the server's bytes no longer matter to the filter.
_S_VERSION, _S_SECURITY, _S_CHOICE, _S_CHALLENGE, _S_RESULT, _S_DONE, _S_REFUSED, _S_LOST = range(8)
_NEED_MORE: Final = None


class _Unknown(Exception):
    """Internal: something this parser does not know (refused, or passed through where allowed)."""


class ClientMessageFilter:
    """Incremental client-stream parser; in view-only mode also the filter.

    Handshake bytes are forwarded unit by unit once understood (ClientInit's flag rewritten).
    After it, in control mode nothing is held back: `forward` is the fed object itself, and
    parsing only counts input events; meeting a message it cannot parse it stops parsing and
    passes the rest through, counting every later chunk as activity. In view-only mode only
    complete allowed messages are forwarded; dropped message bodies are skipped as they stream
    past, so only allowed messages (at most `max_buffer` bytes) are ever buffered.
    """

    __slots__ = (
        "_chosen",
        "_client_version",
        "_encodings",
        "_exclusive_ok",
        "_ext_mouse",
        "_filtering",
        "_held",
        "_max_buffer",
        "_max_cut_text",
        "_minor",
        "_offered",
        "_paste",
        "_paste_max",
        "_pending",
        "_pressed",
        "_server_end",
        "_server_fed",
        "_server_pending",
        "_server_state",
        "_server_version",
        "_skip",
        "_state",
        "_view_only",
        "_why",
        "bytes_per_pixel",
        "dropped_by_type",
        "input_log",
        "paste_denied",
        "paste_denied_bytes",
        "pixel_format",
    )

    def __init__(
        self,
        *,
        view_only: bool,
        allow_exclusive: bool = False,
        max_buffer: int = 64 * 1024,
        max_cut_text: int = 1 << 24,
        paste: bool = True,
        paste_max: int | None = None,
        copy_out: bool = True,
        moderated: bool = False,
        record: bool = False,
        record_input: bool = False,
    ) -> None:
        """`allow_exclusive` lets a control session's ClientInit through unchanged (never view-only).

        Clipboard policy for control sessions: `paste` False drops every ClientCutText (plain or
        extended), `paste_max` drops the longer ones (their length as sent); both are counted in
        `paste_denied` / `paste_denied_bytes`. `copy_out` False means the server's stream is filtered
        (ServerMessageFilter): SetEncodings is rewritten to encodings the gateway can frame.
        Any of them makes the control stream parsed strictly, message by message, like view-only.

        `moderated`: a control session whose input a moderation rule holds at runtime (`hold`); it is
        parsed strictly, starts held, and never asks for exclusive access (that would drop the watchers).

        `record`: the console is recorded, so every server message boundary must be a place a player can
        start decoding: SetEncodings is rewritten to RECORDABLE_ENCODINGS (stateless and framable), the
        stream parsed strictly. `record_input` also collects each input message forwarded (keys,
        pointer, clipboard, QEMU keys; never update requests) in `input_log`, for the recorder to take."""
        if max_buffer < 64:
            raise ValueError("max_buffer must be at least 64 bytes")
        self._view_only = view_only
        self._paste = paste and not view_only
        self._paste_max = paste_max
        # The encodings the server may use, when the gateway must frame its stream (None: any).
        self._encodings: frozenset[int] | None = (
            RECORDABLE_ENCODINGS if record else None if copy_out else COPY_SAFE_ENCODINGS
        )
        self._filtering = (
            view_only or moderated or record or not paste or paste_max is not None or not copy_out
        )
        self._exclusive_ok = allow_exclusive and not view_only and not moderated
        self._held = moderated  # input dropped as in view-only, until `hold(False)`
        # Moderated only: the release message for each key or button the server saw pressed (so that a
        # hold never leaves one down), by what identifies it.
        self._pressed: dict[bytes, bytes] | None = {} if moderated else None
        self._max_buffer = max(max_buffer, (paste_max or 0) + 8)
        self._max_cut_text = max_cut_text
        self.paste_denied = 0  # ClientCutText messages the clipboard policy dropped (not view-only drops)
        self.paste_denied_bytes = 0
        self.bytes_per_pixel = 4  # the client's pixel format (SetPixelFormat), for ServerMessageFilter
        self.pixel_format: bytes | None = None  # the client's SetPixelFormat (16 bytes), once it sent one
        self.input_log: list[bytes] | None = [] if record and record_input else None
        self._server_fed = 0  # server bytes followed so far
        self._server_end: int | None = None  # where the server's handshake ended (before ServerInit)
        self._state = _VERSION
        self._client_version = (0, 0)  # what the client announced
        self._server_version = (0, 0)
        self._minor = 0  # the version in effect: the lower of the two (a server follows the client down)
        self._offered = b""  # 3.7+: the security types the server listed
        self._chosen = 0  # 3.7+: the one the client picked
        self._server_state = _S_VERSION
        self._server_pending = bytearray()
        self._pending = bytearray()
        self._skip = 0  # body bytes of the current message still to stream past
        self._ext_mouse = False
        self._why = ""  # why the client may not go on, once the server side says so
        self.dropped_by_type: dict[str, int] = {}

    @property
    def view_only(self) -> bool:
        return self._view_only

    @property
    def held(self) -> bool:
        """Input is held (dropped like view-only) until a moderation rule releases it."""
        return self._held

    def hold(self, held: bool) -> bytes:
        """Hold or release a moderated session's input from the next message on. Holding answers the
        release messages for what the server saw pressed (send them upstream now: the filter forwards
        whole messages only, so this is a message boundary); releasing answers nothing."""
        if self._pressed is None:
            raise ValueError("only a moderated session's input can be held")
        self._held = held
        if not held:
            return b""
        releases = b"".join(self._pressed.values())
        self._pressed.clear()
        return releases

    @property
    def framable(self) -> frozenset[int]:
        """The encodings the server may use on a framed stream (what SetEncodings is rewritten to)."""
        return self._encodings if self._encodings is not None else COPY_SAFE_ENCODINGS

    @property
    def version(self) -> str:
        """The RFB version in effect (the lower of the two), as the handshake wrote it."""
        return f"RFB 003.{self._minor:03d}"

    @property
    def recorded(self) -> bool:
        """Made to record (`record=True`): the server is held to RECORDABLE_ENCODINGS."""
        return self._encodings is RECORDABLE_ENCODINGS

    @property
    def in_messages(self) -> bool:
        """Past the handshake and parsing whole messages: what goes upstream now ends on a message
        boundary, so the gateway may send a message of its own (a keyframe request) between two."""
        return self._state == _MESSAGES and self._filtering

    @property
    def passthrough(self) -> bool:
        """Control mode gave up parsing (unknown message, or a handshake with nothing to enforce)."""
        return self._state == _PASSTHROUGH

    @property
    def follows_server(self) -> bool:
        """The handshake still depends on what the server says: keep calling `feed_server`."""
        return self._server_state < _S_DONE and self._state < _MESSAGES

    @property
    def server_handshake_end(self) -> int | None:
        """The offset in the server's stream where ServerInit starts, once the handshake got there."""
        return self._server_end

    @property
    def server_lost(self) -> bool:
        """The server's handshake could not be followed (or it refused the client)."""
        return self._server_state > _S_DONE

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a message (at most `max_buffer`)."""
        return len(self._pending)

    def feed_server(self, data: bytes) -> bool:
        """Follow the server's side of the handshake. True while later server bytes still matter;
        once False, stop calling (the hot path pays nothing for it). Never raises: where the server
        cannot be followed, the client's side is refused at the point that depended on it."""
        if self.follows_server:
            self._server_pending += data
            self._server_fed += len(data)
            try:
                self._advance_server()
            except _Unknown as exc:
                self._cannot_follow(str(exc))
            if self.follows_server:
                return True
        self._server_pending = bytearray()
        return False

    def feed(self, data: bytes) -> FilterResult:
        if type(data) is not bytes:
            data = bytes(data)
        state = self._state
        if state == _PASSTHROUGH:
            if self._pending:  # handshake bytes held when the server side stopped being followed
                data = bytes(self._pending) + data
                self._pending = bytearray()
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
        elif state < _MESSAGES or self._encodings is not None:
            buf = bytearray(data)  # the handshake may rewrite ClientInit, SetEncodings in place
        else:
            buf = data
        try:
            pos, out, dropped, inputs = self._parse(buf)
        except RFBProtocolError:
            self._state = _FAILED
            self._pending = bytearray()
            raise

        if self._filtering or state < _MESSAGES:
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
        """Consume whole units from `buf`; return (consumed, forward ranges, dropped, inputs).

        Control mode emits ranges only for the handshake: from ClientInit on, the rest of the
        chunk (`feed` forwards later chunks whole)."""
        view_only = self._view_only or self._held
        filtering = self._filtering
        pressed = self._pressed
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
                    if filtering:
                        raise RFBProtocolError(str(exc)) from None
                    self._state = _PASSTHROUGH
                    return n, out, dropped, inputs
                if measured is _NEED_MORE:
                    break
                size, kind = measured
                if filtering:
                    if kind.view_only_allowed or (not view_only and self._passes(kind, size)):
                        if size > self._max_buffer:
                            raise RFBProtocolError(f"{kind.name} of {size} bytes exceeds the limit")
                        if avail < size:
                            break
                        if kind is _SET_ENCODINGS:
                            self._note_encodings(buf, pos, size)
                        elif kind is _SET_PIXEL_FORMAT:
                            self.bytes_per_pixel = max(1, buf[pos + 4] // 8)
                            self.pixel_format = bytes(buf[pos + 4 : pos + 20])
                        if kind.is_input:
                            inputs += 1
                            if pressed is not None:
                                _note_pressed(pressed, kind, buf, pos)
                            if self.input_log is not None:
                                self.input_log.append(bytes(buf[pos : pos + size]))
                        emit(pos, pos + size)
                        pos += size
                        continue
                    if kind is _CUT_TEXT and size - 8 > self._max_cut_text:
                        raise RFBProtocolError(f"ClientCutText of {size - 8} bytes exceeds the limit")
                    if kind is _CUT_TEXT and not view_only:  # the clipboard policy's, not view-only's
                        self.paste_denied += 1
                        self.paste_denied_bytes += size - 8
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
            if state == _AWAIT_SERVER:
                raise RFBProtocolError(self._why or "the client spoke before the console server answered")
            if state == _VERSION:
                unit = 12
            elif state == _VNC_AUTH:
                unit = 16
            else:
                unit = 1
            if avail < unit:
                break
            if state == _CLIENT_INIT and buf[pos] != _SHARED and not self._exclusive_ok:
                cast(bytearray, buf)[pos] = _SHARED  # feed() hands the handshake a bytearray
            try:
                self._handshake_step(state, bytes(buf[pos : pos + unit]))
            except _Unknown as exc:
                if not self._exclusive_ok or filtering:
                    raise RFBProtocolError(str(exc)) from None
                self._cannot_follow(str(exc))
            if self._state == _PASSTHROUGH or (self._state == _MESSAGES and not filtering):
                emit(pos, n)  # control mode: everything from here on goes as it came
                if self._state == _PASSTHROUGH:
                    return n, out, dropped, inputs
            else:
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
            self._client_version = (major, minor)
            self._state = _AWAIT_SERVER  # until the server's version says which handshake follows
            self._versions_known()
            self._advance_server()
        elif state == _SECURITY:
            sec = unit[0]
            if self._offered and sec not in self._offered:
                raise _Unknown(f"the client chose security type {sec}, not offered")
            if sec == _SECURITY_NONE:
                self._state = _CLIENT_INIT
            elif sec == _SECURITY_VNC_AUTH:
                self._state = _VNC_AUTH
            else:
                raise _Unknown(f"security type {sec} cannot be followed")
            self._chosen = sec
            self._advance_server()
        elif state == _VNC_AUTH:
            self._state = _CLIENT_INIT
        elif state == _CLIENT_INIT:
            self._state = _MESSAGES

    def _versions_known(self) -> None:
        """Once both versions are known the lower one is spoken; from 3.7 on the client picks the
        security type itself (the server's list only checks its pick), before that the server does."""
        if self._client_version[0] and self._server_version[0] and not self._minor:
            self._minor = min(self._client_version, self._server_version)[1]
            if self._minor >= 7 and self._state == _AWAIT_SERVER:
                self._state = _SECURITY

    def _advance_server(self) -> None:
        """Consume what the server said as far as it can be placed yet; may move the client on.

        Server bytes that depend on the client's version or choice wait for it (real servers
        never send them early); a server that runs far ahead is no longer followed."""
        buf = self._server_pending
        while self._server_state < _S_DONE and self._state < _MESSAGES:
            s = self._server_state
            if s == _S_VERSION:
                if len(buf) < 12:
                    break
                m = _VERSION_RE.fullmatch(bytes(buf[:12]))
                if m is None:
                    raise _Unknown("the console server did not send an RFB ProtocolVersion")
                version = (int(m[1]), int(m[2]))
                if version < (3, 3):
                    raise _Unknown("the console server speaks an RFB version before 3.3")
                del buf[:12]
                self._server_version = version
                self._server_state = _S_SECURITY
                self._versions_known()
            elif s == _S_SECURITY:
                if not self._minor:
                    break
                if self._minor < 7:  # the server picks: a u32 (0: refused, a reason follows)
                    if len(buf) < 4:
                        break
                    sec = int.from_bytes(buf[:4], "big")
                    del buf[:4]
                    if sec == _SECURITY_NONE:
                        self._server_state = _S_DONE
                        self._state = _CLIENT_INIT
                    elif sec == _SECURITY_VNC_AUTH:
                        self._server_state = _S_CHALLENGE
                        self._state = _VNC_AUTH
                    elif sec == 0:
                        self._refused()
                    else:
                        raise _Unknown(f"the console server chose security type {sec}")
                else:  # a list to pick from (empty: refused, a reason follows)
                    if not buf or len(buf) < 1 + buf[0]:
                        break
                    count = buf[0]
                    if not count:
                        self._refused()
                        continue
                    self._offered = bytes(buf[1 : 1 + count])
                    del buf[: 1 + count]
                    if self._chosen and self._chosen not in self._offered:
                        raise _Unknown(f"the client chose security type {self._chosen}, not offered")
                    self._server_state = _S_CHOICE
            elif s == _S_CHOICE:
                if not self._chosen:
                    break
                if self._chosen == _SECURITY_VNC_AUTH:
                    self._server_state = _S_CHALLENGE
                else:  # None: only 3.8 sends a SecurityResult for it
                    self._server_state = _S_RESULT if self._minor >= 8 else _S_DONE
            elif s == _S_CHALLENGE:
                if len(buf) < 16:
                    break
                del buf[:16]
                self._server_state = _S_RESULT
            else:  # _S_RESULT: a u32, 0 = OK; a failure (with a reason from 3.8 on) ends the session
                if len(buf) < 4:
                    break
                result = int.from_bytes(buf[:4], "big")
                del buf[:4]
                if result:
                    self._refused()
                else:
                    self._server_state = _S_DONE
        if self._server_state == _S_DONE and self._server_end is None:
            self._server_end = self._server_fed - len(buf)
        if self._server_state < _S_DONE and len(buf) > _SERVER_AHEAD_MAX:
            # Not followed further; a client that still needs the server's word gets no further.
            self._server_state = _S_LOST
            self._why = "the console server's handshake could not be followed"

    def _refused(self) -> None:
        """The server turned the client away; its reason is for the user, and nothing follows it."""
        self._server_state = _S_REFUSED
        self._why = "the console server refused the connection"
        self._state = _AWAIT_SERVER  # nothing more from the client is in turn

    def _cannot_follow(self, why: str) -> None:
        """A handshake that could hide ClientInit: refused, unless there is nothing to enforce."""
        self._server_state = _S_LOST
        self._why = why
        if self._state < _MESSAGES:
            self._state = _PASSTHROUGH if self._exclusive_ok and not self._filtering else _AWAIT_SERVER

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
        # Malformed is fatal when filtering; in plain control mode the server is the judge.
        return RFBProtocolError(what) if self._filtering else _Unknown(what)

    def _passes(self, kind: _Kind, size: int) -> bool:
        """A control session's message under the clipboard policy (only ClientCutText is subject to it)."""
        if kind is not _CUT_TEXT:
            return True
        return self._paste and (self._paste_max is None or size - 8 <= self._paste_max)

    def _note_encodings(self, buf: bytes | bytearray, pos: int, size: int) -> None:
        count = (size - 4) // 4
        encodings = struct.unpack_from(f">{count}i", buf, pos + 4)
        allowed = self._encodings
        if allowed is not None:
            # The server must only use encodings ServerMessageFilter can frame; refused ones become Raw
            # (every server has it), in place, so the message keeps its length.
            encodings = tuple(e if e in allowed else 0 for e in encodings)
            struct.pack_into(f">{count}i", cast(bytearray, buf), pos + 4, *encodings)
        self._ext_mouse = _EXTENDED_MOUSE_BUTTONS in encodings


# -- the server's stream, when the clipboard policy restricts copying out ---------------------------

_ENC_RAW: Final = 0
_ENC_COPYRECT: Final = 1
_ENC_ZRLE: Final = 16
_ENC_DESKTOP_SIZE: Final = -223
_ENC_LAST_RECT: Final = -224
_ENC_CURSOR: Final = -239
_ENC_EXT_DESKTOP_SIZE: Final = -308
_ENC_DESKTOP_NAME: Final = -307
# Encodings whose rectangles the gateway can measure from their headers, plus pseudo-encodings that
# carry no rectangle data (or change nothing in the framing): JPEG quality and compression levels,
# continuous updates, fences, QEMU key events and pointer modes, xvp, extended mouse buttons.
COPY_SAFE_ENCODINGS: Final = frozenset(
    {
        _ENC_RAW,
        _ENC_COPYRECT,
        _ENC_ZRLE,
        _ENC_DESKTOP_SIZE,
        _ENC_LAST_RECT,
        _ENC_CURSOR,
        _ENC_EXT_DESKTOP_SIZE,
        _ENC_DESKTOP_NAME,
        -313,  # ContinuousUpdates
        -312,  # Fence
        -309,  # xvp
        -258,  # QEMU extended key events
        -257,  # QEMU pointer motion change
        _EXTENDED_MOUSE_BUTTONS,
        *range(-256, -246),  # compression level
        *range(-32, -22),  # JPEG quality
    }
)
# While a console is recorded: only what is framable and stateless, so that a player can start decoding
# at any server message (ZRLE keeps one zlib stream for the whole connection).
RECORDABLE_ENCODINGS: Final = COPY_SAFE_ENCODINGS - {_ENC_ZRLE}
_S_INIT, _S_MESSAGE, _S_RECT = range(3)
_MAX_NAME: Final = 64 * 1024  # a desktop name longer than this is not kept (nor, in ServerInit, framed)


def _note_pressed(pressed: dict[bytes, bytes], kind: _Kind, buf: bytes | bytearray, pos: int) -> None:
    """Keep the release message of each key or pointer button down, keyed by what identifies it."""
    if kind is _KEY:
        keysym = bytes(buf[pos + 4 : pos + 8])
        if buf[pos + 1]:
            pressed[b"k" + keysym] = b"\x04\x00\x00\x00" + keysym
        else:
            pressed.pop(b"k" + keysym, None)
    elif kind is _QEMU_KEY:
        keycode = bytes(buf[pos + 8 : pos + 12])
        if buf[pos + 2] or buf[pos + 3]:
            pressed[b"q" + keycode] = b"\xff\x00\x00\x00" + bytes(buf[pos + 4 : pos + 12])
        else:
            pressed.pop(b"q" + keycode, None)
    elif kind is _POINTER:
        if buf[pos + 1]:  # buttons down (7-byte events add a byte of higher buttons: released too)
            pressed[b"p"] = b"\x05\x00" + bytes(buf[pos + 2 : pos + 6])
        else:
            pressed.pop(b"p", None)


def full_update_request(width: int, height: int) -> bytes:
    """A non-incremental FramebufferUpdateRequest for the whole framebuffer: the server answers with
    every pixel, which is what a recording's keyframe is."""
    return struct.pack(">BBHHHH", 3, 0, 0, 0, width, height)


class ServerMessageFilter:
    """Frames the server's stream message by message: for a rule that restricts copying out, dropping
    ServerCutText (plain and extended) when copying out is denied or longer than `copy_max` bytes (as
    sent); for a recorded console, telling the recorder where messages start and what the framebuffer
    is (its size, the desktop's name). Only used for such consoles, so others keep their frames passing
    through untouched.

    Framing the server's stream needs the length of every rectangle; the client filter (made with
    `copy_out=False` or `record=True`) rewrites SetEncodings to encodings whose lengths are in their
    headers (COPY_SAFE_ENCODINGS, or RECORDABLE_ENCODINGS), and tells this filter where the handshake
    ends and the pixel size. Anything else from the server is refused rather than passed unread.
    Counted: `copy_denied`, `copy_denied_bytes` (lengths, never content)."""

    __slots__ = (
        "_at_boundary",
        "_client",
        "_copy_max",
        "_pending",
        "_pos",
        "_rects",
        "_skip",
        "_skip_out",
        "_state",
        "boundaries",
        "copy_denied",
        "copy_denied_bytes",
        "height",
        "name",
        "server_init",
        "width",
    )

    def __init__(self, client: ClientMessageFilter, *, copy_max: int | None) -> None:
        """`copy_max` 0: every copy out is denied; None: none is (the stream is framed for recording)."""
        self._client = client
        self._copy_max = copy_max
        self._pos = 0  # server bytes seen
        self._state = _S_INIT
        self._pending = bytearray()
        self._skip = 0  # body bytes still to stream past
        self._skip_out = False  # ... and whether they are dropped
        self._rects = 0  # rectangles left in the current FramebufferUpdate
        self._at_boundary = False  # the stream stands between two server messages (ServerInit included)
        self.copy_denied = 0
        self.copy_denied_bytes = 0
        # Where, in the bytes the last `feed` returned, server messages end (and the next may start), in
        # order: 0 when they begin at one, their length when one ends them. The end of ServerInit is the
        # first; the handshake's end (before ServerInit) is none. Reused by every `feed`.
        self.boundaries: list[int] = []
        self.server_init: bytes | None = None  # ServerInit as the server sent it
        self.width = 0  # the framebuffer's size now: ServerInit's, then the last desktop-size rectangle's
        self.height = 0
        self.name = b""  # the desktop's name now: ServerInit's, then the last DesktopName's

    @property
    def at_boundary(self) -> bool:
        """The bytes forwarded so far end between two server messages (after ServerInit)."""
        return self._at_boundary

    def feed(self, data: bytes) -> bytes:
        """The bytes to forward to the browser; raises RFBProtocolError for what cannot be framed."""
        self.boundaries.clear()
        start = self._pos
        self._pos += len(data)
        end = self._client.server_handshake_end
        if end is None:
            if self._client.server_lost:
                raise RFBProtocolError("the console server's handshake could not be followed")
            return data  # still the handshake, which the client filter follows
        if start + len(data) <= end:
            return data
        head = b""
        if start < end:
            head, data = data[: end - start], data[end - start :]
        pending = self._pending
        if pending:
            pending += data
            buf: bytes | bytearray = pending
        else:
            buf = data
        out: list[tuple[int, int]] = []
        pos = self._parse(buf, out, len(head))
        if buf is pending:
            forward = b"".join(bytes(buf[a:b]) for a, b in out)
            del pending[:pos]
        else:
            if len(out) == 1 and out[0] == (0, len(data)):
                forward = data
            else:
                forward = b"".join(data[a:b] for a, b in out)
            if pos < len(data):
                self._pending = bytearray(data[pos:])
        return head + forward if head else forward

    def _parse(self, buf: bytes | bytearray, out: list[tuple[int, int]], forwarded: int) -> int:
        """Consume whole units (streaming bodies past); `forwarded`: bytes returned ahead of `buf`'s."""
        n = len(buf)
        pos = 0
        bounds = self.boundaries
        if self._at_boundary:
            bounds.append(0)

        def emit(a: int, b: int) -> None:
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))

        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                if not self._skip_out:
                    emit(pos, pos + take)
                    forwarded += take
                pos += take
                self._skip -= take
            else:
                measured = self._measure(buf, pos, n - pos)
                if measured is None:
                    break
                size, drop = measured
                take = min(size, n - pos)
                if not drop:
                    emit(pos, pos + take)
                    forwarded += take
                pos += take
                self._skip, self._skip_out = size - take, drop
            if not self._skip and self._state == _S_MESSAGE and (not bounds or bounds[-1] != forwarded):
                bounds.append(forwarded)
        self._at_boundary = not self._skip and self._state == _S_MESSAGE  # what is held: the next one's
        return pos

    def _measure(self, buf: bytes | bytearray, pos: int, avail: int) -> tuple[int, bool] | None:
        """(length, dropped) of the unit at `pos`, or None until its header is complete."""
        if self._state == _S_INIT:  # ServerInit, read whole: the recorder keeps it
            if avail < 24:
                return None
            size = 24 + int.from_bytes(buf[pos + 20 : pos + 24], "big")
            if size - 24 > _MAX_NAME:
                raise RFBProtocolError("the console server's desktop name is too long to frame")
            if avail < size:
                return None
            self._state = _S_MESSAGE
            self._client.bytes_per_pixel = max(1, buf[pos + 4] // 8)  # until the client sets its own
            self.server_init = bytes(buf[pos : pos + size])
            self.width = (buf[pos] << 8) | buf[pos + 1]
            self.height = (buf[pos + 2] << 8) | buf[pos + 3]
            self.name = self.server_init[24:]
            return size, False
        if self._state == _S_RECT:
            if avail < 12:
                return None
            w = (buf[pos + 4] << 8) | buf[pos + 5]
            h = (buf[pos + 6] << 8) | buf[pos + 7]
            enc = int.from_bytes(buf[pos + 8 : pos + 12], "big", signed=True)
            body = self._rect_body(buf, pos + 12, avail - 12, w, h, enc)
            if body is None:
                return None
            if enc in (_ENC_DESKTOP_SIZE, _ENC_EXT_DESKTOP_SIZE):
                self.width, self.height = w, h
            elif enc == _ENC_DESKTOP_NAME and 4 <= body <= avail - 12:  # kept when it came whole
                self.name = bytes(buf[pos + 16 : pos + 12 + body])
            self._rects -= 1
            if enc == _ENC_LAST_RECT or not self._rects:
                self._state = _S_MESSAGE
            return 12 + body, False
        t = buf[pos]
        if t == 0:  # FramebufferUpdate
            if avail < 4:
                return None
            self._rects = (buf[pos + 2] << 8) | buf[pos + 3]
            if self._rects:
                self._state = _S_RECT
            return 4, False
        if t == 3:  # ServerCutText: dropped as it streams past, never buffered
            if avail < 8:
                return None
            length = abs(int.from_bytes(buf[pos + 4 : pos + 8], "big", signed=True))
            drop = self._copy_max is not None and length > self._copy_max
            if drop:
                self.copy_denied += 1
                self.copy_denied_bytes += length
            return 8 + length, drop
        if t == 1:  # SetColourMapEntries
            if avail < 6:
                return None
            return 6 + 6 * ((buf[pos + 4] << 8) | buf[pos + 5]), False
        if t in (2, 150):  # Bell, EndOfContinuousUpdates
            return 1, False
        if t == 248:  # ServerFence
            if avail < 9:
                return None
            return 9 + buf[pos + 8], False
        if t == 250:  # xvp
            return 4, False
        raise RFBProtocolError(f"server message type {t} cannot be framed")

    def _rect_body(
        self, buf: bytes | bytearray, pos: int, avail: int, w: int, h: int, enc: int
    ) -> int | None:
        if enc not in self._client.framable:
            raise RFBProtocolError(f"rectangle encoding {enc} cannot be framed")
        bpp = self._client.bytes_per_pixel
        if enc == _ENC_RAW:
            return w * h * bpp
        if enc == _ENC_COPYRECT:
            return 4
        if enc in (_ENC_ZRLE, _ENC_DESKTOP_NAME):
            if avail < 4:
                return None
            return 4 + int.from_bytes(buf[pos : pos + 4], "big")
        if enc == _ENC_CURSOR:
            return w * h * bpp + ((w + 7) // 8) * h
        if enc == _ENC_EXT_DESKTOP_SIZE:
            if avail < 1:
                return None
            return 4 + 16 * buf[pos]
        return 0  # pseudo-encodings without data
