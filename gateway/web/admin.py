"""Admin API: the live consoles of every replica, and terminate / lock actions."""

from __future__ import annotations

import time

from aiohttp import web

from gateway.auth.cookie import SessionData
from gateway.consoles.codes import CLOSE_LOCKED, CLOSE_TERMINATED, REASON_LOCKED
from gateway.policy import Permission
from gateway.web.api import audit_base
from gateway.web.http import json_error
from gateway.web.keys import GATEWAY
from gateway.web.session_cookie import current

routes = web.RouteTableDef()


def _admin(request: web.Request) -> SessionData:
    session = current(request)
    if request.app[GATEWAY].policy.is_admin(session.user, session.groups).permission is Permission.NONE:
        raise web.HTTPForbidden(
            text='{"error": "Administrators only", "code": "forbidden"}', content_type="application/json"
        )
    return session


@routes.get("/api/admin/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    _admin(request)
    gw = request.app[GATEWAY]
    now = time.time()
    consoles = [
        {
            "id": r.id,
            "user": r.user,
            "cloud": r.cloud,
            "server_id": r.server_id,
            "server_name": r.server_name,
            "permission": r.permission,
            "client": r.client,
            "since": r.started,
            "seconds": round(now - r.started, 1),
            "bytes_to_browser": r.bytes_to_browser,
            "bytes_to_upstream": r.bytes_to_upstream,
            "replica": r.replica,
            "state": r.state,
            "justification": r.justification,
            "recording": r.recording or None,
            "watching": r.watching,  # an observer's console: the console it watches
        }
        for r in await gw.registry.all()
    ]
    locked = await gw.store.locked_users()
    return web.json_response(
        {"consoles": consoles, "locked": [{"user": u, "reason": r} for u, r in locked.items()]}
    )


@routes.post("/api/admin/consoles/{console_id}/terminate")
async def terminate_console(request: web.Request) -> web.Response:
    session = _admin(request)
    gw = request.app[GATEWAY]
    console_id = request.match_info["console_id"]
    target = next((r for r in await gw.registry.all() if r.id == console_id), None)
    if target is None:
        return json_error(404, "No such live console", code="not_found")
    await gw.registry.terminate(
        by="admin",
        code=CLOSE_TERMINATED,
        reason=f"An administrator ({session.user}) closed this console",
        console_id=console_id,
    )
    gw.audit.emit(
        "admin_terminate",
        **audit_base(request, session),
        target_user=target.user,
        console_id=console_id,
        server_id=target.server_id,
        server_name=target.server_name,
        cloud=target.cloud,
    )
    return web.json_response({"terminated": [console_id]})


@routes.post("/api/admin/users/{user}/terminate")
async def terminate_user(request: web.Request) -> web.Response:
    session = _admin(request)
    gw = request.app[GATEWAY]
    user = request.match_info["user"]
    ids = [r.id for r in await gw.registry.all() if r.user == user]
    await gw.registry.terminate(
        by="admin",
        code=CLOSE_TERMINATED,
        reason=f"An administrator ({session.user}) closed your consoles",
        user=user,
    )
    gw.audit.emit("admin_terminate", **audit_base(request, session), target_user=user, terminated=len(ids))
    return web.json_response({"terminated": ids})


async def _reason(request: web.Request) -> str:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: a body nested too deep for json
        body = {}
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason[:200] if isinstance(reason, str) and reason else "locked by an administrator"


@routes.post("/api/admin/users/{user}/lock")
async def lock_user(request: web.Request) -> web.Response:
    session = _admin(request)
    gw = request.app[GATEWAY]
    user = request.match_info["user"]
    reason = await _reason(request)
    await gw.store.lock_user(user, reason)
    await gw.registry.terminate(by="admin", code=CLOSE_LOCKED, reason=REASON_LOCKED, user=user)
    gw.audit.emit("admin_lock", **audit_base(request, session), target_user=user, reason=reason)
    return web.json_response({"locked": user})


@routes.post("/api/admin/users/{user}/unlock")
async def unlock_user(request: web.Request) -> web.Response:
    session = _admin(request)
    gw = request.app[GATEWAY]
    user = request.match_info["user"]
    await gw.store.unlock_user(user)
    gw.audit.emit("admin_unlock", **audit_base(request, session), target_user=user)
    return web.json_response({"unlocked": user})
