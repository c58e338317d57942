"""The registry's periodic work at many idle consoles (docs/performance.md, "Idle consoles"): the
per-second sign-in expiry reads only the earliest end, and a sync writes a console's record to the shared
state only when it changed or its entry's TTL needs refreshing, without the ledger ever losing it."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.app import ledger_refresh, sync_interval
from gateway.consoles.codes import CLOSE_SIGNIN_EXPIRED
from gateway.consoles.registry import ConsoleRegistry, LiveConsole
from gateway.consoles.relay_core import RelayStats
from gateway.state.base import ConsoleRecord
from gateway.state.memory import MemoryStore
from tests.support.state import record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    """The memory store, counting the ledger writes a sync makes."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.updates: list[str] = []

    async def console_update(self, record: ConsoleRecord) -> None:
        self.updates.append(record.id)
        await super().console_update(record)


class IdleRelay:
    def __init__(self) -> None:
        self.stats = RelayStats()
        self.closed: tuple[int, str] | None = None

    def terminate(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    async def notify(self, payload: dict[str, object]) -> None:
        return None


async def opened(registry: ConsoleRegistry, console_id: str, *, ends: float) -> LiveConsole:
    rec = record(id=console_id, sid=f"s-{console_id}")
    assert await registry.acquire(rec, per_user=100_000, global_max=100_000) is None
    live = registry.local[console_id]
    registry.expire_at(live, ends)
    registry.attach(console_id, IdleRelay())
    return live


async def test_a_console_closes_at_the_first_tick_past_its_sign_in_end_and_not_before() -> None:
    registry = ConsoleRegistry(MemoryStore(), replica="a")
    early = await opened(registry, "early", ends=100.0)
    late = await opened(registry, "late", ends=200.0)
    assert registry.expire_sessions(99.9) == 0
    assert early.closed_by is None
    assert registry.expire_sessions(100.0) == 1
    assert early.closed_by == "session_expired"
    assert isinstance(early.relay, IdleRelay) and early.relay.closed is not None
    assert early.relay.closed[0] == CLOSE_SIGNIN_EXPIRED
    assert late.closed_by is None
    assert registry.expire_sessions(150.0) == 0
    assert registry.expire_sessions(250.0) == 1 and late.closed_by == "session_expired"


async def test_a_moved_sign_in_end_and_a_released_console_are_honoured() -> None:
    registry = ConsoleRegistry(MemoryStore(), replica="a")
    moved = await opened(registry, "moved", ends=100.0)
    registry.expire_at(moved, 300.0)  # its end moved later: the first entry no longer stands
    gone = await opened(registry, "gone", ends=100.0)
    await registry.release("gone")
    assert registry.expire_sessions(200.0) == 0
    assert moved.closed_by is None and gone.closed_by is None
    assert registry.expire_sessions(300.0) == 1 and moved.closed_by == "session_expired"


async def test_released_consoles_do_not_pile_up_in_the_expiry_order() -> None:
    registry = ConsoleRegistry(MemoryStore(), replica="a")
    await opened(registry, "stays", ends=1e12)
    for i in range(2_000):
        await opened(registry, f"c{i}", ends=1e12)
        await registry.release(f"c{i}")
    assert len(registry._expiries) <= 2 * len(registry.local) + 64


async def test_an_idle_console_is_written_only_to_refresh_its_entry_a_changed_one_at_once() -> None:
    clock = Clock()
    store = CountingStore(clock=clock, console_ttl=30.0)
    registry = ConsoleRegistry(store, replica="a", sync_interval=5.0, refresh_every=10.0, clock=clock)
    idle = await opened(registry, "idle", ends=1e12)
    busy = await opened(registry, "busy", ends=1e12)
    await registry.sync()
    assert sorted(store.updates) == ["busy", "idle"]  # the first sync writes both ("open", bytes)
    store.updates.clear()
    clock.now += 5.0
    assert isinstance(busy.relay, IdleRelay)
    busy.relay.stats.bytes_to_browser += 1234
    await registry.sync()
    assert store.updates == ["busy"], "an unchanged record is not written again within refresh_every"
    assert [r.bytes_to_browser for r in await store.consoles() if r.id == "busy"] == [1234]
    store.updates.clear()
    idle.record.recording = "rec-1"  # any field, not only the byte counts
    await registry.sync()
    assert store.updates == ["idle"]
    store.updates.clear()
    clock.now += 10.0
    await registry.sync()
    assert sorted(store.updates) == ["busy", "idle"], "refreshed once refresh_every passed"


async def test_the_ledger_never_loses_an_idle_console_at_the_configured_refresh() -> None:
    for ttl in (3.0, 30.0, 300.0):
        config = SimpleNamespace(state=SimpleNamespace(redis=SimpleNamespace(console_ttl=ttl)))
        interval, refresh = sync_interval(config), ledger_refresh(config)  # type: ignore[arg-type]
        assert refresh >= ttl / 3, "at most one refresh per third of the TTL"
        clock = Clock()
        store = CountingStore(clock=clock, console_ttl=ttl)
        registry = ConsoleRegistry(
            store, replica="a", sync_interval=interval, refresh_every=refresh, clock=clock
        )
        await opened(registry, "idle", ends=1e12)
        await registry.sync()
        start = clock.now
        for _ in range(int(20 * ttl / interval)):
            clock.now += interval * 1.2  # a loaded loop's syncs come late
            await registry.sync()
            assert [r.id for r in await store.consoles()] == ["idle"], f"lapsed with console_ttl {ttl}"
        assert len(store.updates) <= 1 + (clock.now - start) / refresh
