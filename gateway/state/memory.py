"""Single-process state: plain dictionaries, with expiry so nothing grows without bound."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.state.base import Command, CommandHandler, ConsoleRecord, StateStore

_MAX_KEYS = 100_000


class MemoryStore(StateStore):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._consoles: dict[str, ConsoleRecord] = {}
        self._locks: dict[str, str] = {}
        self._revoked: dict[str, float] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}
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
        now = self._clock()
        count, until = self._counters.get(key, (0, now + window))
        if until <= now:
            count, until = 0, now + window
        count += 1
        self._counters[key] = (count, until)
        if len(self._counters) > _MAX_KEYS:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        return count

    async def reset(self, key: str) -> None:
        self._counters.pop(key, None)

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
