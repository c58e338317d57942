"""Watching a live console (docs/shadowing.md), top to bottom: `join_console`, the observer's path.

find the console (live, in the shared ledger, on any replica) → admit (as any console: draining, cloud,
lock, request rate) → register the observer's own console (it counts toward the per-user and global
limits; its record names the console it watches) → decide (the server as the cloud describes it now, and
policy's `join` on it) → approval (where the rule wants the owner's: the request waits in the shared state,
with no upstream connection and no frame, until the owner approves over HTTP, refuses, or time runs out)
→ a fresh console URL for the same server and the observer's own upstream connection, forced shared and
view-only whatever the observer's own rights → the last check → hello → relay → account.

The owner's relay is never touched: an observer's slowness back-pressures only its own upstream, and its
ClientInit goes upstream as shared, so the VNC server disconnects nobody. The steps shared with opening a
console are opening.py's; the owner's side (notices, decisions, the end) is consoles/watchers.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.audit import COMMON_FIELDS
from gateway.auth.cookie import SessionData
from gateway.clouds.base import CloudProvider, Server
from gateway.consoles.codes import (
    CLOSE_DENIED,
    CLOSE_GOING_AWAY,
    CLOSE_JOIN_REFUSED,
    CLOSE_JOIN_TIMEOUT,
    CLOSE_LIMIT,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
    CODES,
    REASON_STATE_DOWN,
)
from gateway.consoles.moderation import may_moderate
from gateway.consoles.opening import (
    Browser,
    Closed,
    ConsoleServices,
    Refusal,
    _admit,
    _connect,
    _hand_over,
    _hello,
    _refusal,
    _Refused,
    _register,
    _relay,
    _server,
    _unless_terminated,
)
from gateway.consoles.registry import LiveConsole, new_record
from gateway.consoles.watchers import LEFT_TTL
from gateway.policy import Decision, Demands, JoinDecision, Permission
from gateway.state.base import ConsoleRecord, StateUnavailable, Watcher

__all__ = ["JoinRequest", "Observer", "join_console"]

log = logging.getLogger("gateway.shadowing")

_NO_CONSOLE = "No such live console: it may have ended"
_WAKE = 1.0  # seconds: how often a waiting join looks at its own console (a termination, the owner's end)


class Observer(Browser, Protocol):
    """The observer's page: the hello, and its leaving while it waits for approval (before the hello it
    sends nothing, so the wait can listen for its close)."""

    async def left(self) -> None:
        """Return once the page has closed its socket."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    console_id: str  # the console to watch
    session: SessionData | None
    client: str
    audit: Mapping[str, Any]
    state_down: bool = False


async def join_console(
    request: JoinRequest, browser: Observer, services: ConsoleServices
) -> Refusal | Closed:
    session = request.session
    if session is None:
        return Refusal(CLOSE_UNAUTHENTICATED, CODES[CLOSE_UNAUTHENTICATED].reason, "unauthenticated")
    if request.state_down:
        services.metrics.refused("state")
        return Refusal(CLOSE_LIMIT, REASON_STATE_DOWN, "state")
    try:
        owner = await _watched(services, request.console_id)
    except StateUnavailable as exc:
        log.warning("join refused: shared state unavailable: %s", exc)
        services.metrics.refused("state")
        return Refusal(CLOSE_LIMIT, REASON_STATE_DOWN, "state")
    if owner is None:
        services.metrics.refused("not_found")
        return Refusal(CLOSE_NOT_FOUND, _NO_CONSOLE, "not_found")
    base = {**request.audit, "cloud": owner.cloud, "server_id": owner.server_id, "watching": owner.id}
    services.audit.emit("console_requested", **base, requested="view")
    live: LiveConsole | None = None
    watch: Watcher | None = None
    try:
        provider = await _admit(services, session, base)
        record = new_record(
            id=secrets.token_urlsafe(9),
            user=session.user,
            groups=list(session.groups),
            method=session.method,
            sid=session.sid,
            cloud=owner.cloud,
            server_id=owner.server_id,
            server_name=owner.server_name,
            project_id=owner.project_id,
            permission=str(Permission.VIEW),
            client=request.client,
            replica=services.replica,
            watching=owner.id,
        )
        live = await _register(services, record, base)
        base["console_id"] = record.id
        services.registry.expire_at(live, session.created + services.config.session.absolute_lifetime)
        server, join = await _decide(services, provider, session, base)
        base.update(permission=str(Permission.VIEW), rule=join.rule)
        live.server = server
        watch = Watcher(
            id=secrets.token_urlsafe(6),
            console_id=owner.id,
            user=session.user,
            name=session.email or session.user,
            requested=services.wall(),
            replica=services.replica,
            groups=list(session.groups),
            observer_console=record.id,
            moderator=may_moderate(owner.moderation, owner.user, session.user, session.groups),
        )
        about = {**_about(base), "watch_id": watch.id, "target_user": owner.user}
        services.audit.emit(
            "join_requested", **about, console_id=record.id, rule=join.rule, reason=join.reason
        )
        if join.approval and session.user != owner.user:
            await _approval(services, live, watch, owner, browser, base)
        else:
            watch.status = "approved"
            await _write(services, watch, services.config.console.join_approval_timeout)
        _unless_terminated(live)
        decision = _as_observer(services, owner, server, join)
        # No idle timeout: watching is not typing, and the view ends with the console it watches.
        link, opened = await _connect(services, provider, server, decision, idle=False)
        # A moderator's page may end the console (web/moderation.py): it needs the console's id.
        observer = {"owner": owner.user, "console_id": owner.id, "moderator": watch.moderator}
        hello = {**_hello(services, record, server, decision), "observer": observer, "idle_timeout": 0}
        await _hand_over(services, session, live, link, browser, hello)
        watch.status, watch.since = "joined", services.wall()
        live.watch = watch  # from here the registry refreshes the entry while this console lives
        await _write(services, watch, services.registry.watcher_ttl)
        services.audit.emit("observer_joined", **about, console_id=record.id)
        gauge = services.metrics.observers.labels(state="joined")
        gauge.inc()
        try:
            closed = await _relay(services, live, link, base, opened)
        finally:
            gauge.dec()
        services.audit.emit(
            "observer_left",
            **about,
            console_id=record.id,
            closed_by=closed.closed_by,
            reason=closed.info.reason,
            duration=round(services.wall() - watch.since, 3),
        )
        return closed
    except _Refused as refused:
        return _refusal(services, refused, base, live)
    finally:
        if live is not None:
            live.watch = None
            await services.registry.release(live.record.id)
        if watch is not None and watch.status in ("approved", "joined", "pending"):
            watch.status = "left"
            with contextlib.suppress(StateUnavailable):
                await _write(services, watch, LEFT_TTL)


async def _watched(services: ConsoleServices, console_id: str) -> ConsoleRecord | None:
    """The live console to watch, on whichever replica it runs; never another observer's."""
    for record in await services.registry.all():
        if record.id == console_id and not record.watching:
            return record
    return None


async def _decide(
    services: ConsoleServices, provider: CloudProvider, session: SessionData, base: dict[str, Any]
) -> tuple[Server, JoinDecision]:
    """The server as the cloud describes it now, and whether policy lets this user watch consoles on it."""
    server = await _server(services, provider, base)
    join = services.policy.may_join(session.user, session.groups, server)
    if not join.allowed:
        services.audit.emit(
            "console_denied", **base, **_server_fields(server), rule=join.rule, reason=join.reason
        )
        raise _Refused(CLOSE_DENIED, "You may not watch this console", "denied")
    unavailable = server.unavailable_reason()
    if unavailable:
        raise _Refused(CLOSE_UNAVAILABLE, f"The console cannot open: {unavailable}", "unavailable")
    base.update(_server_fields(server))
    return server, join


def _server_fields(server: Server) -> dict[str, str]:
    return {"server_name": server.name, "project_id": server.project_id}


def _about(base: dict[str, Any]) -> dict[str, Any]:
    """What every shadowing audit line carries: who, where, and the console watched."""
    keep = (*COMMON_FIELDS, "cloud", "server_id", "server_name", "project_id", "watching")
    return {k: base[k] for k in keep if k in base}


def _as_observer(
    services: ConsoleServices, owner: ConsoleRecord, server: Server, join: JoinDecision
) -> Decision:
    """What the observer's filters enforce: view only (nothing typed, pointed or pasted reaches the
    server, and ClientInit goes upstream as shared), and the owner's rule's restriction on copying text
    out of the console, so that watching never shows more than the owner may take."""
    owner_demands = services.policy.decide(owner.user, owner.groups, server).demands
    demands = Demands(copy=owner_demands.copy, paste=False, clipboard_max=owner_demands.clipboard_max)
    return Decision(Permission.VIEW, join.rule, join.reason, demands)


async def _write(services: ConsoleServices, watch: Watcher, ttl: float) -> None:
    """Write the entry, and tell every replica (the owner's page hears of it on the owner's)."""
    await services.store.watcher_put(watch, ttl)
    try:
        await services.registry.publish_watchers(watch.console_id)
    except StateUnavailable as exc:  # reconciliation re-reads it within a sync interval
        log.warning("watchers change of console %s not published: %s", watch.console_id, exc)


async def _approval(
    services: ConsoleServices,
    live: LiveConsole,
    watch: Watcher,
    owner: ConsoleRecord,
    browser: Observer,
    base: dict[str, Any],
) -> None:
    """Wait for the owner's answer, holding nothing open upstream. The answer reaches this replica as a
    watchers change (the command, or the next reconciliation); a timeout is a decision too, taken with the
    same compare-and-set as the owner's, so exactly one of them stands. A page that leaves meanwhile
    withdraws its request at once (its limit slot is freed, the owner's list updated)."""
    timeout = services.config.console.join_approval_timeout
    heard = asyncio.Event()

    async def changed(before: dict[str, Watcher], after: dict[str, Watcher]) -> None:
        heard.set()

    live.watch_listeners.append(changed)
    gauge = services.metrics.observers.labels(state="pending")
    gauge.inc()
    gone = asyncio.ensure_future(browser.left())
    gone.add_done_callback(lambda _: heard.set())
    try:
        await _write(services, watch, timeout + LEFT_TTL)
        notice = {"type": "join_pending", "owner": owner.user, "timeout": timeout}
        try:
            await browser.send_json(notice)
        except ConnectionError:
            raise _Refused(CLOSE_GOING_AWAY, "", "browser_gone") from None
        deadline = services.monotonic() + timeout
        while True:
            _unless_terminated(live)
            if gone.done():
                raise _Refused(CLOSE_GOING_AWAY, "", "browser_gone")
            mine = live.watchers.get(watch.id)
            if mine is not None and mine.status == "approved":
                watch.status, watch.decided_by = "approved", mine.decided_by
                return
            if mine is not None and mine.status == "refused":
                watch.status = "refused"  # the owner's replica audited it
                raise _Refused(CLOSE_JOIN_REFUSED, CODES[CLOSE_JOIN_REFUSED].reason, "join_refused")
            left = deadline - services.monotonic()
            if left <= 0:
                await _time_out(services, watch, owner, base)
                await services.registry.refresh_watchers({owner.id})  # the owner answered just in time
                continue
            heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), min(left, _WAKE))
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await gone  # the page's socket is free for the relay again
        gauge.dec()
        live.watch_listeners.remove(changed)


async def _time_out(
    services: ConsoleServices, watch: Watcher, owner: ConsoleRecord, base: dict[str, Any]
) -> None:
    """No answer in time: refuse the request in the owner's stead, unless the owner answered first."""
    timed_out = dataclasses.replace(watch, status="refused", decided_by="timeout")
    if not await services.store.watcher_decide(timed_out, LEFT_TTL):
        return
    watch.status = "refused"
    with contextlib.suppress(StateUnavailable):
        await services.registry.publish_watchers(owner.id)
    services.audit.emit(
        "join_refused", **_about(base), watch_id=watch.id, target_user=owner.user, closed_by="timeout"
    )
    raise _Refused(CLOSE_JOIN_TIMEOUT, CODES[CLOSE_JOIN_TIMEOUT].reason, "join_timeout")
