"""A moderator ends a moderated console (docs/policy.md, "Moderated consoles").

The observer page posts here (CSRF-protected like every state change). Whoever asks must be watching
that console as a moderator right now: a joined watcher entry of theirs in the shared state, in one of the
groups the console's rule names, and not its owner. The end goes through the registry's terminate (a
recorded verdict plus a command), so it reaches the console on whichever replica relays it, even if the
command is lost."""

from __future__ import annotations

from aiohttp import web

from gateway.consoles.codes import CLOSE_MODERATION
from gateway.consoles.moderation import JOINED, may_moderate
from gateway.state.base import StateUnavailable
from gateway.web.api import audit_base
from gateway.web.http import json_error
from gateway.web.keys import GATEWAY
from gateway.web.session_cookie import current

routes = web.RouteTableDef()


@routes.post("/api/consoles/{console_id}/end")
async def end_console(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    session = current(request)
    console_id = request.match_info["console_id"]
    try:
        record = next((r for r in await gw.store.consoles() if r.id == console_id), None)
        entries = (await gw.store.watchers([console_id])).get(console_id, [])
    except StateUnavailable:
        return json_error(503, "The gateway cannot reach its shared state; try again shortly", code="state")
    # One answer for "no such console" and "not yours to end": do not confirm what exists.
    refused = json_error(403, "Only a moderator watching this console can end it", code="forbidden")
    if record is None or not may_moderate(record.moderation, record.user, session.user, session.groups):
        return refused
    watch = next((w for w in entries if w.user == session.user and w.status == JOINED), None)
    if watch is None:
        return refused
    reason = f"Ended by moderator {watch.name or session.user}"
    await gw.registry.terminate(by="moderator", code=CLOSE_MODERATION, reason=reason, console_id=console_id)
    gw.audit.emit(
        "console_moderation",
        **audit_base(request, session),
        console_id=console_id,
        server_id=record.server_id,
        server_name=record.server_name,
        cloud=record.cloud,
        moderation="ended",
        moderators=[watch.name or session.user],
        reason=reason,
        target_user=record.user,
    )
    return web.json_response({"ended": console_id})
