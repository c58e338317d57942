"""The console WebSocket: the thin aiohttp side of opening a console (gateway/consoles/opening.py).

The Origin check answers before the upgrade with HTTP 403 (cross-site WebSocket hijacking); after the
upgrade the request becomes an `open_console` call, and its outcome a close code and reason the console
page shows (browsers cannot read the HTTP status of a failed WebSocket).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.consoles.opening import ConsoleServices, Link, OpenRequest, Refusal, open_console
from gateway.consoles.relay import Relay
from gateway.consoles.relay_core import RelayCore
from gateway.services import Gateway
from gateway.upstream import UpstreamTarget, open_upstream
from gateway.web.api import audit_base
from gateway.web.http import origin_allowed
from gateway.web.keys import CLIENT, GATEWAY, SESSION, STATE_DOWN

log = logging.getLogger("gateway.console")
routes = web.RouteTableDef()


async def console_response(request: web.Request, gw: Gateway) -> web.WebSocketResponse | None:
    """The upgraded browser socket of a console (an owner's or an observer's); None: a cross-origin
    request, to be answered 403 before the upgrade."""
    if not origin_allowed(request, gw.origins):
        log.warning("console WebSocket refused: Origin %r not allowed", request.headers.get("Origin"))
        return None
    console = gw.config.console
    ws = web.WebSocketResponse(
        protocols=("binary",),
        autoping=False,  # the relay answers pings, and sees pongs for the keep-alive (gw.keepalive)
        max_msg_size=console.max_message_size,
        compress=False,
    )
    await ws.prepare(request)
    return ws


async def serve_console_socket(
    request: web.Request,
    start: Callable[[web.WebSocketResponse, ConsoleServices], Awaitable[object]],
) -> web.StreamResponse:
    """What every console socket (an owner's, an observer's) does around its use case `start`: 403 before
    the upgrade for a foreign Origin, a refusal as the close code and reason the page shows, and the socket
    closed whatever happened."""
    gw = request.app[GATEWAY]
    ws = await console_response(request, gw)
    if ws is None:
        return web.Response(status=403, text="Cross-origin WebSocket refused")
    try:
        outcome = await start(ws, services_for(gw, ws))
        if isinstance(outcome, Refusal) and not ws.closed:
            await ws.close(code=outcome.code, message=outcome.reason.encode())
    finally:
        if not ws.closed:
            await ws.close()
    return ws


@routes.get("/ws/console/{cloud}/{server_id}")
async def console_socket(request: web.Request) -> web.StreamResponse:
    async def start(ws: web.WebSocketResponse, services: ConsoleServices) -> object:
        session = request.get(SESSION)
        opened = OpenRequest(
            cloud=request.match_info["cloud"],
            server_id=request.match_info["server_id"],
            session=session,
            client=request[CLIENT],
            audit=audit_base(request, session),
            state_down=bool(request.get(STATE_DOWN)),
            justification=request.query.get("justification", ""),
        )
        return await open_console(opened, ws, services)

    return await serve_console_socket(request, start)


def services_for(gw: Gateway, ws: web.WebSocketResponse) -> ConsoleServices:
    """The gateway's parts as this request finds them, and how to reach a console proxy from here."""
    config = gw.config

    async def connect(target: UpstreamTarget, core: RelayCore) -> Link:
        upstream = await open_upstream(
            gw.upstream_http,
            target,
            allowlist=gw.allowlist,
            ssl_context=gw.upstream_ssl if target.scheme == "wss" else None,
            connect_timeout=config.upstream.connect_timeout,
            autoping=False,
            max_msg_size=config.console.max_message_size,
        )
        # Made now, before anything awaits, so that the relay sees the upstream's frames from the first
        # byte; they pass through as the upstream was opened, unless the fast path is switched off.
        return Relay(
            ws,
            upstream,
            core,
            max_msg_size=config.console.max_message_size if config.console.frame_passthrough else None,
            keepalive=gw.keepalive,
            keepalive_interval=config.console.keepalive,
        )

    def cloud_answered() -> None:
        gw.last_cloud_ok = time.time()

    return ConsoleServices(
        config=config,
        clouds=gw.clouds,
        store=gw.store,
        registry=gw.registry,
        policy=gw.policy,
        audit=gw.audit,
        metrics=gw.metrics,
        connect=connect,
        replica=gw.replica,
        draining=gw.draining,
        cloud_answered=cloud_answered,
        recordings=gw.recordings,
        recording=gw.recording,
    )
