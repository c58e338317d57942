"""Middlewares: request ids, who the caller is, CSRF, security headers and error pages without internals."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from gateway.auth.cookie import SessionData, SessionError, cookie_attributes, cookie_name
from gateway.auth.identity import AuthError, Identity
from gateway.auth.proxy_headers import IDENTITY_HEADERS
from gateway.consoles.codes import CLOSE_SIGNIN_EXPIRED
from gateway.logs import request_id
from gateway.services import REASON_REMOVED
from gateway.state.base import StateUnavailable
from gateway.web.http import client_address, in_networks, json_error, same_origin_post
from gateway.web.keys import (
    AUTH_ERROR,
    CLIENT,
    GATEWAY,
    HTTPS,
    REQUEST_ID,
    SESSION,
    SESSION_CLEARED,
    SPOOFED,
    STATE_DOWN,
)

log = logging.getLogger("gateway.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Requests that change state before a session exists; they are guarded by the same-origin check alone.
_PRE_SESSION = {"/api/login"}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.get(HTTPS):
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if request.path.startswith(("/api/", "/auth/")) or response.content_type == "text/html":
        h.setdefault("Cache-Control", "no-store")
    rid = request.get(REQUEST_ID)
    if rid:
        h.setdefault("X-Request-Id", rid)


def error_page(status: int, title: str, detail: str) -> web.Response:
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        '<link rel=stylesheet href="/static/css/app.css">'
        f'<main class="card error-card"><h1>{html.escape(title)}</h1>'
        f'<p>{html.escape(detail)}</p><p><a href="/servers">Back to the server list</a></p></main></html>'
    )
    return web.Response(status=status, text=body, content_type="text/html")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, client address, and a last line of defence: no stack trace ever reaches a browser."""
    rid = secrets.token_hex(8)
    request[REQUEST_ID] = rid
    token = request_id.set(rid)
    gw = request.app[GATEWAY]
    request[CLIENT] = client_address(request, gw.trusted_proxies)
    # X-Forwarded-Proto counts only when the peer is one of our trusted proxies.
    forwarded_https = request.headers.get("X-Forwarded-Proto") == "https" and in_networks(
        request.remote, gw.trusted_proxies
    )
    request[HTTPS] = request.secure or forwarded_https
    try:
        return await handler(request)
    except StateUnavailable as exc:
        log.warning("%s %s: shared state unavailable: %s", request.method, request.path, exc)
        message = "The gateway's shared state is unreachable; try again shortly"
        if request.path.startswith("/api/"):
            return json_error(503, message, code="state_unavailable")
        return error_page(503, "Temporarily unavailable", message)
    except web.HTTPException as exc:
        if exc.status >= 400 and not request.path.startswith("/api/") and exc.content_type != "text/html":
            return error_page(exc.status, exc.reason, _friendly(exc.status))
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return json_error(
                500, "Internal error; the request id is in the X-Request-Id header", code="internal"
            )
        return error_page(500, "Something went wrong", f"The gateway hit an internal error (request {rid}).")
    finally:
        request_id.reset(token)


def _friendly(status: int) -> str:
    return {
        404: "There is nothing at this address.",
        405: "This address does not accept that kind of request.",
        403: "You may not do that.",
        413: "The request was too large.",
    }.get(status, "The request could not be served.")


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str | None) -> None:
    gw = request.app[GATEWAY]
    secure = gw.config.session.secure_cookie
    name = cookie_name(secure)
    if value is None:
        response.del_cookie(name, path="/")
    else:
        attrs = cookie_attributes(secure)
        response.set_cookie(name, value, **attrs)


def issue_session(request: web.Request, response: web.StreamResponse, data: SessionData) -> None:
    _set_cookie(request, response, request.app[GATEWAY].codec.encode(data))


def clear_session(request: web.Request, response: web.StreamResponse) -> None:
    _set_cookie(request, response, None)


async def _proxy_identity(request: web.Request) -> Identity | None:
    gw = request.app[GATEWAY]
    if gw.assertion is not None:
        token = gw.assertion.token_from_headers(request.headers)
        if token:
            try:
                return await gw.assertion.verify(token)
            except AuthError as exc:
                log.warning("signed identity header refused from %s: %s", request[CLIENT], exc.reason)
                request[AUTH_ERROR] = exc
                gw.metrics.signins_total.labels(method="proxy-jwt", outcome="refused").inc()
                return None
    if gw.trusted_headers is not None:
        return gw.trusted_headers.identify(request.remote or "", request.headers)
    return None


def _spoofed_headers(request: web.Request) -> bool:
    gw = request.app[GATEWAY]
    if gw.trusted_headers is not None and gw.trusted_headers.spoofed(request.remote or "", request.headers):
        return True
    if gw.trusted_headers is None:
        return any(h in request.headers for h in IDENTITY_HEADERS)
    return False


def _current_identity(request: web.Request, session: SessionData) -> Identity | None:
    """The session's user as known now: a local user per the running config (None once removed)."""
    groups = request.app[GATEWAY].current_groups(session.user, session.method, session.groups)
    return None if groups is None else dataclasses.replace(session.identity, groups=groups)


async def _identity_changed(request: web.Request, session: SessionData, current: Identity) -> None:
    """Other groups or e-mail than the cookie holds: update the session, and when the groups changed,
    have every replica re-decide the user's live consoles (a removed group must not keep its rights)."""
    gw = request.app[GATEWAY]
    regrouped = set(current.groups) != set(session.groups)
    session.groups, session.email = current.groups, current.email
    gw.audit.emit(
        "identity_changed",
        request_id=request[REQUEST_ID],
        user=session.user,
        groups=list(session.groups),
        client=request[CLIENT],
        method=session.method,
    )
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
    gw.audit.emit(
        "logout",
        request_id=request[REQUEST_ID],
        user=session.user,
        groups=list(session.groups),
        client=request[CLIENT],
        method=session.method,
        reason="removed from auth.local.users",
    )
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


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve request[SESSION] from the cookie or a trusted SSO proxy; refresh or clear the cookie."""
    gw = request.app[GATEWAY]
    now = time.time()
    session: SessionData | None = None
    reissue = False
    clear = False
    raw = request.cookies.get(cookie_name(gw.config.session.secure_cookie))
    if raw:
        try:
            session = gw.codec.decode(raw, now=now)
        except SessionError as exc:
            log.info("session cookie refused from %s: %s", request[CLIENT], exc.reason)
            request[AUTH_ERROR] = exc
            clear = True
        else:
            try:
                revoked = await gw.store.is_revoked(session.sid)
            except StateUnavailable:
                # Sign-out cannot be checked; with fail_open the signed cookie alone is trusted. The
                # console socket says so itself after the upgrade (a browser cannot read a 503 there).
                if not gw.config.state.redis.fail_open and not request.path.startswith("/ws/"):
                    raise
                request[STATE_DOWN] = not gw.config.state.redis.fail_open
                revoked = False
            if revoked:
                log.info("session cookie of %s refused: signed out", session.user)
                session, clear = None, True
    if _spoofed_headers(request):
        log.warning("spoofed identity header from %s ignored", request[CLIENT])
        request[SPOOFED] = True
    proxied = await _proxy_identity(request)
    if proxied is not None and (
        session is None or session.user != proxied.user or session.method != proxied.method
    ):
        session = gw.codec.new_session(proxied, now=now)
        reissue = True
        gw.metrics.signins_total.labels(method=proxied.method, outcome="ok").inc()
        gw.audit.emit(
            "login",
            request_id=request[REQUEST_ID],
            user=proxied.user,
            groups=list(proxied.groups),
            client=request[CLIENT],
            method=proxied.method,
        )
        await _remember_groups(request, proxied)
    elif session is not None:
        # What the identity source says now governs this request, not what the cookie remembers.
        current = proxied if proxied is not None else _current_identity(request, session)
        if current is None:
            await _end_removed_user(request, session)
            session, clear = None, True
        elif set(current.groups) != set(session.groups) or current.email != session.email:
            await _identity_changed(request, session, current)
            reissue = True
        elif gw.codec.needs_refresh(session, now=now):
            session.last_seen = now
            reissue = True
    request[SESSION] = session

    if request.method in _UNSAFE:
        if not same_origin_post(request, gw.origins):
            return json_error(403, "Cross-origin request refused", code="csrf")
        if request.path not in _PRE_SESSION:
            sent = request.headers.get("X-CSRF-Token", "")
            if session is None:
                return json_error(401, "Sign in first", code="unauthenticated")
            if not secrets.compare_digest(sent.encode(), session.csrf.encode()):
                return json_error(403, "Missing or wrong CSRF token", code="csrf")

    response = await handler(request)
    if isinstance(response, web.WebSocketResponse) or response.prepared:
        return response
    if request.get(SESSION_CLEARED):
        return response
    if reissue and session is not None:
        issue_session(request, response, session)
    elif clear:
        clear_session(request, response)
    return response


def current(request: web.Request) -> SessionData:
    """The signed-in session, or a 401 (JSON for the API; redirect to sign-in for pages)."""
    session: SessionData | None = request.get(SESSION)
    if session is None:
        reason = _signin_reason(request)
        if request.path.startswith("/api/"):
            body = {"error": "Sign in first", "code": "unauthenticated"}
            if reason:
                body["reason"] = reason
            raise web.HTTPUnauthorized(text=json.dumps(body), content_type="application/json")
        target = request.path_qs if request.method == "GET" else "/servers"
        error = f"&error={reason}" if reason else ""
        raise web.HTTPFound(f"/login?next={quote(target, safe='/')}{error}")
    return session


def _signin_reason(request: web.Request) -> str | None:
    """A fixed code for the sign-in page (never the log reason itself, which may quote input)."""
    error = request.get(AUTH_ERROR)
    if error is None:
        return None
    return "session_ended" if isinstance(error, SessionError) else "proxy_refused"
