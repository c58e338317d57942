"""Shadowing's HTTP edge (docs/shadowing.md): the observer's WebSocket, a thin adapter to
`join_console` (consoles/joining.py) like the console socket is to `open_console`; and the owner's answer
to a join request, a CSRF-protected POST from the owner's console page that works from any replica (the
request and the answer live in the shared state)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSMsgType, web

from gateway.consoles.joining import JoinRequest, join_console
from gateway.consoles.opening import ConsoleServices
from gateway.consoles.watchers import decide_join
from gateway.state.base import StateUnavailable
from gateway.web.api import audit_base
from gateway.web.console import serve_console_socket
from gateway.web.http import json_error
from gateway.web.keys import CLIENT, GATEWAY, SESSION, STATE_DOWN
from gateway.web.session_cookie import current

log = logging.getLogger("gateway.shadowing")
routes = web.RouteTableDef()


class _Page:
    """The observer's socket as joining needs it (consoles/joining.py `Observer`)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def send_json(self, data: Any) -> None:
        await self._ws.send_json(data)

    async def left(self) -> None:
        """Until the page closes its socket; before the hello it sends nothing else (noVNC starts on the
        hello), so nothing meant for the console is read away here."""
        while not self._ws.closed:
            msg = await self._ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return


@routes.get("/ws/join/{console_id}")
async def join_socket(request: web.Request) -> web.StreamResponse:
    async def start(ws: web.WebSocketResponse, services: ConsoleServices) -> object:
        session = request.get(SESSION)
        joined = JoinRequest(
            console_id=request.match_info["console_id"],
            session=session,
            client=request[CLIENT],
            audit=audit_base(request, session),
            state_down=bool(request.get(STATE_DOWN)),
        )
        return await join_console(joined, _Page(ws), services)

    return await serve_console_socket(request, start)


@routes.post("/api/consoles/{console_id}/watchers/{watch_id}")
async def decide(request: web.Request) -> web.Response:
    """The owner approves or refuses one pending join: {"decision": "approve" | "refuse"}."""
    gw = request.app[GATEWAY]
    session = current(request)
    console_id, watch_id = request.match_info["console_id"], request.match_info["watch_id"]
    try:
        body = await request.json()
    except ValueError:
        body = None
    answer = body.get("decision") if isinstance(body, dict) else None
    if answer not in ("approve", "refuse"):
        return json_error(400, 'Send {"decision": "approve"} or {"decision": "refuse"}', code="bad_request")
    try:
        record = next((r for r in await gw.registry.all() if r.id == console_id), None)
        # One answer for "no such console" and "not yours": do not confirm what exists.
        if record is None or record.watching or record.user != session.user:
            return json_error(403, "Only the console's owner decides who watches it", code="forbidden")
        decided = await decide_join(
            gw.store,
            console_id,
            watch_id,
            answer == "approve",
            session.user,
            gw.config.console.join_approval_timeout,
        )
        if decided is None:
            return json_error(
                409, "Nothing to decide: the request was answered, withdrawn or timed out", code="gone"
            )
        await gw.registry.publish_watchers(console_id)
    except StateUnavailable:
        return json_error(503, "The gateway cannot reach its shared state; try again shortly", code="state")
    gw.audit.emit(
        "join_approved" if decided.status == "approved" else "join_refused",
        **audit_base(request, session),
        watching=console_id,
        watch_id=watch_id,
        target_user=decided.user,
        server_id=record.server_id,
        cloud=record.cloud,
        server_name=record.server_name,
        **({} if decided.status == "approved" else {"closed_by": "owner"}),
    )
    return web.json_response({"watch_id": watch_id, "status": decided.status})
