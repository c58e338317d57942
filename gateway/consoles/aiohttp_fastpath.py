"""The one door to aiohttp's private parts. Nothing else in the gateway touches them.

Three things need them, because aiohttp has no public API for them:

- the downstream pass-through: whole binary frames from the console proxy are written to the browser's
  socket as they arrived, header and payload, instead of being decoded into messages and encoded again
  (the upstream connection's payload parser is replaced; the browser's protocol and transport are used
  for writing and for flow control);
- a keep-alive ping written now, without the task aiohttp's coroutine `ping()` would need (`ping`;
  consoles/keepalive.py sends thousands a minute);
- aborting a WebSocket whose peer never takes its close frame, or stopped answering pings (`abort`).

Each is used only when aiohttp is a version it was checked against (`CHECKED`) and the attributes look
as expected; otherwise the relay falls back to aiohttp's public receive/send (correct, only slower), and
`console.frame_passthrough = false` forces that fallback (an escape hatch should an aiohttp upgrade
misbehave). The suite runs the relay and pass-through tests both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from gateway.consoles.frames import CONTROL_OPS, OP_BINARY, OP_CONTINUATION, FrameError, FrameSplitter
from gateway.consoles.relay_core import RelayStats

__all__ = ["CHECKED", "Passthrough", "abort", "attach_passthrough", "ping", "supported"]

log = logging.getLogger("gateway.relay")

# The aiohttp releases (major, minor) whose internals this module was checked against; pyproject.toml's
# range says the same.
CHECKED: Final = frozenset({(3, 14)})
_OP_PONG: Final = 0xA


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def supported(version: str | None = None) -> bool:
    """aiohttp (the running one by default) is a release the private hooks were checked against."""
    try:
        return _release(version or aiohttp.__version__) in CHECKED
    except ValueError:
        return False


class Passthrough:
    """The upstream connection's payload parser from the moment it is attached.

    Until the relay runs it only watches: every chunk still goes to aiohttp's parser, and the
    splitter follows the frame boundaries alongside. It checks that aiohttp completed exactly the
    messages it saw complete; any disagreement (or a frame it refuses) and it steps aside for
    good. `try_forward()` then switches to forwarding, but only between frames with nothing
    queued, so no byte can overtake one already received. Forwarding, binary frames go straight
    to the browser's transport (whole frames only, so aiohttp's own pings and the gateway's
    notices never land inside one); text frames are dropped as before; pongs are counted here for
    the keep-alive (no task wakes for them); other control frames go on to aiohttp's parser. When
    the browser's socket buffer is full the upstream socket stops being read until it drains. The
    relay's counters are kept here for the frames that pass.
    """

    __slots__ = (
        "_aiohttp_parser",
        "_browser_gone",
        "_browser_proto",
        "_closing",
        "_failed",
        "_last_opcode",
        "_queue",
        "_resume_task",
        "_stats",
        "_transport",
        "_upstream_failed",
        "_upstream_proto",
        "forwarding",
        "pongs",
        "splitter",
        "stepped_aside",
    )

    def __init__(
        self,
        hooks: _Hooks,
        stats: RelayStats,
        max_msg_size: int,
        *,
        browser_gone: Callable[[], None],
        upstream_failed: Callable[[], None],
    ) -> None:
        self._aiohttp_parser = hooks.parser
        self._queue = hooks.queue
        self._upstream_proto = hooks.upstream_proto
        self._browser_proto = hooks.browser_proto
        self._transport = hooks.browser_transport
        self._stats = stats
        self._browser_gone = browser_gone
        self._upstream_failed = upstream_failed
        self._resume_task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False
        self._last_opcode = OP_BINARY
        self.splitter = FrameSplitter(max_msg_size)
        self.forwarding = False
        self.stepped_aside = False
        self.pongs = 0  # pongs taken here while forwarding (the keep-alive counts them as the peer's life)

    @property
    def in_fragmented_message(self) -> bool:
        """Forwarding is inside a fragmented binary message: no text frame may go to the browser now."""
        return self.forwarding and self.splitter.in_fragmented_message

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
            self._upstream_failed()
            return False, b""
        stats = self._stats
        out: list[bytes | memoryview] = []
        # Frames forwarded back to back are one span of the chunk: one write, not one per frame.
        span_start = span_end = -1
        for opcode, fin, length, pieces, start, end in frames:
            if opcode in CONTROL_OPS:
                if opcode == _OP_PONG:
                    self.pongs += 1  # nothing for aiohttp to do with it: no pump wakes up per keep-alive pong
                else:
                    self._aiohttp_parser.feed_data(data[start:end] if pieces is None else b"".join(pieces))
                continue
            kind = self._last_opcode if opcode == OP_CONTINUATION else opcode
            self._last_opcode = kind
            if kind != OP_BINARY or self._closing:
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
                self._browser_gone()
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
            # Shielded: aiohttp's drain waiter is one future shared with every writer of the socket, and
            # cancelling this task (stop_forwarding) must not cancel the browser's close() waiting on it.
            await asyncio.shield(self._browser_proto._drain_helper())
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
    """aiohttp's parts the pass-through needs, or None when anything is not as expected."""
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


def attach_passthrough(
    browser: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    stats: RelayStats,
    max_msg_size: int,
    *,
    browser_gone: Callable[[], None],
    upstream_failed: Callable[[], None],
) -> Passthrough | None:
    """Put a Passthrough in as the upstream connection's payload parser, or None (then the relay uses
    receive/send). Call it right after the upstream opened, before anything awaits, so that it sees
    the upstream's frames from the first byte on."""
    if not supported():
        log.info("frame pass-through off: aiohttp %s is not a checked release", aiohttp.__version__)
        return None
    hooks = _hooks(browser, upstream)
    if hooks is None:
        log.info("frame pass-through unavailable with this aiohttp; relaying message by message")
        return None
    passthrough = Passthrough(
        hooks, stats, max_msg_size, browser_gone=browser_gone, upstream_failed=upstream_failed
    )
    hooks.upstream_proto._payload_parser = passthrough  # type: ignore[attr-defined]
    return passthrough


def ping(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    """Write a ping frame now. aiohttp's `ping()` is a coroutine, so each ping would need a task; its
    writer's frame method is synchronous for an uncompressed control frame (masking included on the
    client side). Public fallback: a task running `ws.ping()`. A failed write is left to the pumps,
    which see the connection end."""
    writer = getattr(ws, "_writer", None)
    write = getattr(writer, "_write_websocket_frame", None)
    if supported() and callable(write) and getattr(writer, "_closing", None) is False:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            write(b"", WSMsgType.PING, 0)
        return
    asyncio.get_running_loop().create_task(ws.ping()).add_done_callback(_ignore_failure)


def _ignore_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed ping is the pumps' to notice


def abort(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    """Drop the TCP connection now: close() waits for the peer to take queued bytes, forever if it never
    reads. aiohttp exposes no public abort, so reach the writer's transport (public fallback: none; the
    caller has already given up waiting)."""
    transport = getattr(getattr(ws, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()
