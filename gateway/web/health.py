"""Liveness, readiness and Prometheus metrics; metrics move to `server.metrics_listen` when it is set."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway.clouds.base import CloudError, CloudErrorKind, CloudProvider
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
        found = await asyncio.gather(*(_cloud_problem(p) for p in gw.clouds.values()))
        cloud_problems = list(dict.fromkeys(p for p in found if p))
        if cloud_problems:
            problems += cloud_problems
        else:
            gw.last_cloud_ok = time.time()
    try:
        await gw.store.ping()
    except StateUnavailable:
        problems.append("shared state unreachable")
    status = 503 if problems else 200
    return web.json_response({"ready": not problems, "problems": problems}, status=status)


async def _cloud_problem(provider: CloudProvider) -> str | None:
    """None when the cloud answers; else what /readyz says. A rejected sign-in is named as such (the
    gateway's own credentials, and that it is waiting before it tries again), not as unreachable."""
    try:
        await asyncio.wait_for(provider.ping(), timeout=10)
    except CloudError as exc:
        log.warning("readiness: cloud %s: %s", provider.name, exc)
        if exc.kind is CloudErrorKind.AUTH:
            return f"cloud {provider.name}: {exc.user_message}"
        return "cloud API unreachable"
    except TimeoutError:
        log.warning("readiness: cloud %s did not answer within 10 s", provider.name)
        return "cloud API unreachable"
    return None


@metrics_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[GATEWAY].metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
