"""Liveness, readiness and Prometheus metrics; metrics move to `server.metrics_listen` when it is set."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway.clouds.base import CloudError
from gateway.state.base import StateUnavailable
from gateway.web.keys import GATEWAY

log = logging.getLogger("gateway.health")
routes = web.RouteTableDef()  # liveness and readiness: on every listener
metrics_routes = web.RouteTableDef()  # on the metrics listener when there is one, else on the main one

READY_INTERVAL = 60.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    problems: list[str] = []
    if gw.draining:
        problems.append("draining")
    if time.time() - gw.last_cloud_ok > READY_INTERVAL:
        try:
            await asyncio.wait_for(asyncio.gather(*(p.ping() for p in gw.clouds.values())), timeout=10)
            gw.last_cloud_ok = time.time()
        except (CloudError, TimeoutError) as exc:
            log.warning("readiness: cloud API not reachable: %s", exc)
            problems.append("cloud API unreachable")
    try:
        await gw.store.ping()
    except StateUnavailable:
        problems.append("shared state unreachable")
    status = 503 if problems else 200
    return web.json_response({"ready": not problems, "problems": problems}, status=status)


@metrics_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[GATEWAY].metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
