"""Single-process state: plain dictionaries, with expiry so nothing grows without bound.

It keeps the contract Redis keeps (tests/contract/test_state_contract.py), expiry included: a console
lapses `console_ttl` after its last write, and a release leaves a tombstone for as long.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, Generic, TypeVar

from gateway.state.base import (
    AccessRequest,
    Command,
    CommandHandler,
    ConsoleRecord,
    StateStore,
    Watcher,
    deliver,
)

_MAX_KEYS = 100_000
# Lapsed entries dropped per write, per table: more than the one key a write can add, so the sweep keeps
# pace with arrivals.
_SWEEP = 2

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _sweep(table: OrderedDict[Any, tuple[float, Any]], now: float) -> None:
    """Drop up to `_SWEEP` lapsed `(expires at, ...)` entries from the front of a table in write order."""
    for _ in range(_SWEEP):
        if not table:
            return
        key = next(iter(table))
        if table[key][0] > now:
            return
        del table[key]


class ExpiringTable(Generic[K, V]):
    """Entries that lapse `ttl` seconds after their last write; O(1) amortised per write.

    Entries are kept in write order (a rewrite moves to the back), and each write drops up to `_SWEEP`
    lapsed ones from the front, more than the one it can add, so lapsed entries never pile up. The store
    gives each table one lifetime, so write order is expiry order and the table holds little more than
    its live entries. A lapsed entry is never returned, swept or not.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        """Entries held, lapsed ones not yet swept included (the memory bound under test)."""
        return len(self._entries)

    def put(self, key: K, value: V, ttl: float) -> None:
        now = self._clock()
        _sweep(self._entries, now)
        self._entries.pop(key, None)
        self._entries[key] = (now + ttl, value)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def live(self) -> list[V]:
        """The live values, oldest write first; every lapsed entry at the front is dropped on the way."""
        now = self._clock()
        entries = self._entries
        while entries and entries[next(iter(entries))][0] <= now:
            entries.popitem(last=False)
        return [value for until, value in entries.values() if until > now]


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
        _sweep(self._once, now)
        _sweep(self._again, now)
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


class MemoryStore(StateStore):
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_counters: int = _MAX_KEYS,
        console_ttl: float = 30.0,
    ) -> None:
        if console_ttl <= 0:
            raise ValueError("console_ttl must be positive")
        self._clock = clock
        self.console_ttl = float(console_ttl)
        self._consoles: ExpiringTable[str, ConsoleRecord] = ExpiringTable(clock)
        self._released: ExpiringTable[str, bool] = ExpiringTable(clock)
        self._locks: dict[str, str] = {}
        self._revoked: ExpiringTable[str, bool] = ExpiringTable(clock)
        self._terminations: ExpiringTable[str, Command] = ExpiringTable(clock)
        self._groups: ExpiringTable[tuple[str, str], list[str]] = ExpiringTable(clock)
        self._access: dict[str, tuple[float, AccessRequest]] = {}  # id -> (lapses at, request)
        # console id -> watch id -> (lapses at, watcher); a console's entries go with its last one
        self._watchers: dict[str, dict[str, tuple[float, Watcher]]] = {}
        self._buckets: ExpiringTable[str, tuple[float, float]] = ExpiringTable(clock)  # (tokens, stamp)
        self.counters = WindowCounters(max_keys=max_counters, clock=clock)
        self._handler: CommandHandler | None = None

    async def start(self, on_command: CommandHandler) -> None:
        self._handler = on_command

    async def close(self) -> None:
        self._handler = None

    async def console_acquire(self, record: ConsoleRecord, *, per_user: int, global_max: int) -> str | None:
        live = self._consoles.live()
        if self._consoles.get(record.id) is None:  # a retry of the same id is not counted twice
            if len(live) >= global_max:
                return "global"
            if sum(1 for c in live if c.user == record.user) >= per_user:
                return "per_user"
        self._consoles.put(record.id, _copy(record), self.console_ttl)
        return None

    async def console_update(self, record: ConsoleRecord) -> None:
        """Refresh, or register again a console that lapsed; never one released within console_ttl."""
        if self._released.get(record.id) is None:
            self._consoles.put(record.id, _copy(record), self.console_ttl)

    async def console_release(self, console_id: str) -> None:
        self._consoles.pop(console_id)
        self._released.put(console_id, True, self.console_ttl)

    async def consoles(self) -> list[ConsoleRecord]:
        return [_copy(record) for record in self._consoles.live()]

    async def lock_user(self, user: str, reason: str) -> None:
        self._locks[user] = reason

    async def unlock_user(self, user: str) -> None:
        self._locks.pop(user, None)

    async def locked_users(self) -> dict[str, str]:
        return dict(self._locks)

    async def revoke_session(self, sid: str, ttl: float) -> None:
        if ttl > 0:
            self._revoked.put(sid, True, ttl)

    async def is_revoked(self, sid: str) -> bool:
        return self._revoked.get(sid) is not None

    async def revoked_sessions(self, sids: Collection[str]) -> set[str]:
        return {sid for sid in sids if self._revoked.get(sid) is not None}

    async def request_termination(self, console_id: str, command: Command, ttl: float) -> None:
        self._terminations.put(console_id, dict(command), ttl)

    async def termination_requests(self, console_ids: Collection[str]) -> dict[str, Command]:
        found = ((i, self._terminations.get(i)) for i in console_ids)
        return {i: dict(command) for i, command in found if command is not None}

    async def record_groups(self, user: str, method: str, groups: Sequence[str], ttl: float) -> None:
        self._groups.put((user, method), list(groups), ttl)

    async def recorded_groups(self, users: Collection[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        found = ((u, self._groups.get(u)) for u in users)
        return {u: list(groups) for u, groups in found if groups is not None}

    async def access_request_put(self, request: AccessRequest, ttl: float) -> None:
        self._access[request.id] = (self._clock() + ttl, AccessRequest.from_dict(request.to_dict()))

    async def access_requests(self) -> list[AccessRequest]:
        now = self._clock()
        for key in [k for k, (until, _) in self._access.items() if until <= now]:
            del self._access[key]
        live = sorted((r for _, r in self._access.values()), key=lambda r: r.created)
        return [AccessRequest.from_dict(r.to_dict()) for r in live]

    async def access_request_decide(self, decided: AccessRequest, ttl: float) -> bool:
        entry = self._access.get(decided.id)
        if entry is None or entry[0] <= self._clock() or entry[1].status != "pending":
            return False
        await self.access_request_put(decided, ttl)
        return True

    async def watcher_put(self, watcher: Watcher, ttl: float) -> None:
        for console_id in list(self._watchers):  # few entries, rare writes: sweep them all
            self._live_watchers(console_id)
        entries = self._live_watchers(watcher.console_id)
        entries[watcher.id] = (self._clock() + ttl, Watcher.from_dict(watcher.to_dict()))
        self._watchers[watcher.console_id] = entries

    async def watchers(self, console_ids: Collection[str]) -> dict[str, list[Watcher]]:
        found = {}
        for console_id in console_ids:
            entries = self._live_watchers(console_id)
            if entries:
                live = sorted((w for _, w in entries.values()), key=lambda w: w.requested)
                found[console_id] = [Watcher.from_dict(w.to_dict()) for w in live]
        return found

    async def watcher_decide(self, decided: Watcher, ttl: float) -> bool:
        entry = self._live_watchers(decided.console_id).get(decided.id)
        if entry is None or entry[1].status != "pending":
            return False
        await self.watcher_put(decided, ttl)
        return True

    def _live_watchers(self, console_id: str) -> dict[str, tuple[float, Watcher]]:
        """A console's unlapsed entries; the lapsed ones (and an emptied console) are dropped on the way."""
        now = self._clock()
        entries = {k: v for k, v in self._watchers.pop(console_id, {}).items() if v[0] > now}
        if entries:
            self._watchers[console_id] = entries
        return entries

    async def take_token(self, key: str, *, rate: float, burst: int) -> float | None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        now = self._clock()
        tokens, stamp = self._buckets.get(key) or (float(burst), now)
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        wait = None if tokens >= 1.0 else (1.0 - tokens) / rate
        # Forgotten once it would be full again, as in Redis: a missing bucket is a full one.
        self._buckets.put(key, (tokens - 1.0 if wait is None else tokens, now), burst / rate + 1.0)
        return wait

    async def incr(self, key: str, window: float) -> int:
        return await self.counters.incr(key, window)

    async def reset(self, key: str) -> None:
        await self.counters.reset(key)

    async def ping(self) -> None:
        return None

    async def publish(self, command: Command) -> None:
        """Delivered before this returns; a handler that fails is logged, not raised to the publisher."""
        await deliver(self._handler, command)


def _copy(record: ConsoleRecord) -> ConsoleRecord:
    """What the ledger holds is what was written: later changes by the caller count only once written."""
    return dataclasses.replace(record, groups=list(record.groups))
