"""What happens when a console opens, top to bottom: `open_console`.

admit (signed in, shared state reachable, not draining, a known cloud, not locked, within the request
rate) → register, within the per-user and global limits (before the cloud is asked anything: from here a
lock, sign-out or termination finds this console) → decide (the server as the cloud describes it now, and
what policy grants on it) → a fresh console URL (tokens are one-time) → the upstream target the provider
derives from it → connect → the last check (lock, sign-out or a termination that landed meanwhile) → hello
to the page → relay → account. Each step's refusal is a close code, the reason the user reads, and the
word the audit and the metrics record.

The use case holds no socket and imports no aiohttp: the web adapter (gateway/web/console.py) hands it
the browser (for the hello) and `connect`, which opens the upstream and makes the relay
(consoles/relay.py); everything else it needs comes in `ConsoleServices`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.audit import AuditLog
from gateway.auth.cookie import SessionData
from gateway.clouds.base import CloudError, CloudErrorKind, CloudProvider, Server
from gateway.config import GatewayConfig
from gateway.consoles.codes import (
    CLOSE_CLOUD,
    CLOSE_DENIED,
    CLOSE_DRAINING,
    CLOSE_GOING_AWAY,
    CLOSE_JUSTIFICATION,
    CLOSE_LIMIT,
    CLOSE_LINK_EXPIRED,
    CLOSE_LOCKED,
    CLOSE_LOGGED_OUT,
    CLOSE_NOT_FOUND,
    CLOSE_STEP_UP,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
    CLOSE_UPSTREAM_TLS,
    CLOSE_UPSTREAM_UNREACHABLE,
    CLOSE_UPSTREAM_URL,
    CODES,
    REASON_LOCKED,
    REASON_LOGGED_OUT,
    REASON_STATE_DOWN,
)
from gateway.consoles.moderated import ModeratedConsole
from gateway.consoles.recorded import RecordedConsole, RecordingUnavailable
from gateway.consoles.registry import ConsoleRegistry, LiveConsole, new_record
from gateway.consoles.relay_core import CloseInfo, RelayCore, RelayStats
from gateway.consoles.watchers import end_observers, owner_notices
from gateway.metrics import Metrics
from gateway.policy import MAX_JUSTIFICATION, Decision, Permission, Policy
from gateway.recording.recorder import RecordingSettings
from gateway.recording.store import RecordingStore
from gateway.rfb import ClientMessageFilter, ServerMessageFilter
from gateway.state.base import ConsoleRecord, StateStore, StateUnavailable, active_grants
from gateway.upstream import UpstreamError, UpstreamErrorKind, UpstreamTarget, UpstreamURLError

__all__ = ["Browser", "Closed", "ConsoleServices", "Link", "OpenRequest", "Refusal", "open_console"]

log = logging.getLogger("gateway.console")

_CLOUD_CODES = {
    CloudErrorKind.NOT_FOUND: CLOSE_NOT_FOUND,
    CloudErrorKind.BAD_STATE: CLOSE_UNAVAILABLE,
    CloudErrorKind.LOCKED: CLOSE_UNAVAILABLE,
    CloudErrorKind.THROTTLED: CLOSE_LIMIT,
}
_UPSTREAM_CODES = {
    UpstreamErrorKind.TLS: CLOSE_UPSTREAM_TLS,
    UpstreamErrorKind.NOT_ALLOWED: CLOSE_UPSTREAM_URL,
    UpstreamErrorKind.REDIRECT: CLOSE_UPSTREAM_URL,
    UpstreamErrorKind.EXPIRED: CLOSE_LINK_EXPIRED,
}


# -- what comes in, what goes out ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenRequest:
    cloud: str
    server_id: str
    session: SessionData | None  # the sign-in; None: not signed in
    client: str  # the browser's address
    audit: Mapping[str, Any]  # what every audit line of this request carries (request id, client, user)
    state_down: bool = False  # the shared state could not be read while identifying the request
    justification: str = ""  # the reason the user gave for opening (the page asks when a rule wants one)


class Browser(Protocol):
    """The browser's side, as far as opening needs it: the hello before the first RFB byte."""

    async def send_json(self, data: Any) -> None: ...


class Link(Protocol):
    """An opened upstream with its relay made and not yet running (consoles/relay.py's Relay)."""

    @property
    def stats(self) -> RelayStats: ...

    @property
    def upstream_address(self) -> str | None: ...

    def terminate(self, code: int, reason: str) -> None: ...

    async def hold_input(self, held: bool, notice: dict[str, object] | None = None) -> None: ...

    async def run(self) -> CloseInfo: ...

    async def abandon(self) -> None: ...


Connect = Callable[[UpstreamTarget, RelayCore], Awaitable[Link]]  # raises UpstreamError


@dataclass(slots=True)
class ConsoleServices:
    """The collaborators, as they are when the request arrives (a reload swaps config and policy)."""

    config: GatewayConfig
    clouds: Mapping[str, CloudProvider]
    store: StateStore
    registry: ConsoleRegistry
    policy: Policy
    audit: AuditLog
    metrics: Metrics
    connect: Connect
    replica: str
    draining: bool
    cloud_answered: Callable[[], None]  # the cloud API answered (health reports it)
    monotonic: Callable[[], float] = field(default=time.monotonic)
    wall: Callable[[], float] = field(default=time.time)  # for the sign-in's age (a wall-clock time)
    recordings: RecordingStore | None = None  # where recorded consoles go (None: no recording keys)
    recording: RecordingSettings | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The console did not open (or the browser left first): close the browser's socket with this."""

    code: int
    reason: str
    outcome: str  # the word the metrics (and console_failed's `failure`) record


@dataclass(frozen=True, slots=True)
class Closed:
    """The console opened, relayed and closed; the relay has closed both sides."""

    info: CloseInfo
    closed_by: str


class _Refused(Exception):
    def __init__(
        self, code: int, reason: str, outcome: str, *, failed: bool = False, upstream: str | None = None
    ) -> None:
        super().__init__(reason)
        self.refusal = Refusal(code, _close_reason(reason), outcome)
        self.failed = failed  # allowed by policy and limits, then failed: audited as console_failed
        self.upstream = upstream  # the host:port tried, when it got that far


# -- the use case ----------------------------------------------------------------------------------


async def open_console(request: OpenRequest, browser: Browser, services: ConsoleServices) -> Refusal | Closed:
    session = request.session
    if session is None:
        return Refusal(CLOSE_UNAUTHENTICATED, CODES[CLOSE_UNAUTHENTICATED].reason, "unauthenticated")
    metrics = services.metrics
    if request.state_down:
        metrics.refused("state")
        return Refusal(CLOSE_LIMIT, REASON_STATE_DOWN, "state")
    base = {**request.audit, "cloud": request.cloud, "server_id": request.server_id}
    given = request.justification.strip()[:MAX_JUSTIFICATION]  # the page's words, bounded for the audit
    services.audit.emit("console_requested", **base, justification=given or None)
    live: LiveConsole | None = None
    try:
        provider = await _admit(services, session, base)
        console_id = _console_id()
        record = new_record(
            id=console_id,
            user=session.user,
            groups=list(session.groups),
            method=session.method,
            sid=session.sid,
            cloud=request.cloud,
            server_id=request.server_id,
            server_name="",
            project_id="",
            permission="",
            client=request.client,
            replica=services.replica,
        )
        # Registered before the cloud is asked anything (that can take seconds): from here on a lock,
        # sign-out or termination finds this console, and _still_wanted covers what came before.
        live = await _register(services, record, base)
        live.watch_listeners.append(owner_notices(live))  # who watches reaches the owner's page
        base["console_id"] = console_id
        services.registry.expire_at(live, session.created + services.config.session.absolute_lifetime)
        server, decision, grant_until = await _decide(services, provider, session, base)
        if grant_until is not None and decision.rule is not None:
            live.grant = (decision.rule, grant_until)  # its end re-decides this console
        permission = decision.permission
        _justified(services, decision, request.justification, base)
        if permission is Permission.CONTROL:
            await _recent_enough(services, session, decision, browser, base)
        base.update(permission=str(permission), rule=decision.rule)
        record.server_name, record.project_id = server.name, server.project_id
        record.permission = str(permission)
        if decision.demands.justification:
            record.justification = request.justification.strip()
        live.server = server
        moderated = await _moderated(services, live, decision, base)
        _unless_terminated(live)  # ended while the cloud answered: do not ask it for a console token
        recording = await _recording(services, live, decision, server, base)
        if recording is not None:
            record.recording = console_id  # the admin list links to it (the next sync shares it)
        hello = _hello(services, record, server, decision)
        if moderated is not None:
            hello["moderation"] = moderated.current.notice()  # input held from the first byte
        if recording is not None:
            hello["recording"] = recording.hello()  # the page says so before the first frame
        link, opened = await _connect(services, provider, server, decision, recording)
        await _hand_over(services, session, live, link, browser, hello)
        return await _relay(services, live, link, base, opened, moderated, recording)
    except _Refused as refused:
        return _refusal(services, refused, base, live)
    finally:
        if live is not None:
            await end_observers(services.registry, live)  # its observers end with it (shadowing)
            await services.registry.release(live.record.id)


def _refusal(
    services: ConsoleServices, refused: _Refused, base: dict[str, Any], live: LiveConsole | None
) -> Refusal:
    """Count and audit a console that did not open (or the browser left first)."""
    refusal = refused.refusal
    services.metrics.refused(refusal.outcome)
    if refused.failed:
        services.audit.emit(
            "console_failed",
            **base,
            failure=refusal.outcome,
            close_code=refusal.code,
            reason=refusal.reason,
            **({"upstream": refused.upstream} if refused.upstream else {}),
        )
    if live is not None and live.server is not None and live.closed_by is None:
        services.metrics.session_ended(None, refusal.outcome)
    return refusal


async def _hand_over(
    services: ConsoleServices,
    session: SessionData,
    live: LiveConsole,
    link: Link,
    browser: Browser,
    hello: dict[str, Any],
) -> None:
    """The last check, then the hello to the page: from here the relay runs."""
    try:
        await _still_wanted(services, session, live)
        await browser.send_json(hello)
    except BaseException as exc:
        # Nobody will relay this upstream (refused at the last moment, the browser left while we
        # connected, or the handler is being cancelled): close it now rather than leave it, and its
        # keep-alive pings, behind.
        await link.abandon()
        if isinstance(exc, ConnectionError):
            log.info("console %s for %s: the browser left before it opened", live.record.id, session.user)
            raise _Refused(CLOSE_GOING_AWAY, "", "browser_gone") from None
        raise


async def _admit(services: ConsoleServices, session: SessionData, base: dict[str, Any]) -> CloudProvider:
    """What needs no cloud call: draining, a known cloud, the user's lock and request rate."""
    if services.draining:
        raise _Refused(CLOSE_DRAINING, "The gateway is restarting; try again in a moment", "draining")
    provider = services.clouds.get(base["cloud"])
    if provider is None:
        services.audit.emit("console_denied", **base, reason="unknown cloud", rule=None)
        raise _Refused(CLOSE_NOT_FOUND, CODES[CLOSE_NOT_FOUND].reason, "not_found")
    limits = services.config.limits
    try:
        if await services.store.is_locked(session.user):
            services.audit.emit("console_denied", **base, reason="user locked", rule=None)
            raise _Refused(CLOSE_DENIED, "Your account is locked by an administrator", "locked")
        wait = await services.store.take_token(
            f"rate:{session.user}", rate=limits.requests_per_minute / 60.0, burst=limits.burst
        )
    except StateUnavailable as exc:
        if not services.config.state.redis.fail_open:
            log.warning("console refused: shared state unavailable: %s", exc)
            raise _Refused(CLOSE_LIMIT, REASON_STATE_DOWN, "state") from None
        wait = None
    if wait is not None:
        services.audit.emit("limit_refused", **base, limit="rate", reason=f"retry in {int(wait) + 1} s")
        raise _Refused(
            CLOSE_LIMIT, f"Too many console requests; try again in {int(wait) + 1} s", "rate_limited"
        )
    return provider


async def _register(services: ConsoleServices, record: ConsoleRecord, base: dict[str, Any]) -> LiveConsole:
    """Count the console against the per-user and global limits, and make it findable."""
    limits = services.config.limits
    try:
        refusal = await services.registry.acquire(
            record, per_user=limits.per_user, global_max=limits.global_max
        )
    except StateUnavailable as exc:
        log.warning("console refused: shared state unavailable: %s", exc)
        raise _Refused(CLOSE_LIMIT, REASON_STATE_DOWN, "state") from None
    if refusal == "per_user":
        services.audit.emit(
            "limit_refused", **base, limit="per_user", reason=f"{limits.per_user} consoles open"
        )
        raise _Refused(
            CLOSE_LIMIT,
            f"You already have {limits.per_user} consoles open; close one first",
            "limit_per_user",
        )
    if refusal == "global":
        services.audit.emit("limit_refused", **base, limit="global", reason="gateway full")
        raise _Refused(CLOSE_LIMIT, "The gateway is at its console limit; try again later", "limit_global")
    return services.registry.local[record.id]


async def _decide(
    services: ConsoleServices, provider: CloudProvider, session: SessionData, base: dict[str, Any]
) -> tuple[Server, Decision, float | None]:
    """The server as the cloud describes it now, what policy grants on it, and when the access grant
    that decided ends (None: no grant decided)."""
    server = await _server(services, provider, base)
    grants = await _grants(services, session, server)
    decision = services.policy.decide(session.user, session.groups, server, grants)
    if decision.permission is Permission.NONE:
        services.audit.emit(
            "console_denied",
            **base,
            server_name=server.name,
            project_id=server.project_id,
            rule=decision.rule,
            reason=decision.reason,
        )
        # The same words as for an unknown server: do not confirm what exists.
        raise _Refused(CLOSE_DENIED, CODES[CLOSE_DENIED].reason, "denied")
    unavailable = server.unavailable_reason()
    if unavailable:
        raise _Refused(CLOSE_UNAVAILABLE, f"The console cannot open: {unavailable}", "unavailable")
    base.update(server_name=server.name, project_id=server.project_id)
    return server, decision, grants.get(decision.rule or "")


async def _server(services: ConsoleServices, provider: CloudProvider, base: dict[str, Any]) -> Server:
    """The server as the cloud describes it now."""
    try:
        return await provider.get_server(base["server_id"])
    except CloudError as exc:
        log.warning("console for %s: cloud API error: %s", base["server_id"], exc)
        if exc.kind is CloudErrorKind.NOT_FOUND:
            services.audit.emit("console_denied", **base, reason="no such server", rule=None)
        raise _Refused(
            _CLOUD_CODES.get(exc.kind, CLOSE_CLOUD), _sentence(exc.user_message), "cloud_error"
        ) from None


async def _grants(services: ConsoleServices, session: SessionData, server: Server) -> dict[str, float]:
    """The just-in-time rules an approved, unexpired request opens for this user and server, with their
    ends. Unreadable shared state grants nothing (the user keeps what the other rules give)."""
    try:
        requests = await services.store.access_requests()
    except StateUnavailable as exc:
        log.warning("access grants not read (shared state unavailable): %s", exc)
        return {}
    return active_grants(requests, session.user, server.cloud, server.id, services.wall())


def _justified(services: ConsoleServices, decision: Decision, given: str, base: dict[str, Any]) -> None:
    """A rule that wants a reason gets one before the cloud is asked for a console URL; the refusal says
    what is expected, and the page asks the user and connects again."""
    problem = decision.demands.justification_problem(given)
    if problem is None:
        return
    services.audit.emit(
        "console_denied", **base, rule=decision.rule, permission=str(decision.permission), reason=problem
    )
    raise _Refused(CLOSE_JUSTIFICATION, problem, "justification")


async def _recent_enough(
    services: ConsoleServices,
    session: SessionData,
    decision: Decision,
    browser: Browser,
    base: dict[str, Any],
) -> None:
    """Step-up: a rule that wants a recent (or stronger) sign-in for control gets one. The page hears
    what to ask the identity provider for, sends the user through it and comes back here."""
    demands = decision.demands
    problem = demands.step_up_problem(auth_time=session.auth_time, acr=session.acr, now=services.wall())
    if problem is None:
        return
    if session.method.startswith("proxy"):
        # The gateway cannot send the user back through a proxy; say what is missing instead.
        problem = problem.replace("; sign in again", "; the sign-in proxy does not vouch for that")
    services.audit.emit(
        "console_denied", **base, rule=decision.rule, permission=str(decision.permission), reason=problem
    )
    max_age = int(demands.max_auth_age) if demands.max_auth_age is not None else None
    notice = {
        "type": "step_up",
        "method": session.method,
        "max_age": max_age,
        "acr_values": list(demands.acr_values),
    }
    try:
        await browser.send_json(notice)
    except ConnectionError:
        raise _Refused(CLOSE_GOING_AWAY, "", "browser_gone") from None
    raise _Refused(CLOSE_STEP_UP, problem, "step_up")


async def _recording(
    services: ConsoleServices, live: LiveConsole, decision: Decision, server: Server, base: dict[str, Any]
) -> RecordedConsole | None:
    """The console's recording, when the policy wants one; a required one the store cannot take now
    refuses the console before the cloud is asked for a console URL (fail closed)."""
    try:
        return await RecordedConsole.prepare(
            live,
            decision.demands,
            server,
            store=services.recordings,
            settings=services.recording,
            store_name=services.config.recording.store,
            audit=services.audit,
            base=base,
        )
    except RecordingUnavailable as exc:
        raise _Refused(exc.code, exc.reason, "recording", failed=True) from None


async def _connect(
    services: ConsoleServices,
    provider: CloudProvider,
    server: Server,
    decision: Decision,
    recording: RecordedConsole | None = None,
    *,
    idle: bool = True,
) -> tuple[Link, dict[str, Any]]:
    """A fresh console URL for every connection (tokens are one-time), the upstream opened on it with the
    relay made, and what console_opened records of it (the host:port and address, never the URL).
    `idle`: whether the idle timeout applies (an observer's view ends with the console it watches)."""
    clock = services.monotonic
    connect_started = clock()
    try:
        console_url = await provider.remote_console(server.id)
    except CloudError as exc:
        log.warning("remote_console for %s failed: %s", server.id, exc)
        raise _Refused(
            _CLOUD_CODES.get(exc.kind, CLOSE_CLOUD), _sentence(exc.user_message), "cloud_error", failed=True
        ) from None
    services.cloud_answered()
    try:
        target = provider.console_target(console_url)
    except UpstreamURLError as exc:
        log.error("cloud returned an unusable console URL for %s: %s", server.id, exc)
        raise _Refused(
            CLOSE_UPSTREAM_URL, CODES[CLOSE_UPSTREAM_URL].reason, "upstream_url", failed=True
        ) from None
    del console_url
    tried = f"{target.host}:{target.port}"
    console = services.config.console
    client_filter, server_filter = _filters(
        decision, allow_exclusive=console.allow_exclusive, recorded=recording is not None
    )
    recorder = None
    if recording is not None and server_filter is not None:
        recorder = recording.recorder(client_filter, server_filter, services.monotonic)
    core = RelayCore(
        client_filter,
        idle_timeout=(console.idle_timeout or None) if idle else None,
        idle_warning=(console.idle_warning or None) if idle else None,
        max_duration=console.max_duration or None,
        server_filter=server_filter,
        recording=recorder,
    )
    started = clock()
    try:
        link = await services.connect(target, core)
    except UpstreamError as exc:
        log.warning("upstream connect for %s failed: %s", server.id, exc)
        raise _Refused(
            _UPSTREAM_CODES.get(exc.kind, CLOSE_UPSTREAM_UNREACHABLE),
            _sentence(exc.user_message),
            f"upstream_{exc.kind.name.lower()}",
            failed=True,
            upstream=tried,
        ) from None
    now = clock()
    services.metrics.upstream_connected(now - started)
    opened = {
        "upstream": tried,
        "upstream_address": link.upstream_address,
        "connect_duration": round(now - connect_started, 3),
    }
    return link, opened


def _filters(
    decision: Decision, *, allow_exclusive: bool, recorded: bool = False
) -> tuple[ClientMessageFilter, ServerMessageFilter | None]:
    """The RFB filters for this permission, the rule's clipboard policy and its recording. Only a
    restriction on copying out, or a recording, reads the server's stream (the other consoles' frames
    pass through unread); a recording also holds the server to stateless encodings it can frame."""
    demands = decision.demands
    cap = demands.clipboard_max
    restrict_copy = not demands.copy or cap is not None
    client = ClientMessageFilter(
        view_only=decision.permission is Permission.VIEW,
        moderated=decision.permission is Permission.CONTROL and demands.moderation is not None,
        allow_exclusive=allow_exclusive,
        paste=demands.paste,
        paste_max=cap,
        copy_out=not restrict_copy,
        record=recorded,
        record_input=recorded and demands.record_input,
    )
    if not restrict_copy:
        return client, ServerMessageFilter(client, copy_max=None) if recorded else None
    return client, ServerMessageFilter(client, copy_max=cap if demands.copy and cap is not None else 0)


async def _moderated(
    services: ConsoleServices, live: LiveConsole, decision: Decision, base: dict[str, Any]
) -> ModeratedConsole | None:
    """A control console under a moderation rule: its input is held until moderators watch. Its entry in
    the shared state names the moderators' groups at once, so that every replica can tell a moderator."""
    rule = decision.demands.moderation
    if rule is None or decision.permission is not Permission.CONTROL:
        return None
    moderated = ModeratedConsole(live, rule, audit=services.audit, metrics=services.metrics, base=base)
    try:
        await services.store.console_update(live.record)
    except StateUnavailable as exc:  # the registry's sync writes it later
        log.warning("moderated console %s not yet in the shared state: %s", live.record.id, exc)
    return moderated


async def _still_wanted(services: ConsoleServices, session: SessionData, live: LiveConsole) -> None:
    """The last word before the first relayed byte. Lock and sign-out were checked before the cloud call,
    which can take seconds; one that landed before this console was registered reached no relay, so the
    state is read again now. From registration on, a termination reaches `live` itself (pending_close)."""
    try:
        locked = await services.store.is_locked(session.user)
        revoked = await services.store.is_revoked(session.sid)
    except StateUnavailable as exc:
        if services.config.state.redis.fail_open:
            return
        log.warning("console refused: shared state unavailable: %s", exc)
        raise _Refused(CLOSE_LIMIT, REASON_STATE_DOWN, "state", failed=True) from None
    if locked:  # the words a lock or sign-out use when they close a live console
        raise _Refused(CLOSE_LOCKED, REASON_LOCKED, "admin", failed=True)
    if revoked:
        raise _Refused(CLOSE_LOGGED_OUT, REASON_LOGGED_OUT, "logout", failed=True)
    _unless_terminated(live)


def _unless_terminated(live: LiveConsole) -> None:
    if live.pending_close is not None:
        code, reason, by = live.pending_close
        raise _Refused(code, reason, by, failed=True)


def _hello(
    services: ConsoleServices, record: ConsoleRecord, server: Server, decision: Decision
) -> dict[str, Any]:
    """The page's first notice: which server, with what permission (and the reason given, for everyone
    watching), the clipboard policy (the page offers only what passes), and the timers it runs under."""
    console = services.config.console
    demands = decision.demands
    return {
        "type": "hello",
        "console_id": record.id,
        "permission": record.permission,
        "server": {"name": server.name, "id": server.id, "cloud": record.cloud},
        "idle_timeout": console.idle_timeout,
        "max_duration": console.max_duration,
        "clipboard": {"copy": demands.copy, "paste": demands.paste, "max": demands.clipboard_max},
        **({"justification": record.justification} if record.justification else {}),
    }


async def _relay(
    services: ConsoleServices,
    live: LiveConsole,
    link: Link,
    base: dict[str, Any],
    opened: dict[str, Any],
    moderated: ModeratedConsole | None = None,
    recording: RecordedConsole | None = None,
) -> Closed:
    """Relay until either side or the gateway ends it, then account for it (and end its recording)."""
    metrics = services.metrics
    permission = live.record.permission
    services.registry.attach(live.record.id, link)
    metrics.session_started(permission)
    services.audit.emit("console_opened", **base, **opened, justification=live.record.justification or None)
    info: CloseInfo | None = None
    if moderated is not None:
        moderated.opened()
        moderated.relaying(link)
    if recording is not None:
        recording.start()
    recorded = None
    try:
        info = await link.run()
    finally:
        if moderated is not None:
            moderated.close()
        # Without an `info` the relay was cancelled: the process is stopping.
        closed_by = live.closed_by or (info.by if info is not None else "shutdown")
        metrics.session_ended(permission, closed_by)
        if recording is not None:
            recorded = await recording.close(info, closed_by, services.monotonic())
    stats = link.stats
    metrics.relayed("to_browser", stats.bytes_to_browser, stats.msgs_to_browser)
    metrics.relayed("to_upstream", stats.bytes_to_upstream, stats.msgs_to_upstream)
    metrics.dropped(stats.dropped)
    metrics.clipboard_denied(paste=stats.paste_denied, copy=stats.copy_denied)
    services.audit.emit(
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
        **_clipboard_denied(stats),
        duration=round(services.monotonic() - stats.started, 3),
        recording=recorded,
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
    return Closed(info, closed_by)


def _clipboard_denied(stats: RelayStats) -> dict[str, int]:
    """What the clipboard policy refused, in counts and lengths (never content); nothing when nothing."""
    fields = {
        "paste_denied": stats.paste_denied,
        "paste_denied_bytes": stats.paste_denied_bytes,
        "copy_denied": stats.copy_denied,
        "copy_denied_bytes": stats.copy_denied_bytes,
    }
    return fields if stats.paste_denied or stats.copy_denied else {}


def _console_id() -> str:
    """12 URL-safe random characters, the first a letter or digit: a console's id is also its
    recording's, which names files and objects (where a leading '-' reads as an option)."""
    while True:
        console_id = secrets.token_urlsafe(9)
        if console_id[0].isalnum():
            return console_id


def _close_reason(text: str) -> str:
    """Close reasons are limited to 123 bytes of UTF-8."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode(errors="ignore") + "..."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
