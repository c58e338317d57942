"""Running the gateway as a process: listeners, SIGTERM drain, SIGHUP reload."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from gateway.app import build_app, build_metrics_app
from gateway.config import GatewayConfig, load_config, parse_host_port
from gateway.consoles.codes import CLOSE_DRAINING, REASON_DRAINING
from gateway.web.keys import GATEWAY

log = logging.getLogger("gateway")


def reload(app: web.Application, path: Path | None) -> None:
    gw = app[GATEWAY]
    try:
        new = load_config(path)
        gw.apply_config(new)
    except Exception as exc:
        log.error("config reload refused, keeping the running config:\n%s", exc)
        gw.audit.emit("config_reloaded", request_id=None, outcome="error", error=str(exc).splitlines()[0])
        return
    gw.audit.reopen()
    # Users, their groups and the policy may all have changed: re-decide every live console on this replica.
    closed = gw.redecide(lambda r: gw.current_groups(r.user, r.method, r.groups))
    gw.audit.emit("config_reloaded", request_id=None, outcome="ok", terminated=closed)
    log.info("config reloaded; %d console(s) closed by reduced permissions or removed users", closed)


async def drain(app: web.Application, grace: float) -> None:
    gw = app[GATEWAY]
    gw.draining = True
    live = len(gw.registry.local)
    log.info("draining: refusing new consoles, %d live, waiting up to %.0f s", live, grace)
    if live and not await gw.registry.wait_empty(grace):
        n = gw.registry.terminate_local(
            lambda _r: True,
            code=CLOSE_DRAINING,
            reason=REASON_DRAINING,
            by="drain",
        )
        log.info("drain time over: closed %d console(s)", n)
        await gw.registry.wait_empty(10.0)


# glibc's mallopt parameters, and what the gateway sets them to (tune_malloc).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 1 << 20
_TRIM_THRESHOLD = 4 << 20


def tune_malloc() -> bool:
    """Keep glibc from handing memory back to the kernel after every TLS read; True when applied.

    Each read from a TLS socket (the upstream, or the browser under server.tls_cert) asks Python's ssl
    module for up to 256 KiB (the event loop's read size), which allocates that much and shrinks it to
    the record. With glibc's defaults that buffer sits at the top of the heap, and freeing it trims the
    heap: a brk() to grow and one to shrink per TLS record, and fresh pages zeroed by the kernel each
    time. Below 1 MiB nothing is mmapped and up to 4 MiB stays at the heap's top, so the buffer is
    reused. Measured: relay CPU per GB on a TLS upstream about 12% lower (docs/performance.md).
    Process-wide, so set once by `serve`; a no-op off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_set = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mmap_set


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (extra "fast"), else None: asyncio's own.

    Config-free on purpose. The relay is socket reads and writes; uvloop does them in C, which
    the benchmark measured at about 20% more throughput on a message mix and a quarter less
    latency per message (docs/performance.md). Use: asyncio.Runner(loop_factory=loop_factory()).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _tls(config: GatewayConfig) -> ssl.SSLContext | None:
    if config.server.tls_cert is None or config.server.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    return ctx


async def serve(
    config: GatewayConfig, path: Path | None, *, ready: asyncio.Event | None = None, reuse_port: bool = False
) -> None:
    app = build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=5.0,
        max_field_size=config.server.max_header_size,
        max_line_size=config.server.max_header_size,
        keepalive_timeout=config.server.keepalive_timeout,
    )
    await runner.setup()
    host, port = parse_host_port(config.server.listen)
    await web.TCPSite(runner, host, port, ssl_context=_tls(config), reuse_port=reuse_port or None).start()
    log.info("listening on %s://%s:%d", "https" if config.server.tls_cert else "http", host, port)
    metrics_runner = None
    if config.server.metrics_listen:
        metrics_runner = web.AppRunner(build_metrics_app(app), handle_signals=False, access_log=None)
        await metrics_runner.setup()
        mhost, mport = parse_host_port(config.server.metrics_listen)
        await web.TCPSite(metrics_runner, mhost, mport).start()
        log.info("health and metrics on http://%s:%d", mhost, mport)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, app, path)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        await drain(app, app[GATEWAY].config.server.drain_timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
        log.info("stopped")
