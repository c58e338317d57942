"""Watchers reach the live consoles of a replica through the registry (docs/shadowing.md): on the
`watchers` command, and, should that message be lost, on the next reconciliation; an observer whose
watched console left the ledger ends with it."""

from __future__ import annotations

import time

from gateway.consoles.codes import CLOSE_OWNER_CLOSED
from gateway.consoles.registry import ConsoleRegistry, LiveConsole
from gateway.state.base import Watcher
from gateway.state.memory import MemoryStore
from tests.support.state import record


class Heard:
    def __init__(self) -> None:
        self.changes: list[tuple[list[str], list[str]]] = []

    async def __call__(self, before: dict[str, Watcher], after: dict[str, Watcher]) -> None:
        self.changes.append(([w.status for w in before.values()], [w.status for w in after.values()]))


def watcher(console_id: str, status: str = "pending") -> Watcher:
    return Watcher(
        id="w1",
        console_id=console_id,
        user="lena",
        name="Lena",
        requested=time.time(),
        replica="b",
        status=status,
    )


async def registered(registry: ConsoleRegistry, **fields: str) -> LiveConsole:
    rec = record(**fields)
    assert await registry.acquire(rec, per_user=10, global_max=10) is None
    return registry.local[rec.id]


async def test_a_watcher_change_reaches_the_owner_by_command_and_by_reconciliation() -> None:
    store = MemoryStore()
    registry = ConsoleRegistry(store, replica="a")
    await registry.start()
    try:
        owner = await registered(registry, user="olga")
        heard = Heard()
        owner.watch_listeners.append(heard)
        await store.watcher_put(watcher(owner.record.id), ttl=60)
        await registry.publish_watchers(owner.record.id)  # the command: heard at once
        assert heard.changes == [([], ["pending"])]
        assert owner.watchers["w1"].status == "pending"
        # The next change is written but its message lost: reconciliation reads it.
        await store.watcher_put(watcher(owner.record.id, "joined"), ttl=60)
        assert len(heard.changes) == 1
        await registry.reconcile()
        assert heard.changes[-1] == (["pending"], ["joined"])
        await registry.reconcile()  # nothing changed: nobody is told again
        assert len(heard.changes) == 2
    finally:
        await registry.close()


async def test_an_observer_sees_the_watchers_of_the_console_it_watches() -> None:
    store = MemoryStore()
    registry = ConsoleRegistry(store, replica="b")
    owner = await registered(registry, user="olga")
    observer = await registered(registry, user="lena", watching=owner.record.id)
    assert observer.watched == owner.record.id and owner.watched == owner.record.id
    await store.watcher_put(watcher(owner.record.id, "approved"), ttl=60)
    await registry.refresh_watchers({owner.record.id})
    assert observer.watchers == owner.watchers and observer.watchers["w1"].status == "approved"


async def test_an_observer_ends_when_the_watched_console_leaves_the_ledger() -> None:
    store = MemoryStore()
    registry = ConsoleRegistry(store, replica="b")
    owner = await registered(registry, user="olga")
    observer = await registered(registry, user="lena", watching=owner.record.id)
    assert await registry.reconcile() == 0
    # The owner's console ended without its end reaching the observer (or its replica died).
    registry.local.pop(owner.record.id)
    await store.console_release(owner.record.id)
    assert await registry.reconcile() == 1
    assert observer.closed_by == "owner_closed"
    assert observer.pending_close is not None and observer.pending_close[0] == CLOSE_OWNER_CLOSED


async def test_ending_the_owner_ends_observers_through_the_recorded_verdict() -> None:
    """The terminate by `watching` is state too: a replica that missed the command ends them anyway."""
    store = MemoryStore()
    registry = ConsoleRegistry(store, replica="b")
    await registry.start()
    try:
        owner = await registered(registry, user="olga")
        observer = await registered(registry, user="lena", watching=owner.record.id)
        other = await registered(registry, user="lena")
        await registry.terminate(by="owner_closed", code=4006, reason="r", watching=owner.record.id)
        assert observer.closed_by == "owner_closed" and other.closed_by is None
        observer.closed_by, observer.pending_close = None, None  # as if the command never arrived
        await registry.reconcile()
        assert observer.closed_by == "owner_closed" and other.closed_by is None
        assert owner.closed_by is None
    finally:
        await registry.close()
