"""OpenID Connect sign-in: start (redirect to the provider) and callback (code for tokens, then a session)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway.auth.identity import AuthError
from gateway.auth.oidc import PendingLogin
from gateway.web.api import audit_base
from gateway.web.http import safe_next
from gateway.web.keys import CLIENT, GATEWAY
from gateway.web.session_cookie import issue_session

log = logging.getLogger("gateway.auth")
routes = web.RouteTableDef()

_PENDING_COOKIE = "novnc-gw-oidc"
_PENDING_TTL = 600


def _pending_cookie_name(secure: bool) -> str:
    return f"__Host-{_PENDING_COOKIE}" if secure else _PENDING_COOKIE


@routes.get("/auth/oidc/start")
async def start(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    if gw.oidc is None:
        raise web.HTTPNotFound()
    try:
        await gw.oidc.discover()
    except AuthError as exc:
        log.error("OIDC discovery failed: %s", exc.reason)
        raise web.HTTPFound("/login?error=sso_unavailable") from None
    url, pending = gw.oidc.begin(safe_next(request.query.get("next")), now=time.time())
    # The pending login rides in its own short-lived cookie, sealed with the session key like the session.
    sealed = gw.codec.seal(pending.to_dict(), purpose="oidc-pending", now=time.time())
    response = web.HTTPFound(url)
    secure = gw.config.session.secure_cookie
    response.set_cookie(
        _pending_cookie_name(secure),
        sealed,
        max_age=_PENDING_TTL,
        path="/",
        httponly=True,
        secure=secure,
        samesite="Lax",
    )
    raise response


@routes.get("/auth/oidc/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    if gw.oidc is None:
        raise web.HTTPNotFound()
    secure = gw.config.session.secure_cookie
    raw = request.cookies.get(_pending_cookie_name(secure))
    base = audit_base(request)
    try:
        if not raw:
            raise AuthError(
                "no pending sign-in (cookie missing or expired)", "Your sign-in took too long; try again"
            )
        pending = PendingLogin.from_dict(
            gw.codec.unseal(raw, purpose="oidc-pending", max_age=_PENDING_TTL, now=time.time())
        )
        await gw.oidc.discover()
        identity, id_token = await gw.oidc.finish(request.query, pending, now=time.time())
    except AuthError as exc:
        log.warning("OIDC sign-in refused from %s: %s", request[CLIENT], exc.reason)
        gw.metrics.signins_total.labels(method="oidc", outcome="failed").inc()
        gw.audit.emit("login_failed", **base, method="oidc", reason=exc.reason)
        response = web.HTTPFound("/login?error=sso_failed")
        response.del_cookie(_pending_cookie_name(secure), path="/")
        raise response from None
    session = gw.codec.new_session(identity, now=time.time())
    if len(id_token) < 2048:
        session.id_token_hint = id_token
    gw.metrics.signins_total.labels(method="oidc", outcome="ok").inc()
    gw.audit.emit("login", **base, user=identity.user, groups=list(identity.groups), method="oidc")
    response = web.HTTPFound(safe_next(pending.return_to))
    response.del_cookie(_pending_cookie_name(secure), path="/")
    issue_session(request, response, session)
    raise response
