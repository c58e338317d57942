"""The registry of live consoles: the ones this replica relays, and the shared view of all of them.

("Session" means the sign-in; a console is one relayed connection to one server.)

Limits and the admin list go through the state store so they hold across replicas; a terminate or lock is
published as a command and every replica closes the consoles it holds locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import operator
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.auth.identity import Identity
from gateway.clouds.base import Server
from gateway.consoles.codes import (
    CLOSE_LOCKED,
    CLOSE_LOGGED_OUT,
    CLOSE_OWNER_CLOSED,
    CLOSE_SIGNIN_EXPIRED,
    CODES,
    REASON_LOCKED,
    REASON_LOGGED_OUT,
)
from gateway.consoles.relay_core import RelayStats
from gateway.state.base import Command, ConsoleRecord, StateStore, StateUnavailable, Watcher

__all__ = ["ConsoleRegistry", "LiveConsole", "WatchListener", "new_record"]

log = logging.getLogger("gateway.consoles")


class Relaying(Protocol):
    """What the registry needs of a running relay (consoles/relay.py's Relay)."""

    @property
    def stats(self) -> RelayStats: ...

    def terminate(self, code: int, reason: str) -> None: ...

    async def notify(self, payload: dict[str, Any]) -> None: ...


# Called with a console's watchers before and after a change (watch id -> entry; docs/shadowing.md).
WatchListener = Callable[[dict[str, Watcher], dict[str, Watcher]], Awaitable[None]]


@dataclass(slots=True)
class LiveConsole:
    record: ConsoleRecord
    relay: Relaying | None = None
    server: Server | None = None
    expires: float = math.inf  # wall-clock end of the browser session that opened it
    pending_close: tuple[int, str, str] | None = (
        None  # (code, reason, by) when terminated before the relay ran
    )
    closed_by: str | None = None
    grant: tuple[str, float] | None = None  # (rule, wall-clock end): opened through an approved request
    # Shadowing: the watchers of the console this one shows (its own, or for an observer the owner's),
    # as last read from the shared state, and who hears of a change (consoles/joining.py, moderation).
    watchers: dict[str, Watcher] = field(default_factory=dict)
    watch_listeners: list[WatchListener] = field(default_factory=list)
    watch: Watcher | None = None  # an observer's own entry, refreshed in the state while it lives
    # The record's fields as last written to the shared state, and when (monotonic): a sync writes it
    # again only if they changed or its entry's TTL needs refreshing, so idle consoles cost little.
    written: tuple[object, ...] = ()
    written_at: float = -math.inf

    @property
    def watched(self) -> str:
        """The console whose watchers concern this one: the owner's for an observer, else its own."""
        return self.record.watching or self.record.id

    def grants(self, now: float) -> frozenset[str]:
        """The just-in-time rules this console may still count on (for a re-decision)."""
        if self.grant is not None and self.grant[1] > now:
            return frozenset({self.grant[0]})
        return frozenset()

    def terminate(self, code: int, reason: str, by: str) -> None:
        self.closed_by = by
        if self.relay is not None:
            self.relay.terminate(code, reason)
        else:
            self.pending_close = (code, reason, by)


class ConsoleRegistry:
    """Local relays plus the shared store; a periodic sync keeps byte counts (and Redis TTLs) fresh."""

    def __init__(
        self,
        store: StateStore,
        *,
        replica: str,
        sync_interval: float = 5.0,
        refresh_every: float = 10.0,
        tick: float = 1.0,
        termination_ttl: float = 86400.0,
        watcher_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`termination_ttl` keeps a termination request in the shared state for at least as long as the
        console could live (the sign-in's absolute lifetime). An unchanged record is written again once
        `refresh_every` has passed since its last write (a third of the ledger's TTL: app.py), so with
        `sync_interval` at most as long its entry is refreshed within two thirds of the TTL."""
        self.store = store
        self.replica = replica
        self._termination_ttl = termination_ttl
        self.watcher_ttl = watcher_ttl  # how long a joined watcher outlives its replica's last refresh
        self.local: dict[str, LiveConsole] = {}
        # Re-decides this replica's consoles when a user's identity changed (set by the Gateway, which
        # knows the policy); fed by `publish_identity` from whichever replica saw the change, and by
        # reconciliation with the groups `remember_groups` recorded.
        self.on_identity: Callable[[Identity], int] | None = None
        # Re-decides consoles whose access grant ended (set by the Gateway); run by reconciliation.
        self.on_grants_ended: Callable[[list[LiveConsole]], int] | None = None
        self._sync_interval = sync_interval
        self._refresh_every = refresh_every
        self._clock = clock  # the sync's, for when a record was written (the ledger's TTL runs on its own)
        self._tick = tick
        # (sign-in end, console id), earliest first: the per-tick expiry check reads only the front.
        # Entries of released consoles or of a changed end are skipped when they come due.
        self._expiries: list[tuple[float, str]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        await self.store.start(self._on_command)
        self._sync_task = asyncio.create_task(self._sync_loop(), name="console-registry-sync")

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.store.close()

    async def acquire(self, record: ConsoleRecord, *, per_user: int, global_max: int) -> str | None:
        refusal = await self.store.console_acquire(record, per_user=per_user, global_max=global_max)
        if refusal is None:
            self.local[record.id] = LiveConsole(record)
            self._idle.clear()
        return refusal

    def attach(self, console_id: str, relay: Relaying) -> None:
        """Hand the running relay over; a terminate that arrived while connecting is applied now."""
        live = self.local[console_id]
        live.relay = relay
        live.record.state = "open"
        if live.pending_close is not None:
            code, reason, by = live.pending_close
            live.terminate(code, reason, by)

    def expire_at(self, live: LiveConsole, when: float) -> None:
        """Close `live` once the wall clock reaches `when` (the end of the sign-in that opened it)."""
        live.expires = when
        if math.isfinite(when):
            heapq.heappush(self._expiries, (when, live.record.id))

    async def release(self, console_id: str) -> LiveConsole | None:
        live = self.local.pop(console_id, None)
        if not self.local:
            self._idle.set()
        if len(self._expiries) > 2 * len(self.local) + 64:
            # Released consoles' entries would otherwise stay until their sign-in ends (hours): rebuilt
            # from the live ones when they outnumber them, O(1) amortised per release.
            self._expiries = [(v.expires, k) for k, v in self.local.items() if math.isfinite(v.expires)]
            heapq.heapify(self._expiries)
        try:
            await self.store.console_release(console_id)
        except StateUnavailable:
            log.warning(
                "console %s not released in shared state (unreachable); it expires on its own", console_id
            )
        return live

    async def wait_empty(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    async def all(self) -> list[ConsoleRecord]:
        """Every replica's consoles; only this replica's while the shared store is unreachable."""
        try:
            records = {r.id: r for r in await self.store.consoles()}
        except StateUnavailable:
            log.warning("shared state unreachable: listing this replica's consoles only")
            records = {}
        for console_id, live in self.local.items():
            self._refresh(live)
            records[console_id] = live.record
        return sorted(records.values(), key=lambda r: r.started)

    async def terminate(self, *, by: str, code: int, reason: str, **match: str) -> None:
        """Ask every replica to close the consoles matching all of `match` (console_id, user or sid).

        The command is the fast path; a replica that misses it (its pub/sub connection dropped) finds the
        same verdict in the state when it reconciles: a lock or a revocation is state already, and a
        termination by console or user is recorded per console here first."""
        command = {"op": "terminate", "by": by, "code": code, "reason": reason, "match": match}
        if match.keys() & {"console_id", "user", "watching"}:
            for record in await self.store.consoles():
                if _matches(record, match):
                    verdict = {"code": code, "reason": reason, "by": by}
                    await self.store.request_termination(record.id, verdict, self._termination_ttl)
        await self.store.publish(command)

    async def reconcile(self) -> int:
        """Close the local consoles that the shared state says must end: their user is locked, their
        sign-in revoked, or a termination was requested; and re-decide those whose user's groups an SSO
        proxy changed; and read their watchers again. Runs every sync interval and after the command
        channel reconnects, so no verdict depends on one pub/sub message arriving."""
        lives = [live for live in self.local.values() if live.closed_by is None]
        if not lives:
            return 0
        await self.refresh_watchers()
        ended = await self._orphaned_observers(lives)
        locked = await self.store.locked_users()
        revoked = await self.store.revoked_sessions({live.record.sid for live in lives})
        requested = await self.store.termination_requests([live.record.id for live in lives])
        for live in lives:
            record = live.record
            verdict = requested.get(record.id)
            if live.closed_by is not None:
                continue  # an orphaned observer, just ended
            if verdict is not None:
                live.terminate(int(verdict["code"]), str(verdict["reason"]), str(verdict["by"]))
            elif record.user in locked:
                live.terminate(CLOSE_LOCKED, REASON_LOCKED, "admin")
            elif record.sid in revoked:
                live.terminate(CLOSE_LOGGED_OUT, REASON_LOGGED_OUT, "logout")
            else:
                continue
            ended += 1
            log.info("console %s of %s closed on reconciliation (%s)", record.id, record.user, live.closed_by)
        now = time.time()
        ended_grants = [live for live in lives if live.grant is not None and live.grant[1] <= now]
        if ended_grants and self.on_grants_ended is not None:
            ended += self.on_grants_ended(ended_grants)
            for live in ended_grants:
                live.grant = None  # re-decided without it once; what other rules give stands
        if self.on_identity is not None:
            # Groups an SSO proxy asserted on another replica: this one may have missed the command.
            users = {(live.record.user, live.record.method) for live in lives}
            for (user, method), groups in (await self.store.recorded_groups(users)).items():
                ended += self.on_identity(Identity(user, tuple(groups), method=method))
        return ended

    async def remember_groups(self, identity: Identity) -> None:
        """Record the groups an SSO proxy asserts for a user (at sign-in and on each change), so that a
        replica which misses an `identity` command still re-decides the user's consoles on reconciling."""
        await self.store.record_groups(identity.user, identity.method, identity.groups, self._termination_ttl)

    async def publish_identity(self, identity: Identity) -> None:
        """Ask every replica to re-decide the live consoles of `identity`'s user with its groups now."""
        await self.store.publish(
            {
                "op": "identity",
                "user": identity.user,
                "method": identity.method,
                "groups": list(identity.groups),
            }
        )

    async def _orphaned_observers(self, lives: list[LiveConsole]) -> int:
        """End the observers whose watched console is no longer in the ledger: it ended without its end
        reaching them, or its replica died (its entry lapsed). One ledger read, only when observers run."""
        observers = [live for live in lives if live.record.watching]
        if not observers:
            return 0
        listed = {record.id for record in await self.store.consoles()}
        ended = 0
        for live in observers:
            if live.record.watching not in listed and live.closed_by is None:
                live.terminate(CLOSE_OWNER_CLOSED, CODES[CLOSE_OWNER_CLOSED].reason, "owner_closed")
                ended += 1
        return ended

    async def publish_watchers(self, console_id: str) -> None:
        """Tell every replica that the watchers of `console_id` changed (they are in the state already)."""
        await self.store.publish({"op": "watchers", "console_id": console_id})

    async def refresh_watchers(self, console_ids: Collection[str] | None = None) -> None:
        """Read the watchers of the local consoles (of those that show one of `console_ids`) and hand
        each console whose list changed to its listeners; what the state says wins."""
        lives = [
            live
            for live in self.local.values()
            if live.closed_by is None and (console_ids is None or live.watched in console_ids)
        ]
        if not lives:
            return
        found = await self.store.watchers({live.watched for live in lives})
        for live in lives:
            now = {w.id: w for w in found.get(live.watched, ())}
            if now == live.watchers:
                continue
            before, live.watchers = live.watchers, now
            for listener in list(live.watch_listeners):
                try:
                    await listener(before, now)
                except Exception:
                    log.exception("watch listener of console %s failed", live.record.id)

    def terminate_local(
        self, predicate: Callable[[ConsoleRecord], bool], *, code: int, reason: str, by: str
    ) -> int:
        hits = [live for live in self.local.values() if predicate(live.record)]
        for live in hits:
            live.terminate(code, reason, by)
        return len(hits)

    async def _on_command(self, command: Command) -> None:
        if command.get("op") == "resync":
            try:
                await self.reconcile()
            except StateUnavailable as exc:
                log.warning("reconciliation after reconnect failed: %s", exc)
            return
        if command.get("op") == "watchers":
            try:
                await self.refresh_watchers({str(command.get("console_id"))})
            except StateUnavailable as exc:
                log.warning("watchers not read (reconciliation will): %s", exc)
            return
        if command.get("op") == "identity":
            if self.on_identity is not None:
                groups = tuple(str(g) for g in command.get("groups", ()))
                self.on_identity(Identity(str(command["user"]), groups, method=str(command["method"])))
            return
        if command.get("op") != "terminate":
            return
        match = {k: v for k, v in command.get("match", {}).items() if v is not None}
        if match:
            self.terminate_local(
                lambda record: _matches(record, match),
                code=int(command["code"]),
                reason=str(command["reason"]),
                by=str(command["by"]),
            )

    def _refresh(self, live: LiveConsole) -> None:
        if live.relay is not None:
            live.record.bytes_to_browser = live.relay.stats.bytes_to_browser
            live.record.bytes_to_upstream = live.relay.stats.bytes_to_upstream

    def expire_sessions(self, now: float) -> int:
        """Consoles must not outlive the sign-in that opened them; O(1) when none is due."""
        ended = 0
        while self._expiries and self._expiries[0][0] <= now:
            when, console_id = heapq.heappop(self._expiries)
            live = self.local.get(console_id)
            if live is None or live.expires != when:
                continue  # released, or its end moved (a later entry stands for it)
            live.terminate(CLOSE_SIGNIN_EXPIRED, CODES[CLOSE_SIGNIN_EXPIRED].reason, "session_expired")
            ended += 1
        return ended

    async def _sync_loop(self) -> None:
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(self._tick)
            self.expire_sessions(time.time())
            if time.monotonic() - last_sync < self._sync_interval:
                continue
            last_sync = time.monotonic()
            await self.sync()

    async def sync(self) -> None:
        """Reconcile, then write to the shared state the records that changed since their last write or
        whose entries' TTL needs refreshing (an idle one's: every `refresh_every`), and observers' entries."""
        try:
            await self.reconcile()
        except StateUnavailable:
            return
        except Exception:
            log.exception("console reconciliation failed")
        now = self._clock()
        for live in list(self.local.values()):
            self._refresh(live)
            try:
                fields = _record_fields(live.record)
                if fields != live.written or now - live.written_at >= self._refresh_every:
                    await self.store.console_update(live.record)
                    live.written, live.written_at = fields, now
                if live.watch is not None and live.closed_by is None:
                    await self.store.watcher_put(live.watch, self.watcher_ttl)
            except StateUnavailable:
                break
            except Exception:
                log.exception("console registry sync failed")
                break


_FIELD_OF = {"console_id": "id", "user": "user", "sid": "sid"}
# A record's fields as one tuple, in C; its lists are compared by value, and the code replaces a record's
# lists rather than changing them in place, so a change shows.
_record_fields = operator.attrgetter(*ConsoleRecord.__dataclass_fields__)


def _matches(record: ConsoleRecord, match: dict[str, str]) -> bool:
    return all(getattr(record, _FIELD_OF.get(k, k), None) == v for k, v in match.items())


def new_record(**fields: object) -> ConsoleRecord:
    return ConsoleRecord(started=time.time(), **fields)  # type: ignore[arg-type]
