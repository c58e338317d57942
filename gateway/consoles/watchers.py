"""The owner's side of shadowing (docs/shadowing.md): what the owner's page hears about who watches, how
the owner decides a join, and the end of the observers when the owner's console ends.

The watcher list lives in the shared state (gateway/state/base.py `Watchers`); the registry hands each
change to the console's watch listeners on the owner's replica, whichever replica the observer is on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from gateway.consoles.codes import CLOSE_OWNER_CLOSED, CODES
from gateway.consoles.registry import ConsoleRegistry, LiveConsole, WatchListener
from gateway.state.base import StateUnavailable, Watcher, Watchers

__all__ = ["LEFT_TTL", "decide_join", "end_observers", "owner_notices", "watcher_view"]

log = logging.getLogger("gateway.shadowing")

# A left or refused entry stays this long, so that every replica (and the owner's page) hears of it even
# when the message is lost; a joined one lives as long as its replica refreshes it.
LEFT_TTL = 60.0
_SHOWN = ("pending", "approved", "joined")  # who the owner's page lists
_EVENT = {
    "pending": "requested",
    "approved": "approved",
    "refused": "refused",
    "joined": "joined",
    "left": "left",
}


def watcher_view(watcher: Watcher) -> dict[str, Any]:
    """What a page may know of a watcher (no replica, no console ids of others)."""
    return {
        "id": watcher.id,
        "user": watcher.user,
        "name": watcher.name,
        "status": watcher.status,
        "requested": watcher.requested,
        "since": watcher.since or None,
        "moderator": watcher.moderator,
    }


def _events(before: dict[str, Watcher], after: dict[str, Watcher]) -> list[dict[str, str]]:
    """Each change, in words the page shows: requested, approved, refused, joined, left (a joined entry
    that lapsed because its replica went away has left too)."""
    events = []
    for watch_id, now in after.items():
        was = before.get(watch_id)
        if was is None or was.status != now.status:
            events.append({"event": _EVENT.get(now.status, now.status), "user": now.user, "name": now.name})
    for watch_id, was in before.items():
        if watch_id not in after and was.status in _SHOWN:
            events.append({"event": "left", "user": was.user, "name": was.name})
    return events


def owner_notices(live: LiveConsole) -> WatchListener:
    """The owner's page hears every change: the list (with the pending requests to decide) and what
    happened. Advisory: a page too slow to take a notice gets the full list with the next one."""

    async def changed(before: dict[str, Watcher], after: dict[str, Watcher]) -> None:
        relay = live.relay
        if relay is None:
            return
        watchers = [watcher_view(w) for w in after.values() if w.status in _SHOWN]
        await relay.notify({"type": "watchers", "watchers": watchers, "events": _events(before, after)})

    return changed


async def decide_join(
    store: Watchers, console_id: str, watch_id: str, approve: bool, by: str, ttl: float
) -> Watcher | None:
    """The owner's answer to a pending join; None when there is nothing pending to decide (unknown,
    lapsed, or decided meanwhile: of two answers at once exactly one stands)."""
    entries = (await store.watchers([console_id])).get(console_id, [])
    pending = next((w for w in entries if w.id == watch_id and w.status == "pending"), None)
    if pending is None:
        return None
    decided = dataclasses.replace(pending, status="approved" if approve else "refused", decided_by=by)
    return decided if await store.watcher_decide(decided, ttl if approve else LEFT_TTL) else None


async def end_observers(registry: ConsoleRegistry, live: LiveConsole) -> None:
    """The owner's console ended: end every console watching it (on any replica), saying why. Only for a
    console that ever had watchers: ending one costs a scan of the ledger."""
    if not live.watchers:
        return
    code = CLOSE_OWNER_CLOSED
    try:
        await registry.terminate(
            by="owner_closed", code=code, reason=CODES[code].reason, watching=live.record.id
        )
    except StateUnavailable as exc:
        log.warning("observers of console %s not ended (shared state unavailable): %s", live.record.id, exc)
