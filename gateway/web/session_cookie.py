"""The sign-in cookie: read and checked on the way in, sent again or cleared on the way out.

The cookie is the whole session (encrypted, see `gateway.auth.cookie`). Later steps that change who is
signed in (a proxy sign-in, new groups, a removed user, the sign-in and sign-out handlers) say so with
`set_session`; this middleware alone decides what the response does with the cookie.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from aiohttp import web

from gateway.auth.cookie import SessionData, SessionError, cookie_attributes, cookie_name
from gateway.state.base import StateUnavailable
from gateway.web.http import json_refusal
from gateway.web.keys import AUTH_ERROR, CLIENT, GATEWAY, SESSION, SESSION_CHANGED, STATE_DOWN
from gateway.web.middleware import Handler

log = logging.getLogger("gateway.web")


@web.middleware
async def session_cookie(request: web.Request, handler: Handler) -> web.StreamResponse:
    """request[SESSION] from the cookie: None without one, or when it is refused, expired or signed out.

    After the handler the response carries the session as it is then: sent again when it changed or
    is due for a refresh (sliding idle window, key rotation), cleared when it ended. A WebSocket or an
    already streamed response cannot carry a cookie, so it is left alone.
    """
    gw = request.app[GATEWAY]
    now = time.time()
    request[SESSION] = None
    raw = request.cookies.get(cookie_name(gw.config.session.secure_cookie))
    if raw:
        request[SESSION] = await _read(request, raw, now)
        request[SESSION_CHANGED] = request[SESSION] is None  # refused or signed out: clear it
    response = await handler(request)
    if isinstance(response, web.WebSocketResponse) or response.prepared:
        return response
    session = request[SESSION]
    if request.get(SESSION_CHANGED):
        if session is None:
            _set_cookie(request, response, None)
        else:
            issue_session(request, response, session)
    elif session is not None and gw.codec.needs_refresh(session, now=now):
        issue_session(request, response, gw.codec.touch(session, now=now))
    return response


async def _read(request: web.Request, raw: str, now: float) -> SessionData | None:
    gw = request.app[GATEWAY]
    try:
        session = gw.codec.decode(raw, now=now)
    except SessionError as exc:
        log.info("session cookie refused from %s: %s", request[CLIENT], exc.reason)
        request[AUTH_ERROR] = exc
        return None
    try:
        revoked = await gw.store.is_revoked(session.sid)
    except StateUnavailable:
        # Sign-out cannot be checked; with fail_open the signed cookie alone is trusted. The console
        # socket says so itself after the upgrade (a browser cannot read a 503 there).
        if not gw.config.state.redis.fail_open and not request.path.startswith("/ws/"):
            raise
        request[STATE_DOWN] = not gw.config.state.redis.fail_open
        revoked = False
    if revoked:
        log.info("session cookie of %s refused: signed out", session.user)
        return None
    return session


def set_session(request: web.Request, session: SessionData | None) -> None:
    """From now on `session` is who signed this request; the response sends it as the cookie, or
    clears the cookie when it is None."""
    request[SESSION] = session
    request[SESSION_CHANGED] = True


def issue_session(request: web.Request, response: web.StreamResponse, data: SessionData) -> None:
    """Put `data` in the response as the cookie: for a response raised past `session_cookie` (a
    redirect), which then never sees it; handlers that return use `set_session`."""
    _set_cookie(request, response, request.app[GATEWAY].codec.encode(data))


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str | None) -> None:
    secure = request.app[GATEWAY].config.session.secure_cookie
    name = cookie_name(secure)
    if value is None:
        response.del_cookie(name, path="/")
    else:
        response.set_cookie(name, value, **cookie_attributes(secure))


def current(request: web.Request) -> SessionData:
    """The signed-in session, or a 401 (JSON for the API; redirect to sign-in for pages)."""
    session: SessionData | None = request.get(SESSION)
    if session is None:
        reason = _signin_reason(request)
        if request.path.startswith("/api/"):
            extra = {"reason": reason} if reason else {}
            raise json_refusal(web.HTTPUnauthorized, "Sign in first", code="unauthenticated", **extra)
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
