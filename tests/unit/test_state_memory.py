"""The in-memory backend's own costs: its expiring tables stay small and each write stays O(1) however
full they are (its behaviour is the contract in tests/contract/test_state_contract.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sized

import pytest

from gateway.state.memory import MemoryStore

Write = Callable[[MemoryStore, str], Awaitable[object]]

# What each table's writes look like, and the table: revocations (sign-outs), termination requests,
# recorded groups, console rate buckets. Every one lives 10 s.
WRITES: dict[str, tuple[Write, Callable[[MemoryStore], Sized]]] = {
    "revocations": (lambda s, key: s.revoke_session(key, 10), lambda s: s._revoked),
    "terminations": (
        lambda s, key: s.request_termination(key, {"code": 4000, "reason": "r", "by": "admin"}, 10),
        lambda s: s._terminations,
    ),
    "groups": (lambda s, key: s.record_groups(key, "proxy-header", ["ops"], 10), lambda s: s._groups),
    "buckets": (lambda s, key: s.take_token(key, rate=1.0, burst=9), lambda s: s._buckets),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", WRITES)
async def test_lapsed_entries_do_not_pile_up(kind: str) -> None:
    write, table = WRITES[kind]
    clock = Clock()
    store = MemoryStore(clock=clock)
    for i in range(1000):
        await write(store, f"old-{i}")
    clock.now += 60  # every entry has lapsed
    for i in range(1000):
        await write(store, f"new-{i}")
    assert len(table(store)) <= 1001


async def _seconds_for(kind: str, live: int, writes: int = 2000) -> float:
    """Best of three: the time `writes` writes take on a table already holding `live` live entries."""
    write, table = WRITES[kind]
    best = float("inf")
    for _ in range(3):
        store = MemoryStore(clock=Clock())
        for i in range(live):
            await write(store, f"live-{i}")
        assert len(table(store)) == live
        started = time.perf_counter()
        for i in range(writes):
            await write(store, f"more-{i}")
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("kind", WRITES)
async def test_a_write_costs_the_same_however_full_the_table(kind: str) -> None:
    """A sign-out or a termination request must not scan the table: 12,000 live entries (past the size at
    which the old code began to rescan on every sign-out) may not make a write 10 times dearer."""
    empty, full = await _seconds_for(kind, 0), await _seconds_for(kind, 12_000)
    assert full < 10 * empty + 0.005, (
        f"{kind}: {full * 1e6 / 2000:.1f} µs a write when full, {empty * 1e6 / 2000:.1f} when empty"
    )
