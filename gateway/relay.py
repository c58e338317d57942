"""The bridge between the browser's WebSocket and the console proxy's: the hot path.

Two pumps, one per direction, each awaiting its send before reading the next message, so a slow
reader slows its writer instead of growing a queue here. Timers live in one watchdog task; per
message the only timer work is storing a float. `run()` owns the ending: the first pump, the
watchdog or `terminate()` to report decides the close codes, and `run()` then closes both sides
(aborting a transport whose peer does not take its close frame in time) and waits for its tasks.

Downstream (console to browser) is where the bytes are, and it needs no RFB filtering: once the
RFB handshake no longer depends on the server's side (the filter reads it, `feed_server`), whole
binary frames from the console proxy are written to the browser's socket as they arrived, header
and payload, without being decoded into messages and encoded again (a server frame to a client is
the same bytes on both hops). Control frames still go to aiohttp, so pings, close handshakes and
errors behave as before. `FrameSplitter` is the sans-IO part; it is used only when aiohttp's
internals look as expected, else the relay falls back to receive/send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from gateway.consoles.codes import (
    CLOSE_IDLE,
    CLOSE_INTERNAL,
    CLOSE_LINK_EXPIRED,
    CLOSE_MAX_DURATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UPSTREAM_CODE,
    CLOSE_UPSTREAM_LOST,
    CODES,
    REASON_EXPIRED,
    REASON_LOST,
    REASON_MAX_DURATION,
    REASON_PROTOCOL,
)
from gateway.rfb import ClientMessageFilter, RFBProtocolError

__all__ = [
    "CLOSE_IDLE",
    "CLOSE_INTERNAL",
    "CLOSE_LINK_EXPIRED",
    "CLOSE_MAX_DURATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UPSTREAM_CODE",
    "CLOSE_UPSTREAM_LOST",
    "REASON_EXPIRED",
    "REASON_LOST",
    "CloseInfo",
    "FrameError",
    "FrameSplitter",
    "Relay",
    "RelayStats",
    "browser_close_for_upstream",
]

log = logging.getLogger(__name__)

_ABNORMAL: Final = 1006
_NO_STATUS: Final = 1005
# Codes a server may put in a close frame that still mean the same thing to the browser.
_SENDABLE_STANDARD: Final = frozenset({1000, 1001, 1003, 1007, 1008, 1009, 1010, 1011})
_MAX_REASON_BYTES: Final = 123
_DEFAULT_CLOSE_TIMEOUT: Final = 5.0


def _sendable(code: int) -> bool:
    return code in _SENDABLE_STANDARD or 3000 <= code <= 4999


def _wire_code(code: int) -> int:
    """A code that may appear in a close frame (never 1005/1006/1015, nothing unassigned)."""
    return code if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999 else 1000


def _clip_reason(reason: str) -> str:
    raw = reason.encode("utf-8")
    if len(raw) <= _MAX_REASON_BYTES:
        return reason
    return raw[:_MAX_REASON_BYTES].decode("utf-8", "ignore")


def browser_close_for_upstream(code: int, reason: str, *, upstream_spoke: bool) -> tuple[int, str]:
    """What the browser is told when the upstream ended with `code` (1006: no close frame).

    Nova checks the token only after the 101, so an abrupt end before the first upstream byte
    means the one-time link was spent or stale; later it means the console went away.
    """
    if code == _ABNORMAL:
        return (CLOSE_UPSTREAM_LOST, REASON_LOST) if upstream_spoke else (CLOSE_LINK_EXPIRED, REASON_EXPIRED)
    if code in (0, _NO_STATUS):
        return 1000, ""
    if _sendable(code):
        return code, _clip_reason(reason)
    return CLOSE_UPSTREAM_CODE, f"{CODES[CLOSE_UPSTREAM_CODE].reason} (code {code})"


def _idle_reason(seconds: float) -> str:
    if seconds >= 60:
        minutes = seconds / 60
        text = f"{minutes:.0f}" if minutes == int(minutes) else f"{minutes:.1f}"
        return f"Closed after {text} minute{'' if text == '1' else 's'} without input"
    return f"Closed after {seconds:g} seconds without input"


class FrameError(ValueError):
    """The console proxy's byte stream is not a valid server-to-client WebSocket stream."""


_OP_CONTINUATION: Final = 0x0
_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2
_CONTROL_OPS: Final = frozenset({0x8, 0x9, 0xA})
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
        if opcode in _CONTROL_OPS:
            if not fin or length > 125:
                raise FrameError("fragmented or over-long control frame")
            return
        if opcode == _OP_CONTINUATION:
            if self._opcode == -1:
                raise FrameError("continuation frame without a message to continue")
            self._size += length
        elif opcode in (_OP_TEXT, _OP_BINARY):
            if self._opcode != -1:
                raise FrameError("new message inside a fragmented message")
            self._size = length
            if not fin:
                self._opcode = opcode
        else:
            raise FrameError(f"unknown opcode {opcode}")
        if self._size > self._max:
            raise FrameError("message larger than the limit")
        if fin and opcode == _OP_CONTINUATION:
            self._opcode = -1


class _Passthrough:
    """The upstream connection's payload parser from the moment the Relay is made.

    Until the relay runs it only watches: every chunk still goes to aiohttp's parser, and the
    splitter follows the frame boundaries alongside. It checks that aiohttp completed exactly the
    messages it saw complete; any disagreement (or a frame it refuses) and it steps aside for
    good. `try_forward()` then switches to forwarding, but only between frames with nothing
    queued, so no byte can overtake one already received. Forwarding, binary frames go straight
    to the browser's transport (whole frames only, so aiohttp's own pings and the gateway's
    notices never land inside one); text frames are dropped as before; control frames go on to
    aiohttp's parser. When the browser's socket buffer is full the upstream socket stops being
    read until it drains.
    """

    __slots__ = (
        "_aiohttp_parser",
        "_browser_proto",
        "_closing",
        "_failed",
        "_last_opcode",
        "_queue",
        "_relay",
        "_resume_task",
        "_transport",
        "_upstream_proto",
        "forwarding",
        "splitter",
        "stepped_aside",
    )

    def __init__(self, relay: Relay, hooks: _Hooks, max_msg_size: int) -> None:
        self._relay = relay
        self._aiohttp_parser = hooks.parser
        self._queue = hooks.queue
        self._upstream_proto = hooks.upstream_proto
        self._browser_proto = hooks.browser_proto
        self._transport = hooks.browser_transport
        self._resume_task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False
        self._last_opcode = _OP_BINARY
        self.splitter = FrameSplitter(max_msg_size)
        self.forwarding = False
        self.stepped_aside = False

    def try_forward(self) -> bool:
        if (
            not self.forwarding
            and not self.stepped_aside
            and not self._queue._buffer
            and self.splitter.at_boundary
        ):
            self.forwarding = True
        return self.forwarding

    def stop_forwarding(self) -> None:
        """The relay is ending: no more data frames to the browser (a close frame is coming)."""
        self._closing = True
        if self._resume_task is not None:
            self._resume_task.cancel()

    def feed_eof(self) -> None:
        self._aiohttp_parser.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self.forwarding:
            return self._watch(data)
        if self._failed:
            return False, b""
        try:
            data, frames = self.splitter.feed(data)
        except FrameError as exc:
            self._failed = True
            log.warning("upstream WebSocket error: %s", exc)
            self._relay._finish_with(CloseInfo("upstream", CLOSE_UPSTREAM_LOST, REASON_LOST, _ABNORMAL))
            return False, b""
        stats = self._relay.stats
        out: list[bytes | memoryview] = []
        # Frames forwarded back to back are one span of the chunk: one write, not one per frame.
        span_start = span_end = -1
        for opcode, fin, length, pieces, start, end in frames:
            if opcode in _CONTROL_OPS:
                self._aiohttp_parser.feed_data(data[start:end] if pieces is None else b"".join(pieces))
                continue
            kind = self._last_opcode if opcode == _OP_CONTINUATION else opcode
            self._last_opcode = kind
            if kind != _OP_BINARY or self._closing:
                continue  # websockify speaks binary; text frames to the browser are the gateway's
            if pieces is None:
                if start != span_end:
                    if span_end > 0:
                        out.append(memoryview(data)[span_start:span_end])
                    span_start = start
                span_end = end
            else:
                out.extend(pieces)
            stats.bytes_to_browser += length
            if fin:
                stats.msgs_to_browser += 1
        if span_end > 0:
            out.append(
                data if span_start == 0 and span_end == len(data) else memoryview(data)[span_start:span_end]
            )
        if out:
            transport = self._transport
            if transport.is_closing():
                self._closing = True
                self._relay._finish_with(CloseInfo("browser", _ABNORMAL, "", 1001))
            elif len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
        if self._browser_proto._paused and self._resume_task is None and not self._closing:
            self._upstream_proto._pause_reading_for_buffer()
            self._resume_task = asyncio.get_running_loop().create_task(self._resume_when_drained())
        return False, b""

    def _watch(self, data: bytes) -> tuple[bool, bytes]:
        if self.stepped_aside:
            return self._aiohttp_parser.feed_data(data)
        before = len(self._queue._buffer)
        try:
            complete = sum(1 for frame in self.splitter.feed(data)[1] if frame[1])
        except FrameError:
            complete = -1
        result = self._aiohttp_parser.feed_data(data)
        if complete != len(self._queue._buffer) - before:
            self.stepped_aside = True
            log.info("frame pass-through disabled for this console: the upstream stream was not aligned")
        return result

    async def _resume_when_drained(self) -> None:
        try:
            await self._browser_proto._drain_helper()
        except Exception:  # noqa: S110 - the browser is gone; its pump reports that
            pass
        finally:
            self._resume_task = None
            self._upstream_proto._resume_reading_for_buffer()


@dataclass(frozen=True, slots=True)
class _Hooks:
    parser: object  # aiohttp's WebSocketReader for the upstream
    queue: object  # the queue it fills, which receive() reads
    upstream_proto: object  # aiohttp's ResponseHandler
    browser_proto: object  # aiohttp's RequestHandler
    browser_transport: asyncio.Transport


def _hooks(browser: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> _Hooks | None:
    """aiohttp's parts the pass-through needs, or None when anything is not as expected (then the
    relay uses receive/send: correct, only slower)."""
    try:
        conn = upstream._conn
        upstream_proto = conn.protocol if conn is not None else None
        parser = upstream._parser
        queue = upstream._reader
        queue._buffer  # noqa: B018 - public on aiohttp's queue; checked here, used per chunk
        browser_proto = browser._writer.protocol  # type: ignore[union-attr]
        browser_transport = browser._writer.transport  # type: ignore[union-attr]
    except AttributeError:
        return None
    if (
        upstream_proto is None
        or parser is None
        or getattr(upstream_proto, "_payload_parser", None) is not parser
        or upstream.compress
        or browser.compress
        or browser_transport is None
        or browser_transport.is_closing()
        or not all(
            hasattr(upstream_proto, name)
            for name in ("_pause_reading_for_buffer", "_resume_reading_for_buffer")
        )
        or not hasattr(browser_proto, "_drain_helper")
        or not hasattr(browser_proto, "_paused")
    ):
        return None
    return _Hooks(parser, queue, upstream_proto, browser_proto, browser_transport)


@dataclass(slots=True)
class RelayStats:
    bytes_to_browser: int = 0
    bytes_to_upstream: int = 0
    msgs_to_browser: int = 0
    msgs_to_upstream: int = 0
    dropped: int = 0  # client messages the view-only filter dropped
    started: float = field(default_factory=time.monotonic)
    last_input: float = 0.0  # time.monotonic() of the last key/pointer/clipboard message

    def __post_init__(self) -> None:
        if not self.last_input:
            self.last_input = self.started


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a relay ended. `code`/`reason` are what the browser sent (by="browser") or was sent."""

    by: str  # "browser" | "upstream" | "gateway"
    code: int
    reason: str
    upstream_code: int | None = None  # what the upstream sent, or was sent; 1006 if it vanished


class Relay:
    """Bridges one browser WebSocket and one upstream WebSocket until either ends."""

    def __init__(
        self,
        browser: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse,
        *,
        client_filter: ClientMessageFilter,
        idle_timeout: float | None,
        idle_warning: float | None,
        max_duration: float | None,
        close_timeout: float = _DEFAULT_CLOSE_TIMEOUT,
        max_msg_size: int | None = None,
    ) -> None:
        """`max_msg_size` is the limit the upstream connection was opened with; given, downstream
        frames are passed through without re-encoding (the module docstring), under that limit.
        Make the Relay right after the upstream opened, before anything awaits, so that it sees
        the upstream's frames from the first byte on."""
        for name, value in (("idle_timeout", idle_timeout), ("max_duration", max_duration)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if idle_warning is not None and idle_warning <= 0:
            raise ValueError("idle_warning must be positive")
        if idle_timeout is None:
            idle_warning = None  # nothing to warn about
        elif idle_warning is not None:
            idle_warning = min(idle_warning, idle_timeout)  # longer than the timeout: warn at once
        self._browser = browser
        self._upstream = upstream
        self._filter = client_filter
        self._idle_timeout = idle_timeout
        self._idle_warning = idle_warning
        self._max_duration = max_duration
        self._close_timeout = close_timeout
        self._passthrough: _Passthrough | None = None
        if max_msg_size is not None:
            # Now, before the event loop runs again: it must see the upstream's frames from the first.
            hooks = _hooks(browser, upstream)
            if hooks is None:
                log.info("frame pass-through unavailable with this aiohttp; relaying message by message")
            else:
                self._passthrough = _Passthrough(self, hooks, max_msg_size)
                hooks.upstream_proto._payload_parser = self._passthrough  # type: ignore[attr-defined]
        self.stats = RelayStats()
        self._end: asyncio.Future[CloseInfo] | None = None
        self._early_end: CloseInfo | None = None
        self._tasks: list[asyncio.Task[CloseInfo | None]] = []
        self._started = False
        self.close_info: CloseInfo | None = None  # set once both sides are closed, even if cancelled

    # -- control ---------------------------------------------------------------------------

    def terminate(self, code: int, reason: str) -> None:
        """End the session from the gateway's side (admin, logout, drain); safe to call twice."""
        self._finish_with(CloseInfo("gateway", code, _clip_reason(reason), 1000))

    def _finish_with(self, info: CloseInfo) -> None:
        if self._end is None:
            if self._early_end is None:
                self._early_end = info
        elif not self._end.done():
            self._end.set_result(info)

    @property
    def tasks(self) -> tuple[asyncio.Task[CloseInfo | None], ...]:
        """The relay's own tasks (for tests and shutdown diagnostics)."""
        return tuple(self._tasks)

    async def run(self) -> CloseInfo:
        if self._started:
            raise RuntimeError("a Relay runs once")
        self._started = True
        loop = asyncio.get_running_loop()
        self._end = loop.create_future()
        if self._early_end is not None:
            self._end.set_result(self._early_end)
        self.stats.started = self.stats.last_input = time.monotonic()
        if self._early_end is None:  # terminated before it ran: relay nothing
            self._tasks = [
                loop.create_task(self._pump_upstream(), name="relay-upstream-to-browser"),
                loop.create_task(self._pump_browser(), name="relay-browser-to-upstream"),
            ]
            if self._idle_timeout is not None or self._max_duration is not None:
                self._tasks.append(loop.create_task(self._watchdog(), name="relay-watchdog"))
            for task in self._tasks:
                task.add_done_callback(self._task_done)
        try:
            info = await asyncio.shield(self._end)
        except asyncio.CancelledError:
            # The handler is being cancelled (server shutdown): still leave nothing behind.
            info = CloseInfo("gateway", 1001, CODES[1001].reason, 1001)
            await self._close_all(info)
            raise
        return await self._close_all(info)

    def _task_done(self, task: asyncio.Task[CloseInfo | None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("relay task %s failed", task.get_name(), exc_info=exc)
            self._finish_with(CloseInfo("gateway", CLOSE_INTERNAL, CODES[CLOSE_INTERNAL].reason, 1011))
            return
        info = task.result()
        if info is not None:
            self._finish_with(info)

    # -- the pumps -------------------------------------------------------------------------

    async def _pump_upstream(self) -> CloseInfo:
        receive = self._upstream.receive
        send = self._browser.send_bytes
        stats = self.stats
        binary = WSMsgType.BINARY
        passthrough = self._passthrough
        # The filter follows the server's side of the RFB handshake (it decides what the client
        # may send next), fed before the browser sees it; then never again, and frames pass through.
        filt = self._filter
        follow_server: Callable[[bytes], bool] | None = filt.feed_server
        while True:
            if follow_server is not None and not filt.follows_server:
                follow_server = None
            if passthrough is not None and follow_server is None and passthrough.try_forward():
                passthrough = None
            msg = await receive()
            if msg.type is binary:
                data = msg.data
                if follow_server is not None:
                    follow_server(data)
                try:
                    await send(data)
                except (ConnectionError, aiohttp.ClientError):
                    return CloseInfo("browser", _ABNORMAL, "", 1001)
                stats.bytes_to_browser += len(data)
                stats.msgs_to_browser += 1
            elif msg.type is WSMsgType.TEXT:
                continue  # websockify speaks binary; text frames to the browser are the gateway's
            elif msg.type is WSMsgType.CLOSE:
                code, reason = browser_close_for_upstream(
                    msg.data, msg.extra or "", upstream_spoke=stats.bytes_to_browser > 0
                )
                return CloseInfo("upstream", code, reason, msg.data)
            elif msg.type is WSMsgType.ERROR:
                # A broken frame or an over-long message: the link is bad, not the token.
                log.warning("upstream WebSocket error: %s", type(msg.data).__name__)
                return CloseInfo("upstream", CLOSE_UPSTREAM_LOST, REASON_LOST, _ABNORMAL)
            else:  # CLOSING (we closed it) or CLOSED (vanished without a close frame)
                code, reason = browser_close_for_upstream(
                    _ABNORMAL, "", upstream_spoke=stats.bytes_to_browser > 0
                )
                return CloseInfo("upstream", code, reason, _ABNORMAL)

    async def _pump_browser(self) -> CloseInfo:
        receive = self._browser.receive
        send = self._upstream.send_bytes
        filt = self._filter
        feed = filt.feed
        handshake = True
        stats = self.stats
        binary = WSMsgType.BINARY
        monotonic = time.monotonic
        while True:
            msg = await receive()
            if msg.type is binary:
                data = msg.data
                try:
                    result = feed(data)
                except RFBProtocolError as exc:
                    log.warning("closing a console session on a client protocol error: %s", exc)
                    return CloseInfo("gateway", CLOSE_PROTOCOL_ERROR, REASON_PROTOCOL, 1000)
                if handshake and not filt.follows_server:
                    # The client's reply ended the handshake; the server waits for it, so frames
                    # can pass through from now on (the upstream pump learns only on its next one).
                    handshake = False
                    if self._passthrough is not None:
                        self._passthrough.try_forward()
                if result.input_events:
                    stats.last_input = monotonic()
                if result.dropped:
                    stats.dropped += result.dropped
                forward = result.forward
                if forward or not data:
                    try:
                        await send(forward)
                    except (ConnectionError, aiohttp.ClientError):
                        code, reason = browser_close_for_upstream(
                            _ABNORMAL, "", upstream_spoke=stats.bytes_to_browser > 0
                        )
                        return CloseInfo("upstream", code, reason, _ABNORMAL)
                    stats.bytes_to_upstream += len(forward)
                    stats.msgs_to_upstream += 1
            elif msg.type is WSMsgType.TEXT:
                continue  # nothing the browser says in text is for the console
            elif msg.type is WSMsgType.CLOSE:
                code = msg.data if isinstance(msg.data, int) else 0
                up = code if code in (1000, 1001) or 3000 <= code <= 4999 else 1000
                return CloseInfo("browser", code or _NO_STATUS, msg.extra or "", up)
            else:  # CLOSING (we closed it), CLOSED (vanished), ERROR
                return CloseInfo("browser", _ABNORMAL, "", 1001)

    async def _watchdog(self) -> CloseInfo:
        stats = self.stats
        idle_timeout = self._idle_timeout
        idle_warning = self._idle_warning
        max_end = None if self._max_duration is None else stats.started + self._max_duration
        warned_for: float | None = None
        while True:
            now = time.monotonic()
            wake = math.inf
            if max_end is not None:
                if now >= max_end:
                    return CloseInfo("gateway", CLOSE_MAX_DURATION, REASON_MAX_DURATION, 1000)
                wake = max_end
            if idle_timeout is not None:
                last = stats.last_input
                deadline = last + idle_timeout
                if now >= deadline:
                    return CloseInfo("gateway", CLOSE_IDLE, _idle_reason(idle_timeout), 1000)
                wake = min(wake, deadline)
                if idle_warning is not None:
                    warn_at = deadline - idle_warning
                    if now < warn_at:
                        wake = min(wake, warn_at)
                    elif warned_for != last:
                        warned_for = last
                        await self._notify(
                            {"type": "idle_warning", "seconds_left": math.ceil(deadline - now)},
                            deadline - now,
                        )
                        continue
            await asyncio.sleep(wake - now)

    async def _notify(self, notice: dict[str, object], within: float) -> None:
        """A gateway notice to the page, as a text frame; never blocks the watchdog for long."""
        passthrough = self._passthrough
        if passthrough is not None and passthrough.forwarding and passthrough.splitter.in_fragmented_message:
            return  # a text frame must not split a fragmented binary message; the notice is advisory
        with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
            async with asyncio.timeout(max(0.0, min(within, self._close_timeout))):
                await self._browser.send_str(json.dumps(notice))

    # -- the ending ------------------------------------------------------------------------

    async def _close_all(self, info: CloseInfo) -> CloseInfo:
        if self._passthrough is not None:
            self._passthrough.stop_forwarding()
        for task in self._tasks:
            if task.get_name() == "relay-watchdog" and not task.done():
                task.cancel()
        if info.by == "browser":
            browser_code, browser_reason = 1000, ""  # only answers the browser's own close
        else:
            browser_code, browser_reason = info.code, info.reason
        upstream_code = info.upstream_code if info.upstream_code is not None else 1000
        upstream_reason = info.reason if info.by == "browser" else ""
        # Closing wakes a pump blocked in receive() with CLOSING; a pump blocked in a send is
        # released when its transport closes or, at the latest, by the cancel below.
        await asyncio.gather(
            self._close_side(self._browser, browser_code, browser_reason, "browser"),
            self._close_side(self._upstream, upstream_code, upstream_reason, "upstream"),
        )
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close_info = info
        log.debug(
            "relay ended by %s code=%s up=%s bytes_to_browser=%d bytes_to_upstream=%d dropped=%d",
            info.by,
            info.code,
            info.upstream_code,
            self.stats.bytes_to_browser,
            self.stats.bytes_to_upstream,
            self.stats.dropped,
        )
        return info

    async def _close_side(
        self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, code: int, reason: str, side: str
    ) -> None:
        if ws.closed:
            return
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close(code=_wire_code(code), message=_clip_reason(reason).encode("utf-8"))
        except TimeoutError:
            log.info("the %s did not complete the close handshake in time; aborting", side)
            _abort(ws)
        except Exception as exc:  # a broken peer must not stop the other side from closing
            log.info("closing the %s failed: %s", side, type(exc).__name__)
            _abort(ws)


def _abort(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    """Drop the TCP connection now: close() waits for the peer to take queued bytes, forever if
    it never reads. aiohttp exposes no public abort, so reach the writer's transport."""
    transport = getattr(getattr(ws, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()
