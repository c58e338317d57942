"""Who the caller is now, on every request: what the identity source says governs, not what the cookie
remembers. Two sources speak per request: a trusted SSO proxy, and the running config for local users
(OIDC speaks only at sign-in). A change of groups re-decides the user's live consoles on every replica.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from aiohttp import web

from gateway.auth.cookie import SessionData, SessionError
from gateway.auth.identity import Authentication, AuthError, Identity
from gateway.auth.proxy_headers import IDENTITY_HEADERS
from gateway.consoles.codes import CLOSE_SIGNIN_EXPIRED
from gateway.services import REASON_REMOVED
from gateway.state.base import StateUnavailable
from gateway.web.keys import AUTH_ERROR, CLIENT, GATEWAY, REQUEST_ID, SESSION, SPOOFED
from gateway.web.middleware import Handler
from gateway.web.session_cookie import set_session

log = logging.getLogger("gateway.web")


@web.middleware
async def proxy_identity(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A trusted SSO proxy names the caller (a signed assertion, or plain headers from trusted networks
    only): another user or method than the cookie's signs in afresh; the same user's groups and e-mail
    as asserted now replace the cookie's. Identity headers from anywhere else are flagged and ignored."""
    if _spoofed_headers(request):
        log.warning("spoofed identity header from %s ignored", request[CLIENT])
        request[SPOOFED] = True
    found = await _asserted_identity(request)
    if found is not None:
        asserted, authentication = found
        session = request[SESSION]
        if session is None or (session.user, session.method) != (asserted.user, asserted.method):
            await _sign_in(request, asserted, authentication)
        else:
            if authentication is not None and (session.auth_time, session.acr) != (
                authentication.auth_time,
                authentication.acr,
            ):
                # The proxy's word on when and how the user authenticated, for step-up rules.
                session.auth_time, session.acr = authentication.auth_time, authentication.acr
                set_session(request, session)
            await _follow(request, session, asserted)
    return await handler(request)


@web.middleware
async def local_users(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A local user is who the running config says: removed from it, the session and the user's live
    consoles end; with other groups there, the session follows (a SIGHUP alone re-decides only the
    consoles, this brings the cookie along)."""
    session = request[SESSION]
    if session is not None and session.method == "local":
        groups = request.app[GATEWAY].current_groups(session.user, session.method, session.groups)
        if groups is None:
            await _end_removed_user(request, session)
        else:
            await _follow(request, session, dataclasses.replace(session.identity, groups=groups))
    return await handler(request)


async def _asserted_identity(request: web.Request) -> tuple[Identity, Authentication | None] | None:
    """Who the proxy says the caller is; with a signed assertion, also its auth_time and acr."""
    gw = request.app[GATEWAY]
    if gw.assertion is not None:
        token = gw.assertion.token_from_headers(request.headers)
        if token:
            try:
                return await gw.assertion.authenticate(token)
            except AuthError as exc:
                log.warning("signed identity header refused from %s: %s", request[CLIENT], exc.reason)
                request[AUTH_ERROR] = exc
                gw.metrics.signins_total.labels(method="proxy-jwt", outcome="refused").inc()
                return None
    if gw.trusted_headers is not None:
        identity = gw.trusted_headers.identify(request.remote or "", request.headers)
        return (identity, None) if identity is not None else None
    return None


def _spoofed_headers(request: web.Request) -> bool:
    trusted = request.app[GATEWAY].trusted_headers
    if trusted is None:
        return any(h in request.headers for h in IDENTITY_HEADERS)
    return trusted.spoofed(request.remote or "", request.headers)


async def _sign_in(request: web.Request, identity: Identity, authentication: Authentication | None) -> None:
    gw = request.app[GATEWAY]
    said = authentication or Authentication(None, None)
    session = gw.codec.new_session(identity, now=time.time(), auth_time=said.auth_time, acr=said.acr)
    set_session(request, session)
    gw.metrics.signins_total.labels(method=identity.method, outcome="ok").inc()
    _audit(request, "login", identity)
    await _remember_groups(request, identity)


async def _follow(request: web.Request, session: SessionData, current: Identity) -> None:
    """Other groups or e-mail than the cookie holds: update the session, and when the groups changed,
    have every replica re-decide the user's live consoles (a removed group must not keep its rights)."""
    regrouped = set(current.groups) != set(session.groups)
    if not regrouped and current.email == session.email:
        return
    gw = request.app[GATEWAY]
    session.groups, session.email = current.groups, current.email
    set_session(request, session)
    _audit(request, "identity_changed", session.identity)
    if not regrouped:
        return
    log.info("groups of %s changed (%s); re-deciding their live consoles", session.user, session.method)
    if current.method != "local":  # a local user's groups come from each replica's own config
        await _remember_groups(request, current)
    try:
        await gw.registry.publish_identity(current)
    except StateUnavailable:
        log.warning(
            "shared state unreachable: re-deciding the consoles of %s on this replica only", session.user
        )
        gw.identity_changed(current)


async def _remember_groups(request: web.Request, identity: Identity) -> None:
    """Proxy-asserted groups go to the shared state as well (see ConsoleRegistry.remember_groups)."""
    try:
        await request.app[GATEWAY].registry.remember_groups(identity)
    except StateUnavailable:
        log.warning("shared state unreachable: groups of %s not recorded for other replicas", identity.user)


async def _end_removed_user(request: web.Request, session: SessionData) -> None:
    """A local user no longer in the running config: the session ends, and so do their live consoles."""
    gw = request.app[GATEWAY]
    log.info("session of %s ended: no longer a configured local user", session.user)
    request[AUTH_ERROR] = SessionError("local user removed from the configuration")
    set_session(request, None)
    _audit(request, "logout", session.identity, reason="removed from auth.local.users")
    try:
        # Revoked, so this is said once; the running config refuses the cookie regardless.
        await gw.store.revoke_session(session.sid, gw.config.session.absolute_lifetime)
        await gw.registry.terminate(
            by="user_removed",
            code=CLOSE_SIGNIN_EXPIRED,
            reason=REASON_REMOVED,
            user=session.user,
            method="local",
        )
    except StateUnavailable:
        log.warning(
            "shared state unreachable: consoles of removed user %s close on each replica's reload",
            session.user,
        )


def _audit(request: web.Request, event: str, identity: Identity, **extra: str) -> None:
    request.app[GATEWAY].audit.emit(
        event,
        request_id=request[REQUEST_ID],
        user=identity.user,
        groups=list(identity.groups),
        client=request[CLIENT],
        method=identity.method,
        **extra,
    )
