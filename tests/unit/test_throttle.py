from __future__ import annotations

import pytest

from gateway.auth.throttle import SignInThrottle
from gateway.state.memory import MemoryStore


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(300.0 * 3333)  # a multiple of the 300 s window: a window starts here


def throttle(clock: Clock, **limits: int) -> SignInThrottle:
    return SignInThrottle(MemoryStore(clock=clock), clock=clock, **limits)


async def fail(t: SignInThrottle, user: str, address: str) -> float | None:
    wait = await t.check(user, address)
    if wait is None:
        await t.failed(user, address)
    return wait


async def test_per_user_limit_and_wait_until_window_end(clock: Clock) -> None:
    t = throttle(clock, per_user=3)
    for _ in range(3):
        assert await fail(t, "alice", "192.0.2.1") is None
    clock.now += 100
    assert await t.check("alice", "192.0.2.9") == pytest.approx(200)  # from any address
    assert await t.check("bob", "192.0.2.1") is None  # other users unaffected
    clock.now += 200  # the next window
    assert await t.check("alice", "192.0.2.1") is None


async def test_user_names_are_compared_case_insensitively(clock: Clock) -> None:
    t = throttle(clock, per_user=2)
    assert await fail(t, "Alice", "192.0.2.1") is None
    assert await fail(t, "alice ", "192.0.2.2") is None
    assert await t.check("ALICE", "192.0.2.3") is not None


async def test_success_resets_the_user_but_not_the_address(clock: Clock) -> None:
    t = throttle(clock, per_user=3, per_address=5)
    for _ in range(2):
        await fail(t, "alice", "192.0.2.1")
    assert await t.check("alice", "192.0.2.1") is None
    await t.succeeded("alice", "192.0.2.1")
    for _ in range(3):  # a fresh budget for alice
        assert await fail(t, "alice", "198.51.100.1") is None
    # The address has now made 3 attempts; spraying other names still hits its limit.
    assert await fail(t, "carol", "192.0.2.1") is None
    assert await fail(t, "dave", "192.0.2.1") is None
    assert await t.check("erin", "192.0.2.1") is not None


async def test_per_address_limit_covers_many_user_names(clock: Clock) -> None:
    t = throttle(clock, per_user=5, per_address=4)
    for i in range(4):
        assert await fail(t, f"user{i}", "2001:db8::1") is None
    assert await t.check("user99", "2001:db8::1") == pytest.approx(300)
    assert await t.check("user99", "2001:db8::2") is None


async def test_memory_store_fixed_window_and_reset(clock: Clock) -> None:
    store = MemoryStore(clock=clock)
    assert [await store.incr("k", 10) for _ in range(3)] == [1, 2, 3]
    clock.now += 10
    assert await store.incr("k", 10) == 1
    await store.reset("k")
    assert await store.incr("k", 10) == 1
    await store.reset("never-set")


class CountingKey(str):
    """A key that counts how often a table hashes it: the work an increment does, without a stopwatch."""

    hashes = 0

    def __hash__(self) -> int:
        CountingKey.hashes += 1
        return str.__hash__(self)


async def test_a_million_distinct_names_cost_the_same_per_attempt_in_bounded_memory(clock: Clock) -> None:
    """Issue 10, item 9: past 100,000 keys every increment rebuilt the whole table and nothing expired."""
    store = MemoryStore(clock=clock)
    cap = store.counters.max_keys
    most = 0
    for i in range(1_000_000):
        key = CountingKey(f"signin:user:{i}")
        before = CountingKey.hashes
        assert await store.incr(key, 300) == 1
        most = max(most, CountingKey.hashes - before)
        assert most <= 16, f"attempt {i} hashed {most} keys"  # the old table rehashed all, 100,000
        assert len(store.counters) <= cap, f"{len(store.counters)} keys after {i + 1} names"
        clock.now += 0.001  # 1,000 names a second: the window holds 300,000 of them, more than the cap
    assert len(store.counters) == cap


async def test_expired_counters_are_swept_as_new_ones_arrive(clock: Clock) -> None:
    store = MemoryStore(clock=clock)
    for i in range(1000):
        await store.incr(f"old-{i}", 10)
    clock.now += 10
    for i in range(1000):
        await store.incr(f"new-{i}", 10)
    assert len(store.counters) == 1000  # each increment dropped expired keys from the front


async def test_when_full_names_tried_once_go_before_hammered_counters(clock: Clock) -> None:
    store = MemoryStore(clock=clock, max_counters=3)
    assert [await store.incr("hammered", 100) for _ in range(3)] == [1, 2, 3]
    for key in "abcdef":
        await store.incr(key, 100)
    assert len(store.counters) == 3
    assert await store.incr("hammered", 100) == 4  # kept while the flood of new names evicted each other
    assert await store.incr("a", 100) == 1  # "a" was evicted by a later name


async def test_an_address_over_its_limit_adds_no_per_name_counters(clock: Clock) -> None:
    store = MemoryStore(clock=clock)
    t = SignInThrottle(store, clock=clock, per_user=5, per_address=3)
    for i in range(3):
        assert await fail(t, f"user{i}", "192.0.2.1") is None
    size = len(store.counters)
    for i in range(1000):
        assert await t.check(f"sprayed{i}", "192.0.2.1") is not None
    assert len(store.counters) == size


async def test_a_flood_of_new_names_does_not_evict_the_counters_under_attack(clock: Clock) -> None:
    """Spraying from many addresses fills the table with counters at 1: those are evicted first."""
    store = MemoryStore(clock=clock, max_counters=1000)
    t = SignInThrottle(store, clock=clock, per_user=5, per_address=20)
    for i in range(5):  # guessing alice's password from several addresses
        assert await fail(t, "alice", f"198.51.100.{i}") is None
    for i in range(20):  # one address trying many names
        assert await fail(t, f"guess{i}", "203.0.113.9") is None
    for i in range(200_000):  # then a botnet sprays fresh names
        await t.check(f"name{i}", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(store.counters) <= 1000
    assert await t.check("alice", "192.0.2.200") is not None
    assert await t.check("someone", "203.0.113.9") is not None


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SignInThrottle(MemoryStore(), per_user=0)
