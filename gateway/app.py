"""Assembles the aiohttp application: routes, middlewares, start-up and clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.audit import AuditLog
from gateway.clouds.registry import build_provider
from gateway.config import GatewayConfig
from gateway.consoles.registry import ConsoleRegistry
from gateway.metrics import Metrics
from gateway.recording.local import LocalStore
from gateway.recording.retention import delete_expired
from gateway.recording.s3 import S3Store
from gateway.recording.store import RecordingStore, StoreError
from gateway.services import Gateway
from gateway.state.base import StateStore
from gateway.state.memory import MemoryStore
from gateway.upstream import upstream_session
from gateway.web import (
    access,
    admin,
    api,
    console,
    health,
    joining,
    moderation,
    oidc_routes,
    pages,
    recordings,
)
from gateway.web.csrf import csrf
from gateway.web.identity import local_users, proxy_identity
from gateway.web.keys import GATEWAY
from gateway.web.middleware import add_security_headers, request_context
from gateway.web.session_cookie import session_cookie

log = logging.getLogger("gateway")

MAX_BODY = 64 * 1024


def make_store(config: GatewayConfig) -> StateStore:
    """The one place that maps `[state]` onto a backend's plain parameters: gateway/state knows no config."""
    if config.state.backend == "redis":
        from gateway.state.redis import RedisStore

        settings = config.state.redis
        return RedisStore(
            url=settings.url,
            password=settings.password.get_secret_value(),
            ca_file=settings.ca_file,
            sentinels=settings.sentinels,
            sentinel_service=settings.sentinel_service,
            key_prefix=settings.key_prefix,
            console_ttl=settings.console_ttl,
        )
    return MemoryStore(console_ttl=config.state.redis.console_ttl)  # the same contract, the same bound


def make_recording_store(config: GatewayConfig) -> RecordingStore | None:
    """The one place that maps `[recording]` onto a store; None without keys (nothing can be recorded,
    nor read back)."""
    recording = config.recording
    if not recording.hmac_keys:
        return None
    if recording.store == "s3":
        return S3Store.from_config(recording.s3)
    return LocalStore(recording.directory)


RETENTION_EVERY = 3600.0  # seconds between two retention runs (the first runs at start-up)


async def _retention(gw: Gateway) -> None:
    """Delete the recordings older than `recording.retention`, now and every hour (a reload's new value
    counts from the next run); a store that cannot be listed is tried again next time."""
    while True:
        max_age = gw.config.recording.retention
        if gw.recordings is not None and max_age > 0:
            try:
                deleted = await delete_expired(gw.recordings, gw.audit, max_age=max_age, now=time.time())
                if deleted:
                    log.info("retention deleted %d recording(s)", len(deleted))
            except StoreError as exc:
                log.warning("recording retention skipped: %s", exc)
        await asyncio.sleep(RETENTION_EVERY)


def sync_interval(config: GatewayConfig) -> float:
    """Live consoles are re-registered well within the shared TTL, so a live one never expires."""
    return min(5.0, config.state.redis.console_ttl / 3)


def ledger_refresh(config: GatewayConfig) -> float:
    """An unchanged console's entry is written again after this long: with `sync_interval` at most as
    long, within two thirds of the TTL, and an idle console costs a write per third of it, not per sync."""
    return config.state.redis.console_ttl / 3


def build_app(config: GatewayConfig) -> web.Application:
    """The gateway application: everything is built from the config when the app starts."""
    # Outermost first: the cookie's session, then what the identity sources say now, then CSRF (which
    # checks the token of the session they settle on).
    app = web.Application(
        middlewares=[request_context, session_cookie, proxy_identity, local_users, csrf],
        client_max_size=MAX_BODY,
    )
    app.on_response_prepare.append(add_security_headers)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        metrics = Metrics()
        # Identity-provider calls (OIDC, JWKS); console proxies get a session of their own.
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30), cookie_jar=aiohttp.DummyCookieJar()
        )
        store = make_store(config)
        providers = {c.name: build_provider(c, observe=metrics.observe_api(c.name)) for c in config.clouds}
        registry = ConsoleRegistry(
            store,
            replica="",
            sync_interval=sync_interval(config),
            refresh_every=ledger_refresh(config),
            termination_ttl=config.session.absolute_lifetime,
            watcher_ttl=config.state.redis.console_ttl,
        )
        gw = Gateway(
            config=config,
            store=store,
            audit=AuditLog(config.audit.target),
            metrics=metrics,
            http=http,
            upstream_http=upstream_session(),
            registry=registry,
            clouds=providers,
            recordings=make_recording_store(config),
        )
        registry.replica = gw.replica
        app[GATEWAY] = gw
        await registry.start()
        retention = asyncio.create_task(_retention(gw), name="recording-retention")
        log.info(
            "gateway ready (replica %s, %d cloud(s), origins %s)", gw.replica, len(providers), gw.origins
        )
        try:
            yield
        finally:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
            await _shutdown(gw)

    app.cleanup_ctx.append(lifecycle)
    app.add_routes(pages.routes)
    app.add_routes(api.routes)
    app.add_routes(oidc_routes.routes)
    app.add_routes(console.routes)
    app.add_routes(admin.routes)
    app.add_routes(access.routes)
    recordings.setup(app)
    app.add_routes(moderation.routes)
    app.add_routes(joining.routes)
    app.add_routes(health.routes)
    if not config.server.metrics_listen:
        app.add_routes(health.metrics_routes)
    app.router.add_static("/static", config.server.static_dir, follow_symlinks=False)
    novnc = config.server.novnc_dir
    for sub in ("core", "vendor"):
        if (novnc / sub).is_dir():
            app.router.add_static(f"/novnc/{sub}", novnc / sub, follow_symlinks=False)
        else:
            log.warning("noVNC assets missing at %s (run `make setup`)", novnc / sub)
    return app


def build_metrics_app(main: web.Application) -> web.Application:
    """Health and metrics on their own listener, sharing the main app's gateway."""
    app = web.Application()
    app.add_routes(health.routes)
    app.add_routes(health.metrics_routes)

    async def share(sub: web.Application) -> None:
        sub[GATEWAY] = main[GATEWAY]

    app.on_startup.append(share)
    return app


async def _shutdown(gw: Gateway) -> None:
    for live in list(gw.registry.local.values()):
        live.terminate(1001, "The gateway is shutting down", "shutdown")
    await gw.registry.wait_empty(5.0)
    await gw.registry.close()
    for provider in gw.clouds.values():
        with contextlib.suppress(Exception):
            await provider.close()
    await gw.http.close()
    await gw.upstream_http.close()
    if gw.recordings is not None:  # after the consoles: each one's recording was finished as it closed
        with contextlib.suppress(Exception):
            await gw.recordings.close()
    gw.passwords.close()
    gw.audit.close()
