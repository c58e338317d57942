"""Just-in-time access requests (docs/policy.md, "Just-in-time access"): a user asks for a rule's access
on one server for a while and says why; an approver named by that rule approves or denies it. An approved
request is a grant in the shared state, so every replica honours it; its end re-decides the consoles that
depended on it (ConsoleRegistry.reconcile). Nobody decides their own request. Every step is audited."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.auth.cookie import SessionData
from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.durations import format_duration
from gateway.policy import MAX_JUSTIFICATION
from gateway.services import Gateway
from gateway.state.base import AccessRequest, active_grants
from gateway.web.api import audit_base
from gateway.web.http import json_error
from gateway.web.keys import GATEWAY
from gateway.web.session_cookie import current

log = logging.getLogger("gateway.access")
routes = web.RouteTableDef()

PENDING_TTL = 86400.0  # an undecided request lapses after a day
DENIED_TTL = 3600.0  # a denial stays visible to its requester for an hour
MIN_DURATION = 1.0  # seconds; the rule's max_grant is the real bound


def view(request: AccessRequest) -> dict[str, Any]:
    return request.to_dict()


@routes.post("/api/access-requests")
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return json_error(400, "Send a JSON object", code="bad_request")
    cloud, server_id = str(body.get("cloud", "")), str(body.get("server_id", ""))
    reason = str(body.get("reason", "")).strip()
    duration = body.get("duration")
    provider = gw.clouds.get(cloud)
    if provider is None:
        return json_error(404, "No such server, or nothing to request on it", code="not_found")
    try:
        server = await provider.get_server(server_id)
    except CloudError as exc:
        status = 404 if exc.kind is CloudErrorKind.NOT_FOUND else 502
        return json_error(status, exc.user_message, code=exc.kind.name.lower())
    grants = await granted_rules(gw, session.user, cloud, server_id)
    options = gw.policy.requestable(session.user, session.groups, server, grants)
    if not options:
        # The same words for a server nobody may request: do not confirm what exists.
        return json_error(404, "No such server, or nothing to request on it", code="not_found")
    option = max(options, key=lambda o: o.permission.rank)
    if not reason or len(reason) > MAX_JUSTIFICATION or any(ord(c) < 0x20 for c in reason):
        return json_error(
            400, f"Say why, in one line of at most {MAX_JUSTIFICATION} characters", code="reason"
        )
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return json_error(400, "Give a duration in seconds", code="duration")
    if not MIN_DURATION <= duration <= option.max_grant:
        return json_error(
            400,
            f"The duration must be between {MIN_DURATION:g} and {option.max_grant:g} seconds",
            code="duration",
        )
    wait = await gw.store.take_token(f"access-request:{session.user}", rate=10 / 3600, burst=5)
    if wait is not None:
        return json_error(
            429, f"Too many access requests; try again in {int(wait) + 1} s", code="rate_limited"
        )
    access = AccessRequest(
        id=secrets.token_urlsafe(9),
        user=session.user,
        cloud=cloud,
        server_id=server.id,
        server_name=server.name,
        rule=option.rule,
        permission=str(option.permission),
        duration=float(duration),
        reason=reason,
        created=time.time(),
    )
    await gw.store.access_request_put(access, PENDING_TTL)
    gw.audit.emit("access_requested", **_audit(request, session, access))
    webhook = gw.policy.config.access_webhook
    if webhook is not None:
        task = asyncio.create_task(_notify(gw, webhook, access, origin=f"{request.scheme}://{request.host}"))
        _notifying.add(task)
        task.add_done_callback(_notifying.discard)
    log.info("access request %s by %s for %s (%s)", access.id, access.user, access.server_name, access.rule)
    return web.json_response({"request": view(access)}, status=201)


@routes.get("/api/access-requests")
async def listing(request: web.Request) -> web.Response:
    """The user's own requests, and the pending ones they may decide (never their own)."""
    gw = request.app[GATEWAY]
    session = current(request)
    requests = await gw.store.access_requests()
    mine = [view(r) for r in requests if r.user == session.user]
    to_decide = [
        view(r)
        for r in requests
        if r.status == "pending" and r.user != session.user and gw.policy.approves(session.groups, r.rule)
    ]
    return web.json_response({"mine": mine, "to_decide": to_decide})


@routes.post("/api/access-requests/{request_id}/{verdict:approve|deny}")
async def decide(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    wanted = request.match_info["request_id"]
    access = next((r for r in await gw.store.access_requests() if r.id == wanted), None)
    if access is None:
        return json_error(404, "No such access request", code="not_found")
    if access.user == session.user:
        return json_error(403, "You cannot decide your own access request", code="own_request")
    if not gw.policy.approves(session.groups, access.rule):
        return json_error(403, "You are not an approver for this access", code="forbidden")
    now = time.time()
    approve = request.match_info["verdict"] == "approve"
    decided = dataclasses.replace(
        access,
        status="approved" if approve else "denied",
        decided_by=session.user,
        expires=now + access.duration if approve else 0.0,
    )
    if not await gw.store.access_request_decide(decided, access.duration if approve else DENIED_TTL):
        return json_error(409, "This request was already decided", code="decided")
    gw.audit.emit("access_approved" if approve else "access_denied", **_audit(request, session, decided))
    return web.json_response({"request": view(decided)})


_notifying: set[asyncio.Task[None]] = set()  # webhook calls in flight (kept referenced until done)


async def _notify(gw: Gateway, url: str, access: AccessRequest, *, origin: str) -> None:
    """Tell a chat system (its incoming webhook) of a new request: `text` for chat, the rest for bots.
    Best effort: a failure is logged (without the URL, which holds the hook's secret) and forgotten."""
    decide_at = f"{origin}/admin"
    text = (
        f"{access.user} asks for {access.permission} on {access.server_name} for "
        f"{format_duration(access.duration)}: {access.reason} (decide at {decide_at})"
    )
    payload = {"event": "access_requested", "text": text, "request": view(access), "decide_at": decide_at}
    try:
        async with gw.http.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=5)) as response:
            if response.status >= 300:
                log.warning("access webhook answered HTTP %s for request %s", response.status, access.id)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("access webhook not reached for request %s: %s", access.id, type(exc).__name__)


async def granted_rules(gw: Gateway, user: str, cloud: str, server_id: str) -> frozenset[str]:
    """The just-in-time rules an approved, unexpired request opens for `user` on one server."""
    return frozenset(active_grants(await gw.store.access_requests(), user, cloud, server_id, time.time()))


def _audit(request: web.Request, session: SessionData, access: AccessRequest) -> dict[str, Any]:
    return {
        **audit_base(request, session),
        "access_request": access.id,
        "target_user": access.user,
        "cloud": access.cloud,
        "server_id": access.server_id,
        "server_name": access.server_name,
        "rule": access.rule,
        "permission": access.permission,
        "grant_seconds": access.duration,
        "justification": access.reason,
    }
