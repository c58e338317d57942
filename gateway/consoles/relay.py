"""The relay's asyncio driver: feeds the sockets' and the clock's events to `RelayCore` and carries out
its commands. Every decision is the core's (consoles/relay_core.py); this module only moves bytes.

Two pumps, one per direction, each awaiting its send before reading the next message, so a slow
reader slows its writer instead of growing a queue here. The core's timers run on one loop timer armed
for the core's next Wakeup (a watchdog task exists only while a notice goes out, so an idle console has
no task asleep for its timers), and the keep-alive on the process's one scheduler (consoles/keepalive.py).
`run()` owns the ending: once the core has decided a close, `run()` closes both sides (aborting a
transport whose peer does not take its close frame in time) and waits for its tasks. Downstream frames
pass through unchanged once the core says the server's bytes no longer matter
(consoles/aiohttp_fastpath.py), unless aiohttp is not a checked release or `console.frame_passthrough`
is off; then they go message by message through the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from gateway.consoles import aiohttp_fastpath
from gateway.consoles.codes import CLOSE_GOING_AWAY, CLOSE_INTERNAL, CODES
from gateway.consoles.keepalive import KeepAlive, Watch
from gateway.consoles.relay_core import (
    ABNORMAL,
    CloseInfo,
    CloseSide,
    Command,
    Notice,
    PassThrough,
    RelayCore,
    RelayStats,
    ToBrowser,
    ToUpstream,
    Wakeup,
    clip_reason,
)
from gateway.upstream import peer_address

__all__ = ["Relay"]

log = logging.getLogger("gateway.relay")

_DEFAULT_CLOSE_TIMEOUT: Final = 5.0
_BROWSER: Final = 0  # the keep-alive's side tags
_UPSTREAM: Final = 1


async def _pong(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, data: bytes) -> None:
    """Answer a peer's ping (autoping is off so that the pumps see pongs); a failed write is noticed by
    the next receive."""
    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
        await ws.pong(data)


def _wire_code(code: int) -> int:
    """A code that may appear in a close frame (never 1005/1006/1015, nothing unassigned)."""
    return code if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999 else 1000


class Relay:
    """Bridges one browser WebSocket and one upstream WebSocket, as `core` decides, until either ends."""

    def __init__(
        self,
        browser: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse,
        core: RelayCore,
        *,
        close_timeout: float = _DEFAULT_CLOSE_TIMEOUT,
        max_msg_size: int | None = None,
        keepalive: KeepAlive | None = None,
        keepalive_interval: float = 0.0,
    ) -> None:
        """`max_msg_size` is the limit the upstream connection was opened with; given, downstream frames
        pass through without re-encoding, under that limit. Make the Relay right after the upstream
        opened, before anything awaits, so that it sees the upstream's frames from the first byte on.
        With `keepalive` (and an interval), both sockets are pinged while their peers are silent and a
        peer that stops answering is closed (consoles/keepalive.py); open both sockets with aiohttp's
        heartbeat off and autoping off, so that the pumps see the pongs."""
        self._browser = browser
        self._upstream = upstream
        self._core = core
        self._close_timeout = close_timeout
        self._keepalive = keepalive if keepalive_interval > 0 else None
        self._keepalive_interval = keepalive_interval
        self._watches: tuple[Watch, ...] = ()
        # Messages each pump received (any kind: a pong counts); with the frames passed through, the
        # keep-alive's measure of a peer's life.
        self._heard_browser = 0
        self._heard_upstream = 0
        self._passthrough: aiohttp_fastpath.Passthrough | None = None
        if max_msg_size is not None:
            self._passthrough = aiohttp_fastpath.attach_passthrough(
                browser,
                upstream,
                core.stats,
                max_msg_size,
                browser_gone=lambda: self._apply(core.browser_vanished()),
                upstream_failed=lambda: self._apply(core.upstream_failed()),
            )
        self._end: asyncio.Future[None] | None = None
        self._closes: list[CloseSide] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None  # the core's next Wakeup
        self._started = False
        self.close_info: CloseInfo | None = None  # set once both sides are closed, even if cancelled

    @property
    def stats(self) -> RelayStats:
        return self._core.stats

    @property
    def upstream_address(self) -> str | None:
        """The address the upstream socket is connected to (what the audit records)."""
        return peer_address(self._upstream)

    async def abandon(self) -> None:
        """Nobody will relay this upstream: close it now, rather than leave it and its pings behind."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._upstream.close()

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The relay's own tasks (for tests and shutdown diagnostics)."""
        return tuple(self._tasks)

    def terminate(self, code: int, reason: str) -> None:
        """End the session from the gateway's side (admin, logout, drain); safe to call twice."""
        self._apply(self._core.terminate(code, reason))

    def _apply(self, commands: Sequence[Command]) -> None:
        """Commands from an event outside the pumps: only closes can come from those."""
        for command in commands:
            if type(command) is CloseSide:
                self._closes.append(command)
        if self._closes and self._end is not None and not self._end.done():
            self._end.set_result(None)

    async def run(self) -> CloseInfo:
        if self._started:
            raise RuntimeError("a Relay runs once")
        self._started = True
        loop = asyncio.get_running_loop()
        self._end = loop.create_future()
        core = self._core
        started = core.start(time.monotonic())
        self._apply([c for c in started if type(c) is CloseSide])
        if not self._end.done():  # terminated before it ran: relay nothing
            self._tasks = [
                loop.create_task(self._pump_upstream(), name="relay-upstream-to-browser"),
                loop.create_task(self._pump_browser(), name="relay-browser-to-upstream"),
            ]
            for task in self._tasks:
                task.add_done_callback(self._task_done)
            if core.has_timers:
                self._timers_due(started)
            keepalive, every = self._keepalive, self._keepalive_interval
            if keepalive is not None:
                self._watches = tuple(keepalive.watch(self, side, every) for side in (_BROWSER, _UPSTREAM))
        try:
            await asyncio.shield(self._end)
        except asyncio.CancelledError:
            # The handler is being cancelled (server shutdown): still leave nothing behind.
            self._apply(core.terminate(CLOSE_GOING_AWAY, CODES[CLOSE_GOING_AWAY].reason, upstream_code=1001))
            await self._close_all()
            raise
        return await self._close_all()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("relay task %s failed", task.get_name(), exc_info=exc)
            self._apply(
                self._core.terminate(CLOSE_INTERNAL, CODES[CLOSE_INTERNAL].reason, upstream_code=1011)
            )

    # -- the keep-alive (consoles/keepalive.py) ----------------------------------------------------

    def keepalive_progress(self, side: int) -> int:
        if side == _BROWSER:
            return self._heard_browser
        # Frames passed through count by their bytes, and the pongs the pass-through takes by number.
        passthrough = self._passthrough
        pongs = passthrough.pongs if passthrough is not None else 0
        return self._heard_upstream + self._core.stats.bytes_to_browser + pongs

    def keepalive_ping(self, side: int) -> None:
        ws = self._browser if side == _BROWSER else self._upstream
        if not ws.closed:
            aiohttp_fastpath.ping(ws)

    def keepalive_dead(self, side: int) -> None:
        """The peer answered no ping: end the console as if its connection dropped, and drop it."""
        if self._core.ended is not None:
            return
        log.info("the %s answered no keep-alive ping; closing", "browser" if side == _BROWSER else "upstream")
        if side == _BROWSER:
            self._apply(self._core.browser_vanished())
            aiohttp_fastpath.abort(self._browser)
        else:
            self._apply(self._core.upstream_failed())
            aiohttp_fastpath.abort(self._upstream)

    # -- the pumps ---------------------------------------------------------------------------------

    async def _pump_upstream(self) -> None:
        receive = self._upstream.receive
        send = self._browser.send_bytes
        core = self._core
        upstream_bytes = core.upstream_bytes
        clock = time.monotonic
        binary = WSMsgType.BINARY
        passthrough = self._passthrough
        while True:
            if passthrough is not None and not core.follows_server and passthrough.try_forward():
                passthrough = None  # frames pass through from now on; this pump sees only the rest
            msg = await receive()
            self._heard_upstream += 1
            if msg.type is binary:
                for command in upstream_bytes(msg.data, clock()):
                    if type(command) is ToBrowser:
                        try:
                            await send(command.data)
                        except (ConnectionError, aiohttp.ClientError):
                            return self._apply(core.browser_vanished())
                    elif type(command) is ToUpstream and not await self._inject(command):
                        return None
            elif msg.type is WSMsgType.TEXT or msg.type is WSMsgType.PONG:
                continue  # websockify speaks binary; text frames to the browser are the gateway's
            elif msg.type is WSMsgType.PING:
                await _pong(self._upstream, msg.data)
            elif msg.type is WSMsgType.CLOSE:
                return self._apply(core.upstream_closed(msg.data, msg.extra or ""))
            elif msg.type is WSMsgType.ERROR:
                log.warning("upstream WebSocket error: %s", type(msg.data).__name__)
                return self._apply(core.upstream_failed())
            else:  # CLOSING (we closed it) or CLOSED (vanished without a close frame)
                return self._apply(core.upstream_closed(ABNORMAL, ""))

    async def _pump_browser(self) -> None:
        receive = self._browser.receive
        send = self._upstream.send_bytes
        core = self._core
        browser_bytes = core.browser_bytes
        clock = time.monotonic
        binary = WSMsgType.BINARY
        while True:
            msg = await receive()
            self._heard_browser += 1
            if msg.type is binary:
                commands = browser_bytes(msg.data, clock())
                for command in commands:
                    kind = type(command)
                    if kind is ToUpstream:
                        try:
                            await send(command.data)
                        except (ConnectionError, aiohttp.ClientError):
                            return self._apply(core.upstream_closed(ABNORMAL, ""))
                    elif kind is PassThrough:
                        # The client's reply ended the handshake; the server waits for it, so frames can
                        # pass through from now on (the upstream pump learns only on its next one).
                        if self._passthrough is not None:
                            self._passthrough.try_forward()
                    else:
                        return self._apply(commands)  # the closes after a protocol error
            elif msg.type is WSMsgType.TEXT or msg.type is WSMsgType.PONG:
                continue  # nothing the browser says in text is for the console
            elif msg.type is WSMsgType.PING:
                await _pong(self._browser, msg.data)
            elif msg.type is WSMsgType.CLOSE:
                return self._apply(core.browser_closed(msg.data, msg.extra or ""))
            else:  # CLOSING (we closed it), CLOSED (vanished), ERROR
                return self._apply(core.browser_vanished())

    def _timers_due(self, commands: Sequence[Command]) -> None:
        """The core's answer to the clock. Closes and the next Wakeup are carried out at once (a loop
        timer, not a task sleeping per console); notices and the gateway's own messages upstream must be
        awaited, so only then a short-lived watchdog task runs them, in order, and arms the next one."""
        if any(type(command) is Notice or type(command) is ToUpstream for command in commands):
            self._tasks = [task for task in self._tasks if not task.done()]
            task = asyncio.get_running_loop().create_task(self._watchdog(commands), name="relay-watchdog")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
            return
        for command in commands:
            if type(command) is Wakeup:
                self._wake_at(command.at)
            elif type(command) is CloseSide:
                return self._apply(commands)  # the closes: maximum duration or idle cut
        return None

    def _wake_at(self, at: float) -> None:
        if self._end is not None and not self._end.done():
            delay = max(0.0, at - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self._timers_due(self._core.tick(time.monotonic()))
        except Exception:
            log.exception("relay timer failed")
            reason = CODES[CLOSE_INTERNAL].reason
            self._apply(self._core.terminate(CLOSE_INTERNAL, reason, upstream_code=1011))

    async def _watchdog(self, commands: Sequence[Command]) -> None:
        wake = None
        for command in commands:
            if type(command) is Notice:
                await self._notify(command)
            elif type(command) is Wakeup:
                wake = command.at
            elif type(command) is ToUpstream:
                if not await self._inject(command):
                    return
            else:
                return self._apply(commands)  # the closes: maximum duration or idle cut
        if wake is not None:
            self._wake_at(wake)

    async def notify(self, payload: dict[str, object], within: float = 1.0) -> None:
        """Send the page a gateway notice (a JSON text frame) at any time: who is watching, moderation.
        Advisory: dropped when the browser does not take it within `within` seconds or has gone."""
        if self._end is None or self._end.done():
            return
        await self._notify(Notice(payload, within))

    async def hold_input(self, held: bool, notice: dict[str, object] | None = None) -> None:
        """Hold (or release) the browser's input from now on (a moderation rule; the core decides), send
        upstream the key and button releases holding calls for, then tell the page why."""
        for command in self._core.hold_input(held, notice):  # the switch happens here, before any await
            if type(command) is ToUpstream:
                try:
                    await self._upstream.send_bytes(command.data)
                except (ConnectionError, aiohttp.ClientError):
                    return self._apply(self._core.upstream_closed(ABNORMAL, ""))
            elif type(command) is Notice and self._end is not None and not self._end.done():
                await self._notify(command)

    async def _inject(self, command: ToUpstream) -> bool:
        """A message of the gateway's own to the console (a recording's keyframe request). The core
        gives one only between two client messages: the browser pump forwards whole messages only, and
        a WebSocket frame is written whole, so it never lands inside one. False: the upstream is gone."""
        try:
            await self._upstream.send_bytes(command.data)
        except (ConnectionError, aiohttp.ClientError):
            self._apply(self._core.upstream_closed(ABNORMAL, ""))
            return False
        return True

    async def _notify(self, notice: Notice) -> None:
        """A gateway notice to the page, as a text frame; never blocks the watchdog for long."""
        passthrough = self._passthrough
        if passthrough is not None and passthrough.in_fragmented_message:
            return  # a text frame must not split a fragmented binary message; the notice is advisory
        self._core.noticed(notice.payload, time.monotonic())
        try:
            async with asyncio.timeout(max(0.0, min(notice.within, self._close_timeout))):
                await self._browser.send_str(json.dumps(notice.payload))
        except (TimeoutError, ConnectionError, aiohttp.ClientError):
            pass

    # -- the ending --------------------------------------------------------------------------------

    async def _close_all(self) -> CloseInfo:
        info = self._core.ended
        assert info is not None  # the end is set only once the core decided it
        if self._passthrough is not None:
            self._passthrough.stop_forwarding()
        for watch in self._watches:
            self._keepalive.forget(watch)  # type: ignore[union-attr]
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            if task.get_name() == "relay-watchdog" and not task.done():
                task.cancel()
        sockets = {"browser": self._browser, "upstream": self._upstream}
        # Closing wakes a pump blocked in receive() with CLOSING; a pump blocked in a send is
        # released when its transport closes or, at the latest, by the cancel below.
        await asyncio.gather(*(self._close_side(sockets[c.side], c) for c in self._closes[:2]))
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close_info = info
        stats = self._core.stats
        log.debug(
            "relay ended by %s code=%s up=%s bytes_to_browser=%d bytes_to_upstream=%d dropped=%d",
            info.by,
            info.code,
            info.upstream_code,
            stats.bytes_to_browser,
            stats.bytes_to_upstream,
            stats.dropped,
        )
        return info

    async def _close_side(
        self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, close: CloseSide
    ) -> None:
        if ws.closed:
            return
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close(code=_wire_code(close.code), message=clip_reason(close.reason).encode("utf-8"))
        except TimeoutError:
            log.info("the %s did not complete the close handshake in time; aborting", close.side)
            aiohttp_fastpath.abort(ws)
        except Exception as exc:  # a broken peer must not stop the other side from closing
            log.info("closing the %s failed: %s", close.side, type(exc).__name__)
            aiohttp_fastpath.abort(ws)
