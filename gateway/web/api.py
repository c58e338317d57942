"""JSON API for the browser pages: sign-in, sign-out, who am I, and the servers this user may open."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from gateway.auth.cookie import SessionData
from gateway.auth.identity import Identity
from gateway.auth.passwords import PasswordPoolBusy
from gateway.clouds.base import CloudError, CloudErrorKind, Server
from gateway.consoles.codes import CLOSE_LOGGED_OUT, REASON_LOGGED_OUT
from gateway.policy import Decision, Permission, Requestable
from gateway.state.base import StateUnavailable, active_grants
from gateway.web.http import json_error, safe_next
from gateway.web.keys import CLIENT, GATEWAY, REQUEST_ID
from gateway.web.session_cookie import current, set_session

log = logging.getLogger("gateway.web")
routes = web.RouteTableDef()

_MAX_FIELD = 256


def audit_base(request: web.Request, session: SessionData | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {"request_id": request[REQUEST_ID], "client": request[CLIENT]}
    if session is not None:
        base["user"] = session.user
        base["groups"] = list(session.groups)
    return base


@routes.get("/api/auth/methods")
async def auth_methods(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    auth = gw.config.auth
    methods: list[dict[str, str]] = []
    if auth.local.enabled:
        methods.append({"type": "local"})
    if auth.oidc.enabled:
        methods.append({"type": "oidc", "label": auth.oidc.display_name, "start": "/auth/oidc/start"})
    if auth.proxy_jwt.enabled or auth.proxy_headers.enabled:
        methods.append({"type": "proxy"})
    return web.json_response({"methods": methods})


@routes.post("/api/login")
async def login(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if not gw.config.auth.local.enabled:
        return json_error(404, "Local sign-in is not enabled", code="disabled")
    try:
        body = await request.json()
        user = body["user"]
        password = body["password"]
        if not isinstance(user, str) or not isinstance(password, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: "[[[[..." too deep
        return json_error(
            400, "Send a JSON object with text fields 'user' and 'password'", code="bad_request"
        )
    if not user or len(user) > _MAX_FIELD or len(password) > 1024:
        return json_error(400, "User name or password has an invalid length", code="bad_request")
    client = request[CLIENT]
    wait = await gw.throttle.check(user, client)
    if wait is not None:
        gw.metrics.signins_total.labels(method="local", outcome="throttled").inc()
        gw.audit.emit("login_failed", **audit_base(request), user=user, method="local", reason="throttled")
        return json_error(
            429,
            f"Too many failed sign-in attempts; try again in {int(wait) + 1} s",
            code="throttled",
            retry_after=int(wait) + 1,
        )
    stored = gw.local_users.get(user)
    try:
        # Unknown users are checked against a dummy hash, so timing does not reveal who exists.
        ok = await gw.passwords.verify(password, stored[0] if stored else None)
    except PasswordPoolBusy:
        gw.metrics.signins_total.labels(method="local", outcome="busy").inc()
        gw.audit.emit("login_failed", **audit_base(request), user=user, method="local", reason="busy")
        return json_error(503, "Too many sign-ins at once; try again in a moment", code="busy", retry_after=1)
    if not ok or stored is None:
        await gw.throttle.failed(user, client)
        gw.metrics.signins_total.labels(method="local", outcome="failed").inc()
        gw.audit.emit(
            "login_failed", **audit_base(request), user=user, method="local", reason="bad credentials"
        )
        log.info("local sign-in failed for %r from %s", user, client)
        return json_error(401, "Wrong user name or password", code="bad_credentials")
    await gw.throttle.succeeded(user, client)
    identity = Identity(user=user, groups=stored[1], method="local")
    session = gw.codec.new_session(identity, now=time.time())
    gw.metrics.signins_total.labels(method="local", outcome="ok").inc()
    gw.audit.emit("login", **audit_base(request, session), method="local")
    set_session(request, session)
    return web.json_response(
        {"next": safe_next(body.get("next") if isinstance(body.get("next"), str) else None)}
    )


@routes.post("/api/logout")
async def logout(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    await gw.store.revoke_session(session.sid, gw.config.session.absolute_lifetime)
    await gw.registry.terminate(by="logout", code=CLOSE_LOGGED_OUT, reason=REASON_LOGGED_OUT, sid=session.sid)
    gw.audit.emit("logout", **audit_base(request, session), method=session.method)
    redirect = "/login?signed_out=1"
    if session.method == "oidc" and gw.oidc is not None:
        target = gw.config.auth.oidc.logout_redirect or f"{gw.origins[0]}/login?signed_out=1"
        redirect = (
            gw.oidc.logout_url(id_token_hint=session.id_token_hint, post_logout_redirect_uri=target)
            or redirect
        )
    set_session(request, None)
    return web.json_response({"next": redirect})


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    admin = gw.policy.is_admin(session.user, session.groups).permission is not Permission.NONE
    return web.json_response(
        {
            "user": session.user,
            "email": session.email,
            "groups": list(session.groups),
            "method": session.method,
            "csrf": session.csrf,
            "admin": admin,
            "approver": gw.policy.is_approver(session.groups),
            "reviewer": gw.policy.is_reviewer(session.user, session.groups),
            "locked": await gw.store.is_locked(session.user),
            "expires": session.created + gw.config.session.absolute_lifetime,
        }
    )


def server_view(server: Server, decision: Decision) -> dict[str, Any]:
    reason = server.unavailable_reason()
    return {
        "cloud": server.cloud,
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "availability_zone": server.availability_zone,
        "project_id": server.project_id,
        "region": server.region,
        "permission": str(decision.permission),
        "available": reason is None,
        "unavailable_reason": reason,
    }


def requestable_view(options: list[Requestable]) -> dict[str, Any] | None:
    """What an access request could open on a server (the highest of the rules that would grant it)."""
    if not options:
        return None
    best = max(options, key=lambda o: o.permission.rank)
    return {"permission": str(best.permission), "max_grant": best.max_grant}


@routes.get("/api/servers")
async def list_servers(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    names = list(gw.clouds)
    try:  # approved just-in-time requests open servers; unreadable, the list shows the rest
        requests = await gw.store.access_requests()
    except StateUnavailable as exc:
        log.warning("access grants not read for the server list: %s", exc)
        requests = []
    results = await asyncio.gather(*(gw.clouds[n].list_servers() for n in names), return_exceptions=True)
    servers: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, CloudError):
            log.warning("listing servers of cloud %s failed: %s", name, result)
            errors.append({"cloud": name, "message": result.user_message})
            continue
        if isinstance(result, BaseException):
            log.error("listing servers of cloud %s failed", name, exc_info=result)
            errors.append(
                {"cloud": name, "message": "the cloud API answered in a way the gateway did not expect"}
            )
            continue
        gw.last_cloud_ok = time.time()
        listed = gw.policy.filter_servers(
            session.user,
            session.groups,
            result,
            lambda s: active_grants(requests, session.user, s.cloud, s.id, time.time()),
        )
        for server, decision, options in listed:
            servers.append({**server_view(server, decision), "requestable": requestable_view(options)})
    servers.sort(key=lambda s: (s["name"].lower(), s["id"]))
    return web.json_response({"servers": servers, "errors": errors})


@routes.get("/api/servers/{cloud}/{server_id}")
async def show_server(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    provider = gw.clouds.get(request.match_info["cloud"])
    if provider is None:
        return json_error(404, "No such cloud is configured", code="not_found")
    try:
        server = await provider.get_server(request.match_info["server_id"])
    except CloudError as exc:
        log.warning("show server failed: %s", exc)
        status = 404 if exc.kind is CloudErrorKind.NOT_FOUND else 502
        return json_error(status, exc.user_message, code=exc.kind.name.lower())
    decision = gw.policy.decide(session.user, session.groups, server)
    if decision.permission is Permission.NONE:
        # Same answer as an unknown server: do not confirm what exists to someone who may not see it.
        return json_error(404, "No such server, or you may not open it", code="not_found")
    return web.json_response(server_view(server, decision))
