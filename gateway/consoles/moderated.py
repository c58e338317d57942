"""A moderated console on its owner's replica: the moderation machine (consoles/moderation.py) fed from the
console's watcher list and its effects carried out.

The watcher list comes from the shared state (the registry hands every change to the console's watch
listeners, from the `watchers` command or, should that message be lost, from the next reconciliation),
so the state here follows the state there on whichever replica the moderators joined. A transition holds
or releases the operator's input in the relay (Relay.hold_input, which also tells the page), is audited
(`console_moderation`) and counted (metrics: moderated consoles waiting); an end closes the console with
4005. The grace of on_leave = "terminate" is one timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.audit import COMMON_FIELDS, AuditLog
from gateway.consoles.codes import CLOSE_MODERATION
from gateway.consoles.moderation import ModerationMachine, Transition, Watching
from gateway.consoles.registry import LiveConsole
from gateway.metrics import Metrics
from gateway.policy import Moderation
from gateway.state.base import Watcher

__all__ = ["ModeratedConsole"]

log = logging.getLogger("gateway.moderation")
# What console_moderation takes of the console's audit fields.
_AUDITED = frozenset(
    {*COMMON_FIELDS, "console_id", "server_id", "cloud", "server_name", "project_id"} | {"rule"}
)


class Holding(Protocol):
    """What moderation needs of the running relay (consoles/relay.py's Relay)."""

    async def hold_input(self, held: bool, notice: dict[str, object] | None = None) -> None: ...


class ModeratedConsole:
    """One moderated console's moderation, from registration until it closes."""

    def __init__(
        self,
        live: LiveConsole,
        rule: Moderation,
        *,
        audit: AuditLog,
        metrics: Metrics,
        base: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`base`: the fields of the console's audit lines (console, server, the owner as `user`)."""
        self._live = live
        self._audit = audit
        self._metrics = metrics
        self._base = base
        self._clock = clock
        self.machine = ModerationMachine(rule, live.record.user)
        self.current: Transition = self.machine.start()
        self._relay: Holding | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # One change at a time: the page's notices go out in the order the machine decided them.
        self._lock = asyncio.Lock()
        live.record.moderation = list(rule.groups)

    def opened(self) -> dict[str, object]:
        """The console is about to relay: audit and count its first state; the hello carries it."""
        self._record(None, self.current)
        return self.current.notice()

    def relaying(self, relay: Holding) -> None:
        """The relay runs from now on: listen to the watchers, and catch up with those already there."""
        self._relay = relay
        self._live.watch_listeners.append(self._changed)
        self._spawn(self._changed({}, self._live.watchers))

    async def _changed(self, _before: Mapping[str, Watcher], after: Mapping[str, Watcher]) -> None:
        watching = [Watching(w.user, w.name, tuple(w.groups), w.status) for w in after.values()]
        async with self._lock:
            await self._apply(self.machine.watchers(watching, self._clock()))

    async def _apply(self, transition: Transition | None) -> None:
        if transition is None:
            return
        before, self.current = self.current, transition
        if transition.state != before.state:
            self._record(before, transition)
        self._arm()
        if transition.state == "ended":
            self._live.terminate(CLOSE_MODERATION, transition.reason, "moderation")
        elif self._relay is not None:
            await self._relay.hold_input(transition.held, transition.notice())

    def _record(self, before: Transition | None, after: Transition) -> None:
        self._metrics.moderation(before.state if before else None, after.state)
        self._audit.emit(
            "console_moderation",
            **{k: v for k, v in self._base.items() if k in _AUDITED},
            moderation=after.state,
            moderators=list(after.moderators),
            reason=after.reason,
        )
        log.info("console %s: moderation %s (%s)", self._live.record.id, after.state, after.reason)

    def _arm(self) -> None:
        """A timer for the machine's deadline (the end of a grace), replacing any earlier one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.machine.deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self._clock())
            self._timer = loop.call_later(delay, lambda: self._spawn(self._tick()))

    async def _tick(self) -> None:
        async with self._lock:
            await self._apply(self.machine.tick(self._clock()))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work, name="console-moderation")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """The console ended: stop listening and counting it."""
        if self._timer is not None:
            self._timer.cancel()
        if self._changed in self._live.watch_listeners:
            self._live.watch_listeners.remove(self._changed)
        for task in self._tasks:
            task.cancel()
        self._metrics.moderation(self.current.state, None)
