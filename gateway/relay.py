"""The bridge between the browser's WebSocket and the console proxy's: the hot path.

Two pumps, one per direction, each awaiting its send before reading the next message, so a slow
reader slows its writer instead of growing a queue here. Timers live in one watchdog task; per
message the only timer work is storing a float. `run()` owns the ending: the first pump, the
watchdog or `terminate()` to report decides the close codes, and `run()` then closes both sides
(aborting a transport whose peer does not take its close frame in time) and waits for its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from gateway.rfb import ClientMessageFilter, RFBProtocolError

__all__ = [
    "CLOSE_EXPIRED",
    "CLOSE_IDLE",
    "CLOSE_INTERNAL",
    "CLOSE_MAX_DURATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UPSTREAM_CODE",
    "CLOSE_UPSTREAM_LOST",
    "CloseInfo",
    "Relay",
    "RelayStats",
    "browser_close_for_upstream",
]

log = logging.getLogger(__name__)

CLOSE_PROTOCOL_ERROR: Final = 4400
CLOSE_IDLE: Final = 4408
CLOSE_MAX_DURATION: Final = 4409
CLOSE_EXPIRED: Final = 4410
CLOSE_UPSTREAM_CODE: Final = 4500  # the upstream closed with a code that is not ours to repeat
CLOSE_UPSTREAM_LOST: Final = 4502
CLOSE_INTERNAL: Final = 1011

REASON_EXPIRED: Final = "The console link expired or was already used; reconnect for a new one"
REASON_LOST: Final = "The console connection was lost"
REASON_MAX_DURATION: Final = "The console reached its maximum duration"
REASON_PROTOCOL: Final = "protocol error"

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
        return (CLOSE_UPSTREAM_LOST, REASON_LOST) if upstream_spoke else (CLOSE_EXPIRED, REASON_EXPIRED)
    if code in (0, _NO_STATUS):
        return 1000, ""
    if _sendable(code):
        return code, _clip_reason(reason)
    return CLOSE_UPSTREAM_CODE, f"The console proxy closed the connection (code {code})"


def _idle_reason(seconds: float) -> str:
    if seconds >= 60:
        minutes = seconds / 60
        text = f"{minutes:.0f}" if minutes == int(minutes) else f"{minutes:.1f}"
        return f"Closed after {text} minute{'' if text == '1' else 's'} without input"
    return f"Closed after {seconds:g} seconds without input"


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
    ) -> None:
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
            info = CloseInfo("gateway", 1001, "The gateway is shutting down", 1001)
            await self._close_all(info)
            raise
        return await self._close_all(info)

    def _task_done(self, task: asyncio.Task[CloseInfo | None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("relay task %s failed", task.get_name(), exc_info=exc)
            self._finish_with(CloseInfo("gateway", CLOSE_INTERNAL, "Internal gateway error", 1011))
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
        while True:
            msg = await receive()
            if msg.type is binary:
                data = msg.data
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
        feed = self._filter.feed
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
        with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
            async with asyncio.timeout(max(0.0, min(within, self._close_timeout))):
                await self._browser.send_str(json.dumps(notice))

    # -- the ending ------------------------------------------------------------------------

    async def _close_all(self, info: CloseInfo) -> CloseInfo:
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
