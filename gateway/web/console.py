"""The console WebSocket: check who and what, ask the cloud for a fresh console URL, connect, relay.

Refusals after the upgrade are WebSocket closes with a 4xxx code and a short reason the console page shows;
before the upgrade only the Origin check answers with HTTP 403 (cross-site WebSocket hijacking).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.clouds.base import CloudError, CloudErrorKind, Server
from gateway.consoles import aiohttp_fastpath
from gateway.consoles.codes import (
    CLOSE_CLOUD,
    CLOSE_DENIED,
    CLOSE_DRAINING,
    CLOSE_LIMIT,
    CLOSE_LINK_EXPIRED,
    CLOSE_LOCKED,
    CLOSE_LOGGED_OUT,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
    CLOSE_UPSTREAM_TLS,
    CLOSE_UPSTREAM_UNREACHABLE,
    CLOSE_UPSTREAM_URL,
    REASON_LOCKED,
    REASON_LOGGED_OUT,
    REASON_STATE_DOWN,
)
from gateway.consoles.registry import LiveConsole, new_record
from gateway.consoles.relay import Relay
from gateway.consoles.relay_core import CloseInfo, RelayCore
from gateway.policy import Permission
from gateway.rfb import ClientMessageFilter
from gateway.state.base import StateUnavailable
from gateway.upstream import (
    UpstreamError,
    UpstreamErrorKind,
    UpstreamURLError,
    open_upstream,
    peer_address,
)
from gateway.web.api import audit_base
from gateway.web.http import origin_allowed
from gateway.web.keys import CLIENT, GATEWAY, SESSION, STATE_DOWN

log = logging.getLogger("gateway.console")
routes = web.RouteTableDef()

_CLOUD_CODES = {
    CloudErrorKind.NOT_FOUND: CLOSE_NOT_FOUND,
    CloudErrorKind.BAD_STATE: CLOSE_UNAVAILABLE,
    CloudErrorKind.LOCKED: CLOSE_UNAVAILABLE,
    CloudErrorKind.THROTTLED: CLOSE_LIMIT,
}


class Refused(Exception):
    """A console that will not open: the close code, the reason the user reads, and the audit outcome."""

    def __init__(
        self, code: int, reason: str, outcome: str, *, failed: bool = False, upstream: str | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.outcome = outcome
        self.failed = failed  # allowed by policy and limits, then failed: audited as console_failed
        self.upstream = upstream  # the host:port tried, when it got that far


def _reason(text: str) -> str:
    """Close reasons are limited to 123 bytes of UTF-8."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode(errors="ignore") + "..."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@routes.get("/ws/console/{cloud}/{server_id}")
async def console_socket(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    if not origin_allowed(request, gw.origins):
        log.warning("console WebSocket refused: Origin %r not allowed", request.headers.get("Origin"))
        return web.Response(status=403, text="Cross-origin WebSocket refused")
    console = gw.config.console
    ws = web.WebSocketResponse(
        protocols=("binary",),
        heartbeat=console.keepalive or None,
        max_msg_size=console.max_message_size,
        compress=False,
    )
    await ws.prepare(request)
    session = request.get(SESSION)
    if session is None:
        await ws.close(code=CLOSE_UNAUTHENTICATED, message=b"Your sign-in has expired; sign in again")
        return ws
    if request.get(STATE_DOWN):
        gw.metrics.console_refusals_total.labels(reason="state").inc()
        await ws.close(code=CLOSE_LIMIT, message=REASON_STATE_DOWN.encode())
        return ws
    cloud_name = request.match_info["cloud"]
    server_id = request.match_info["server_id"]
    base = audit_base(request, session)
    base.update(cloud=cloud_name, server_id=server_id)
    gw.audit.emit("console_requested", **base)
    live: LiveConsole | None = None
    relay: Relay | None = None
    try:
        await _admit(request, base)
        console_id = secrets.token_urlsafe(9)
        record = new_record(
            id=console_id,
            user=session.user,
            groups=list(session.groups),
            method=session.method,
            sid=session.sid,
            cloud=cloud_name,
            server_id=server_id,
            server_name="",
            project_id="",
            permission="",
            client=request[CLIENT],
            replica=gw.replica,
        )
        # Registered before the cloud is asked anything (that can take seconds): from here on a lock,
        # sign-out or termination finds this console, and _still_wanted covers what came before.
        live = await _acquire(request, record, base)
        base["console_id"] = console_id
        live.expires = session.created + gw.config.session.absolute_lifetime
        server, permission, rule = await _decide(request, base)
        base.update(
            server_name=server.name, project_id=server.project_id, permission=str(permission), rule=rule
        )
        record.server_name, record.project_id = server.name, server.project_id
        record.permission = str(permission)
        live.server = server
        _unless_terminated(live)  # ended while the cloud answered: do not ask it for a console token
        connect_started = time.monotonic()
        upstream, upstream_addr = await _connect(request, server)
        base_open = {
            "upstream": upstream_addr,
            "upstream_address": peer_address(upstream),
            "connect_duration": round(time.monotonic() - connect_started, 3),
        }
        relay = Relay(
            ws,
            upstream,
            RelayCore(
                ClientMessageFilter(
                    view_only=permission is Permission.VIEW, allow_exclusive=console.allow_exclusive
                ),
                idle_timeout=console.idle_timeout or None,
                idle_warning=console.idle_warning or None,
                max_duration=console.max_duration or None,
            ),
            # As the upstream was opened: frames pass through (unless the fast path is switched off).
            max_msg_size=console.max_message_size if console.frame_passthrough else None,
        )
        try:
            await _still_wanted(request, live)
            await ws.send_json(
                {
                    "type": "hello",
                    "console_id": console_id,
                    "permission": str(permission),
                    "server": {"name": server.name, "id": server.id, "cloud": cloud_name},
                    "idle_timeout": console.idle_timeout,
                    "max_duration": console.max_duration,
                }
            )
        except BaseException as exc:
            # Nobody will relay this upstream (refused at the last moment, the browser left while we
            # connected, or the handler is being cancelled): close it now rather than leave it, and its
            # keep-alive pings, behind.
            await _close_quietly(upstream)
            if isinstance(exc, ConnectionError):
                log.info("console %s for %s: the browser left before it opened", console_id, session.user)
                raise Refused(1001, "", "browser_gone") from None
            raise
        gw.registry.attach(console_id, relay)
        gw.metrics.sessions_started_total.inc()
        gw.metrics.active_sessions.labels(permission=str(permission)).inc()
        gw.audit.emit("console_opened", **base, **base_open)
        try:
            info = await relay.run()
        finally:
            gw.metrics.active_sessions.labels(permission=str(permission)).dec()
            aiohttp_fastpath.disarm_heartbeat(upstream)
        _finish(request, base, relay, info, live)
    except Refused as refusal:
        gw.metrics.console_refusals_total.labels(reason=refusal.outcome).inc()
        if refusal.failed:
            gw.audit.emit(
                "console_failed",
                **base,
                failure=refusal.outcome,
                close_code=refusal.code,
                reason=_reason(refusal.reason),
                **({"upstream": refusal.upstream} if refusal.upstream else {}),
            )
        if not ws.closed:
            await ws.close(code=refusal.code, message=_reason(refusal.reason).encode())
        if live is not None and live.server is not None and live.closed_by is None:
            gw.metrics.sessions_ended_total.labels(outcome=refusal.outcome).inc()
    finally:
        if live is not None:
            await gw.registry.release(live.record.id)
        if not ws.closed:
            await ws.close()
    return ws


async def _admit(request: web.Request, base: dict[str, Any]) -> None:
    """What needs no cloud call: draining, a known cloud, the user's lock and request rate."""
    gw = request.app[GATEWAY]
    session = request[SESSION]
    if gw.draining:
        raise Refused(CLOSE_DRAINING, "The gateway is restarting; try again in a moment", "draining")
    provider = gw.clouds.get(base["cloud"])
    if provider is None:
        gw.audit.emit("console_denied", **base, reason="unknown cloud", rule=None)
        raise Refused(CLOSE_NOT_FOUND, "No such cloud is configured", "not_found")
    try:
        if await gw.store.is_locked(session.user):
            gw.audit.emit("console_denied", **base, reason="user locked", rule=None)
            raise Refused(CLOSE_DENIED, "Your account is locked by an administrator", "locked")
        wait = await gw.store.take_token(
            f"rate:{session.user}",
            rate=gw.config.limits.requests_per_minute / 60.0,
            burst=gw.config.limits.burst,
        )
    except StateUnavailable as exc:
        if not gw.config.state.redis.fail_open:
            log.warning("console refused: shared state unavailable: %s", exc)
            raise Refused(CLOSE_LIMIT, REASON_STATE_DOWN, "state") from None
        wait = None
    if wait is not None:
        gw.audit.emit("limit_refused", **base, limit="rate", reason=f"retry in {int(wait) + 1} s")
        raise Refused(
            CLOSE_LIMIT, f"Too many console requests; try again in {int(wait) + 1} s", "rate_limited"
        )


async def _decide(request: web.Request, base: dict[str, Any]) -> tuple[Server, Permission, str | None]:
    """The server as the cloud describes it now, and what policy grants on it."""
    gw = request.app[GATEWAY]
    session = request[SESSION]
    provider = gw.clouds[base["cloud"]]
    try:
        server = await provider.get_server(base["server_id"])
    except CloudError as exc:
        log.warning("console for %s: cloud API error: %s", base["server_id"], exc)
        if exc.kind is CloudErrorKind.NOT_FOUND:
            gw.audit.emit("console_denied", **base, reason="no such server", rule=None)
        raise Refused(
            _CLOUD_CODES.get(exc.kind, CLOSE_CLOUD), _sentence(exc.user_message), "cloud_error"
        ) from None
    decision = gw.policy.decide(session.user, session.groups, server)
    if decision.permission is Permission.NONE:
        gw.audit.emit(
            "console_denied",
            **base,
            server_name=server.name,
            project_id=server.project_id,
            rule=decision.rule,
            reason=decision.reason,
        )
        # The same words as for an unknown server: do not confirm what exists.
        raise Refused(CLOSE_DENIED, "You may not open this console", "denied")
    unavailable = server.unavailable_reason()
    if unavailable:
        raise Refused(CLOSE_UNAVAILABLE, f"The console cannot open: {unavailable}", "unavailable")
    return server, decision.permission, decision.rule


async def _still_wanted(request: web.Request, live: LiveConsole) -> None:
    """The last word before the first relayed byte. Lock and sign-out were checked before the cloud call,
    which can take seconds; one that landed before this console was registered reached no relay, so the
    state is read again now. From registration on, a termination reaches `live` itself (pending_close)."""
    gw = request.app[GATEWAY]
    session = request[SESSION]
    try:
        locked = await gw.store.is_locked(session.user)
        revoked = await gw.store.is_revoked(session.sid)
    except StateUnavailable as exc:
        if gw.config.state.redis.fail_open:
            return
        log.warning("console refused: shared state unavailable: %s", exc)
        raise Refused(CLOSE_LIMIT, REASON_STATE_DOWN, "state", failed=True) from None
    if locked:  # the words a lock or sign-out use when they close a live console
        raise Refused(CLOSE_LOCKED, REASON_LOCKED, "admin", failed=True)
    if revoked:
        raise Refused(CLOSE_LOGGED_OUT, REASON_LOGGED_OUT, "logout", failed=True)
    _unless_terminated(live)


def _unless_terminated(live: LiveConsole) -> None:
    if live.pending_close is not None:
        code, reason, by = live.pending_close
        raise Refused(code, reason, by, failed=True)


async def _acquire(request: web.Request, record: Any, base: dict[str, Any]) -> LiveConsole:
    gw = request.app[GATEWAY]
    limits = gw.config.limits
    try:
        refusal = await gw.registry.acquire(record, per_user=limits.per_user, global_max=limits.global_max)
    except StateUnavailable as exc:
        log.warning("console refused: shared state unavailable: %s", exc)
        raise Refused(CLOSE_LIMIT, REASON_STATE_DOWN, "state") from None
    if refusal == "per_user":
        gw.audit.emit("limit_refused", **base, limit="per_user", reason=f"{limits.per_user} consoles open")
        raise Refused(
            CLOSE_LIMIT,
            f"You already have {limits.per_user} consoles open; close one first",
            "limit_per_user",
        )
    if refusal == "global":
        gw.audit.emit("limit_refused", **base, limit="global", reason="gateway full")
        raise Refused(CLOSE_LIMIT, "The gateway is at its console limit; try again later", "limit_global")
    return gw.registry.local[record.id]


async def _connect(request: web.Request, server: Server) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A fresh console URL for every connection (tokens are one-time), then the upstream WebSocket
    and the host:port it was opened to (never the URL)."""
    gw = request.app[GATEWAY]
    provider = gw.clouds[server.cloud]
    try:
        console_url = await provider.remote_console(server.id)
    except CloudError as exc:
        log.warning("remote_console for %s failed: %s", server.id, exc)
        raise Refused(
            _CLOUD_CODES.get(exc.kind, CLOSE_CLOUD), _sentence(exc.user_message), "cloud_error", failed=True
        ) from None
    gw.last_cloud_ok = time.time()
    try:
        target = provider.console_target(console_url)
    except UpstreamURLError as exc:
        log.error("cloud returned an unusable console URL for %s: %s", server.id, exc)
        raise Refused(
            CLOSE_UPSTREAM_URL,
            "The cloud returned a console address the gateway cannot use",
            "upstream_url",
            failed=True,
        ) from None
    del console_url
    tried = f"{target.host}:{target.port}"
    started = time.monotonic()
    up = gw.config.upstream
    try:
        upstream = await open_upstream(
            gw.upstream_http,
            target,
            allowlist=gw.allowlist,
            ssl_context=gw.upstream_ssl if target.scheme == "wss" else None,
            connect_timeout=up.connect_timeout,
            heartbeat=gw.config.console.keepalive or None,
            max_msg_size=gw.config.console.max_message_size,
        )
    except UpstreamError as exc:
        log.warning("upstream connect for %s failed: %s", server.id, exc)
        code = {
            UpstreamErrorKind.TLS: CLOSE_UPSTREAM_TLS,
            UpstreamErrorKind.NOT_ALLOWED: CLOSE_UPSTREAM_URL,
            UpstreamErrorKind.REDIRECT: CLOSE_UPSTREAM_URL,
            UpstreamErrorKind.EXPIRED: CLOSE_LINK_EXPIRED,
        }.get(exc.kind, CLOSE_UPSTREAM_UNREACHABLE)
        raise Refused(
            code,
            _sentence(exc.user_message),
            f"upstream_{exc.kind.name.lower()}",
            failed=True,
            upstream=tried,
        ) from None
    gw.metrics.upstream_connect_seconds.observe(time.monotonic() - started)
    return upstream, tried


async def _close_quietly(upstream: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await upstream.close()


def _finish(
    request: web.Request, base: dict[str, Any], relay: Relay, info: CloseInfo, live: LiveConsole
) -> None:
    gw = request.app[GATEWAY]
    stats = relay.stats
    closed_by = live.closed_by or info.by
    gw.metrics.sessions_ended_total.labels(outcome=closed_by).inc()
    gw.metrics.bytes_relayed_total.labels(direction="to_browser").inc(stats.bytes_to_browser)
    gw.metrics.bytes_relayed_total.labels(direction="to_upstream").inc(stats.bytes_to_upstream)
    gw.metrics.messages_relayed_total.labels(direction="to_browser").inc(stats.msgs_to_browser)
    gw.metrics.messages_relayed_total.labels(direction="to_upstream").inc(stats.msgs_to_upstream)
    gw.metrics.dropped_messages_total.inc(stats.dropped)
    gw.audit.emit(
        "console_closed",
        **base,
        closed_by=closed_by,
        close_code=info.code,
        reason=info.reason,
        bytes_to_browser=stats.bytes_to_browser,
        bytes_to_upstream=stats.bytes_to_upstream,
        messages_to_browser=stats.msgs_to_browser,
        messages_to_upstream=stats.msgs_to_upstream,
        dropped_messages=stats.dropped,
        duration=round(time.monotonic() - stats.started, 3),
    )
    log.info(
        "console %s for %s on %s closed by %s (%s %s)",
        base["console_id"],
        base.get("user"),
        base.get("server_name"),
        closed_by,
        info.code,
        info.reason,
    )
