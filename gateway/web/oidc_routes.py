"""OpenID Connect sign-in: start (redirect to the provider) and callback (code for tokens, then a session)."""

from __future__ import annotations

import logging
import re
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
_ACR = re.compile(r"[\x21-\x7e]{1,200}")  # an acr value: printable, no spaces


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
    max_age, acr_values = _step_up(request)
    url, pending = gw.oidc.begin(
        safe_next(request.query.get("next")), now=time.time(), max_age=max_age, acr_values=acr_values
    )
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


def _step_up(request: web.Request) -> tuple[int | None, list[str]]:
    """What the console page asks for when a rule wants a fresh or stronger sign-in (a close 4407). It
    can only make the sign-in stricter; the console checks the result again either way."""
    raw = request.query.get("max_age", "")
    max_age = int(raw) if raw.isdigit() and len(raw) <= 7 else None
    acr_values = [v for v in request.query.get("acr_values", "").split() if _ACR.fullmatch(v)][:8]
    return max_age, acr_values


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
        identity, id_token, authentication = await gw.oidc.finish(request.query, pending, now=time.time())
    except AuthError as exc:
        log.warning("OIDC sign-in refused from %s: %s", request[CLIENT], exc.reason)
        gw.metrics.signins_total.labels(method="oidc", outcome="failed").inc()
        gw.audit.emit("login_failed", **base, method="oidc", reason=exc.reason)
        response = web.HTTPFound("/login?error=sso_failed")
        response.del_cookie(_pending_cookie_name(secure), path="/")
        raise response from None
    session = gw.codec.new_session(
        identity, now=time.time(), auth_time=authentication.auth_time, acr=authentication.acr
    )
    if len(id_token) < 2048:
        session.id_token_hint = id_token
    gw.metrics.signins_total.labels(method="oidc", outcome="ok").inc()
    gw.audit.emit("login", **base, user=identity.user, groups=list(identity.groups), method="oidc")
    response = web.HTTPFound(safe_next(pending.return_to))
    response.del_cookie(_pending_cookie_name(secure), path="/")
    issue_session(request, response, session)
    raise response
