"""Single-process state: plain dictionaries, with expiry so nothing grows without bound."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence

from gateway.state.base import Command, CommandHandler, ConsoleRecord, StateStore

_MAX_KEYS = 100_000
# Expired counters dropped per increment, per table: more than the one key an increment can add, so the
# sweep keeps pace with arrivals.
_SWEEP = 2


class WindowCounters:
    """Fixed-window counters (the sign-in throttle's): O(1) per increment, never more than `max_keys`.

    Unauthenticated callers choose the keys (every user name tried, every address), so the table must
    neither grow without bound nor cost more per attempt as it fills. Keys live in two tables ordered
    oldest first: counted once, and counted again (moved there on their second count). Each increment
    drops up to `_SWEEP` expired keys from the front of each. When the table is full, the oldest key
    counted once is evicted, and a repeat only when no such key is left: a spray of fresh names evicts
    other fresh names, not the count of a user or an address being hammered. An attacker who repeats
    each sprayed name can still push out the oldest repeats, at about `max_keys` requests for one reset
    counter (see docs/security.md, item 9).
    """

    def __init__(self, *, max_keys: int = _MAX_KEYS, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.max_keys = max_keys
        self._clock = clock
        # key -> (expires at, count); OrderedDict, not dict: removing from the front of a plain dict
        # leaves holes that the next look at its front walks over again.
        self._once: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._again: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._once) + len(self._again)

    async def incr(self, key: str, window: float) -> int:
        now = self._clock()
        self._sweep(self._once, now)
        self._sweep(self._again, now)
        entry = self._once.pop(key, None) or self._again.get(key)
        if entry is not None and entry[0] > now:
            count = entry[1] + 1
            self._again[key] = (entry[0], count)  # a repeat keeps its place in `_again`
            return count
        self._again.pop(key, None)
        if len(self) >= self.max_keys:
            (self._once or self._again).popitem(last=False)
        self._once[key] = (now + window, 1)
        return 1

    async def reset(self, key: str) -> None:
        self._once.pop(key, None)
        self._again.pop(key, None)

    @staticmethod
    def _sweep(table: OrderedDict[str, tuple[float, int]], now: float) -> None:
        for _ in range(_SWEEP):
            if not table:
                return
            key = next(iter(table))
            if table[key][0] > now:
                return
            del table[key]


class MemoryStore(StateStore):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_counters: int = _MAX_KEYS) -> None:
        self._clock = clock
        self._consoles: dict[str, ConsoleRecord] = {}
        self._locks: dict[str, str] = {}
        self._revoked: dict[str, float] = {}
        self._terminations: dict[str, tuple[Command, float]] = {}
        self._groups: dict[tuple[str, str], tuple[list[str], float]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self.counters = WindowCounters(max_keys=max_counters, clock=clock)
        self._handler: CommandHandler | None = None

    async def start(self, on_command: CommandHandler) -> None:
        self._handler = on_command

    async def close(self) -> None:
        self._handler = None

    async def console_acquire(self, record: ConsoleRecord, *, per_user: int, global_max: int) -> str | None:
        if len(self._consoles) >= global_max:
            return "global"
        if sum(1 for c in self._consoles.values() if c.user == record.user) >= per_user:
            return "per_user"
        self._consoles[record.id] = record
        return None

    async def console_update(self, record: ConsoleRecord) -> None:
        if record.id in self._consoles:
            self._consoles[record.id] = record

    async def console_release(self, console_id: str) -> None:
        self._consoles.pop(console_id, None)

    async def consoles(self) -> list[ConsoleRecord]:
        return list(self._consoles.values())

    async def lock_user(self, user: str, reason: str) -> None:
        self._locks[user] = reason

    async def unlock_user(self, user: str) -> None:
        self._locks.pop(user, None)

    async def locked_users(self) -> dict[str, str]:
        return dict(self._locks)

    async def revoke_session(self, sid: str, ttl: float) -> None:
        self._expire(self._revoked)
        self._revoked[sid] = self._clock() + ttl

    async def is_revoked(self, sid: str) -> bool:
        until = self._revoked.get(sid)
        return until is not None and until > self._clock()

    async def revoked_sessions(self, sids: Collection[str]) -> set[str]:
        now = self._clock()
        return {sid for sid in sids if self._revoked.get(sid, now) > now}

    async def request_termination(self, console_id: str, command: Command, ttl: float) -> None:
        now = self._clock()
        for key in [k for k, (_, until) in self._terminations.items() if until <= now]:
            del self._terminations[key]
        self._terminations[console_id] = (dict(command), now + ttl)

    async def termination_requests(self, console_ids: Collection[str]) -> dict[str, Command]:
        now = self._clock()
        found = ((i, self._terminations.get(i)) for i in console_ids)
        return {i: dict(entry[0]) for i, entry in found if entry is not None and entry[1] > now}

    async def record_groups(self, user: str, method: str, groups: Sequence[str], ttl: float) -> None:
        now = self._clock()
        for key in [k for k, (_, until) in self._groups.items() if until <= now]:
            del self._groups[key]
        self._groups[(user, method)] = (list(groups), now + ttl)

    async def recorded_groups(self, users: Collection[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        now = self._clock()
        found = ((u, self._groups.get(u)) for u in users)
        return {u: list(entry[0]) for u, entry in found if entry is not None and entry[1] > now}

    async def take_token(self, key: str, *, rate: float, burst: int) -> float | None:
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > _MAX_KEYS:
                self._buckets.pop(next(iter(self._buckets)))
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate

    async def incr(self, key: str, window: float) -> int:
        return await self.counters.incr(key, window)

    async def reset(self, key: str) -> None:
        await self.counters.reset(key)

    async def ping(self) -> None:
        return None

    async def publish(self, command: Command) -> None:
        if self._handler is not None:
            await self._handler(command)

    def _expire(self, table: dict[str, float]) -> None:
        if len(table) > _MAX_KEYS // 10:
            now = self._clock()
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
