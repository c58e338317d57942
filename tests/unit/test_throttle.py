from __future__ import annotations

import pytest

from gateway.auth.throttle import MemoryCounterStore, SignInThrottle


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(300.0 * 3333)  # a multiple of the 300 s window: a window starts here


def throttle(clock: Clock, **limits: int) -> SignInThrottle:
    return SignInThrottle(MemoryCounterStore(clock=clock), clock=clock, **limits)


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
    store = MemoryCounterStore(clock=clock)
    assert [await store.incr("k", 10) for _ in range(3)] == [1, 2, 3]
    clock.now += 10
    assert await store.incr("k", 10) == 1
    await store.reset("k")
    assert await store.incr("k", 10) == 1
    await store.reset("never-set")


async def test_memory_store_is_bounded(clock: Clock) -> None:
    store = MemoryCounterStore(max_keys=3, clock=clock)
    for key in "abc":
        await store.incr(key, 10)
    clock.now += 5
    await store.incr("d", 100)  # full: nothing expired, the oldest key goes
    assert len(store) == 3
    assert await store.incr("a", 10) == 1  # "a" was evicted, "b" goes now
    clock.now += 6  # "c" expired
    await store.incr("e", 10)
    assert len(store) == 3
    assert await store.incr("d", 100) == 2


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SignInThrottle(MemoryCounterStore(), per_user=0)
