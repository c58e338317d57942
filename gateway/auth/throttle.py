"""Sign-in throttling per user name and per client address, on a fixed-window counter store.

The store interface is deliberately tiny (`Counters` in gateway/state/base.py: increment, reset) so a Redis
store can implement it with INCR + EXPIRE. Because it cannot be read without counting, `check()` itself
counts the attempt; windows are aligned to multiples of `window` on the wall clock, so the wait is known
without asking the store for a TTL.

- per user: attempts since the last successful sign-in (a success resets it), against password guessing;
- per address: every attempt from the address in the window, against spraying many user names. It is
  counted first, and an attempt it refuses does not count the name, so a refused address adds no keys.

Stores: `RedisStore` (keys expire in Redis) or, on one replica, `WindowCounters` in gateway/state/memory.py
(O(1) per attempt, bounded, names tried once are evicted before hammered counters).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from gateway.state.base import Counters

log = logging.getLogger("gateway.auth")


def _subject(kind: str, value: str) -> str:
    # Hashed: keys stay short and the store never holds raw user input.
    digest = hashlib.sha256(value.strip().casefold().encode("utf-8")).hexdigest()[:32]
    return f"signin:{kind}:{digest}"


class SignInThrottle:
    def __init__(
        self,
        store: Counters,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_user < 1 or per_address < 1 or window <= 0:
            raise ValueError("throttle limits and window must be positive")
        self._store = store
        self.per_user = per_user
        self.per_address = per_address
        self.window = float(window)
        self._clock = clock

    def _window(self) -> tuple[int, float]:
        now = self._clock()
        index = int(now // self.window)
        return index, (index + 1) * self.window - now

    async def check(self, user: str, address: str) -> float | None:
        """Count this attempt; None if allowed, else the seconds until the window ends."""
        index, remaining = self._window()
        address_count = await self._store.incr(f"{_subject('addr', address)}:{index}", self.window)
        if address_count > self.per_address:
            # Refused before the name is counted: a spraying address adds no key per name it tries.
            if address_count == self.per_address + 1:
                log.warning("sign-in throttled (address attempts %d) for %.0f s", address_count, remaining)
            return max(remaining, 1.0)
        user_count = await self._store.incr(f"{_subject('user', user)}:{index}", self.window)
        if user_count > self.per_user:
            if user_count == self.per_user + 1:
                log.warning("sign-in throttled (user attempts %d) for %.0f s", user_count, remaining)
            return max(remaining, 1.0)
        return None

    async def failed(self, user: str, address: str) -> None:
        """A failed attempt: already counted by `check()`; kept so callers state the outcome explicitly."""
        return None

    async def succeeded(self, user: str, address: str) -> None:
        """A success clears the user's count; not the address's, or a valid account would unlock spraying."""
        index, _ = self._window()
        await self._store.reset(f"{_subject('user', user)}:{index}")
