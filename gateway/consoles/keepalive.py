"""Keep-alive for every console's two WebSockets, from one timer per process.

aiohttp's own heartbeat costs, per socket, a timer re-armed on every received chunk and a task per ping;
at 10,000 idle consoles (20,000 sockets) that was a quarter of a core. Here one `KeepAlive` per process
(the Gateway's) looks at each socket about twice per interval and writes a ping only to a socket whose
peer has said nothing for the interval; a socket that carried traffic from its peer needs no ping.

The rules (`KeepAlivePolicy`, sans-IO: a clock value in, which sockets to ping and which peers are dead
out; tests/unit/test_keepalive.py runs them on a fake clock):

- A socket's progress is a number its owner bumps whenever the peer sends anything (data, a pong, a
  ping). The policy only compares it with what it saw at its last look.
- Progress since the last look: the peer is alive; look again half an interval later.
- No progress for `interval` since the peer was last heard: send a ping, look again after `timeout`
  (half the interval, as aiohttp). Progress by then (the pong) counts as heard at the ping, so an idle
  live socket is pinged once per interval.
- A ping outstanding and still no progress at the look after it: the peer is dead; its owner closes it.

Bounds (with `interval` = `console.keepalive`): an idle socket carries a ping and its pong at least every
interval, and any socket is silent on the wire for at most 1.5 intervals (the most a reverse proxy's idle
timeout then has to allow); a peer that stops answering is declared dead between 1.5 and 2 intervals after
the last byte it sent. Looks fall on a grid of `resolution` seconds (at most that much later).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["KeepAlive", "KeepAlivePeer", "KeepAlivePolicy", "Watch"]

log = logging.getLogger("gateway.relay")

DEFAULT_RESOLUTION: Final = 0.25


class Watch:
    """One watched socket: `key` (its owner) and `side` say which; the rest is the policy's."""

    __slots__ = ("heard_at", "interval", "key", "mark", "ping_at", "side", "watching")

    def __init__(self, key: object, side: int, interval: float, now: float, mark: int) -> None:
        self.key = key
        self.side = side
        self.interval = interval
        self.mark = mark
        self.heard_at = now
        self.ping_at: float | None = None
        self.watching = True


class KeepAlivePolicy:
    """When to look at each watched socket, and what each look decides. Watches wait in slots of
    `resolution` seconds (a dict of lists plus a heap of the slot numbers in use), so a look costs a
    few attribute reads and forgetting a socket costs nothing until its slot comes up."""

    __slots__ = ("_heap", "_resolution", "_slots")

    def __init__(self, resolution: float = DEFAULT_RESOLUTION) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self._resolution = resolution
        self._slots: dict[int, list[Watch]] = {}
        self._heap: list[int] = []

    def watch(self, key: object, side: int, interval: float, now: float, mark: int) -> Watch:
        """Start watching a socket whose progress is `mark` now; its first ping is due after `interval`."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        watch = Watch(key, side, interval, now, mark)
        self._put(watch, now + interval / 2)
        return watch

    @staticmethod
    def forget(watch: Watch) -> None:
        """Stop watching. The record leaves its slot when the slot comes up, up to an interval later; its
        owner (a relay, with its sockets and buffers) is let go now."""
        watch.watching = False
        watch.key = None

    def next_due(self) -> float | None:
        """The time of the next look, or None when nothing waits."""
        return self._heap[0] * self._resolution if self._heap else None

    def __len__(self) -> int:
        """Watches still in slots, forgotten ones included (they leave when their slot comes up)."""
        return sum(len(watches) for watches in self._slots.values())

    def due(self, now: float, progress: Callable[[Watch], int]) -> tuple[list[Watch], list[Watch]]:
        """Look at every watch due by `now`: (the sockets to ping now, the peers found dead). A dead
        peer's watch is dropped; the others wait for their next look."""
        pings: list[Watch] = []
        dead: list[Watch] = []
        heap, slots = self._heap, self._slots
        last = math.floor(now / self._resolution + 1e-9)
        while heap and heap[0] <= last:
            for watch in slots.pop(heapq.heappop(heap)):
                if not watch.watching:
                    continue
                mark = progress(watch)
                interval = watch.interval
                if mark != watch.mark:
                    watch.mark = mark
                    pinged = watch.ping_at
                    if pinged is not None:  # answered: the wire carried the ping and its pong then
                        watch.ping_at = None
                        watch.heard_at = pinged
                        self._put(watch, pinged + interval)
                    else:
                        watch.heard_at = now
                        self._put(watch, now + interval / 2)
                elif watch.ping_at is not None:
                    watch.watching = False
                    dead.append(watch)
                elif now - watch.heard_at >= interval - 1e-9:
                    watch.ping_at = now
                    pings.append(watch)
                    self._put(watch, now + interval / 2)
                else:
                    self._put(watch, watch.heard_at + interval)
        return pings, dead

    def _put(self, watch: Watch, at: float) -> None:
        slot = math.ceil(at / self._resolution - 1e-9)
        watches = self._slots.get(slot)
        if watches is None:
            self._slots[slot] = [watch]
            heapq.heappush(self._heap, slot)
        else:
            watches.append(watch)


class KeepAlivePeer(Protocol):
    """What a watched socket's owner (the relay) does for the keep-alive; `side` is its own tag."""

    def keepalive_progress(self, side: int) -> int: ...
    def keepalive_ping(self, side: int) -> None: ...
    def keepalive_dead(self, side: int) -> None: ...


class KeepAlive:
    """The policy on the event loop's clock: one timer, armed for the next look, for all sockets. No
    task, and nothing at all while nothing is watched."""

    __slots__ = ("_loop", "_policy", "_resolution", "_timer", "_timer_at")

    def __init__(self, resolution: float = DEFAULT_RESOLUTION) -> None:
        self._resolution = resolution
        self._policy = KeepAlivePolicy(resolution)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def watch(self, peer: KeepAlivePeer, side: int, interval: float) -> Watch:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (tests): the old one's timer is gone with it
            self._loop, self._timer, self._timer_at = loop, None, math.inf
            self._policy = KeepAlivePolicy(self._resolution)
        watch = self._policy.watch(peer, side, interval, loop.time(), peer.keepalive_progress(side))
        self._arm()
        return watch

    def forget(self, watch: Watch) -> None:
        self._policy.forget(watch)

    def _arm(self) -> None:
        at = self._policy.next_due()
        if at is None or at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        at = self._timer_at
        self._timer, self._timer_at = None, math.inf
        try:
            assert self._loop is not None
            # The loop may run a timer a hair before its time; the look is the one it was armed for.
            pings, dead = self._policy.due(max(self._loop.time(), at), _progress)
            for watch in pings:
                if watch.key is None:
                    continue
                try:
                    watch.key.keepalive_ping(watch.side)  # type: ignore[attr-defined]
                except Exception:
                    log.exception("keep-alive ping failed")
            for watch in dead:
                try:
                    watch.key.keepalive_dead(watch.side)  # type: ignore[attr-defined]
                except Exception:
                    log.exception("closing a silent peer failed")
        finally:
            self._arm()


def _progress(watch: Watch) -> int:
    return watch.key.keepalive_progress(watch.side)  # type: ignore[attr-defined, no-any-return]
