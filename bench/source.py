"""The console side, in its own process: a WebSocket source, a TCP source and a simulated ECS API.

The WebSocket source stands in for nova-novncproxy (what the gateway and a direct client connect to);
the TCP source stands in for the VNC server behind websockify. Both speak bench.protocol, byte for
byte the same. The ECS API is the project's own simulator; a timing middleware records how long it
spends on each request so the console-open figure can subtract it.

With `--tls-dir` (server.pem and server-key.pem from gateway.sim.certs) the same WebSocket source also
listens with TLS (`wss`), as a real nova-novncproxy does, and a second ECS API hands out `https`
console URLs that point there: a gateway whose cloud is that API relays from a TLS upstream.

Run as `python -m bench.source`; it prints one JSON line with its ports and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from bench.protocol import SERVER_STEPS, Profile, SourceParser, framed_update
from gateway.sim.ecs_api import SimServer, SimulatedECS

LOOPBACK = "127.0.0.1"
PROJECT_ID = "be0c0000000000000000000000000001"
SERVER = SimServer(id="0b3c1e5a-0000-4000-8000-00000000be0c", name="bench-vm")
_BLOB = memoryview(bytes(1 << 20))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_nofile(want: int = 0) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (10,000 sessions need more than the usual 1,024), and the
    hard limit up to `want` where this process may raise it (CAP_SYS_RESOURCE, e.g. root on a host; not
    in an unprivileged container). Children started afterwards inherit it. Returns the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass  # not allowed: the idle scenario reports how far the limit let it go
        else:
            return want
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _blob(size: int) -> memoryview:
    return _BLOB[:size]


def _message(profile: Profile) -> Callable[[int], bytes | memoryview]:
    """A message of the profile's stream from its size: zeros, or a whole FramebufferUpdate."""
    return framed_update if profile.framed else _blob


async def _ws_source(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=0, compress=False)
    await ws.prepare(request)
    await ws.send_bytes(SERVER_STEPS[0])
    parser = SourceParser()
    send = ws.send_bytes
    while True:
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            break
        for item in parser.feed(msg.data):
            if isinstance(item, Profile):
                message = _message(item)
                for size in item.sizes:
                    await send(message(size))
            else:
                await send(item)
    return ws


async def _tcp_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(SERVER_STEPS[0])
    parser = SourceParser()
    try:
        while data := await reader.read(65536):
            for item in parser.feed(data):
                if isinstance(item, Profile):
                    message = _message(item)
                    for size in item.sizes:
                        writer.write(message(size))
                        await writer.drain()
                else:
                    writer.write(item)
            await writer.drain()
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def _console_url(ws_port: int, scheme: str = "http") -> Callable[[SimServer], str]:
    def issue(_server: SimServer) -> str:
        # The nova >= 2.6 form: the gateway derives ws(s)://127.0.0.1:PORT/?token=T from it.
        path = quote("?token=" + secrets.token_urlsafe(16), safe="")
        return f"{scheme}://{LOOPBACK}:{ws_port}/vnc_auto.html?path={path}"

    return issue


async def _serve(runner: web.AppRunner, **kw: Any) -> int:
    """`runner` served on a fresh loopback port; returns the port."""
    site = web.TCPSite(runner, LOOPBACK, 0, **kw)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _runner(app: web.Application) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    api_times: list[float] = []

    async def times(request: web.Request) -> web.Response:
        body = list(api_times)
        if request.method == "POST":
            api_times.clear()
        return web.json_response(body)

    ws_app = web.Application()
    ws_app.router.add_route("*", "/bench/api-times", times)
    ws_app.router.add_get("/{tail:.*}", _ws_source)
    ws_runner = await _runner(ws_app)
    ports = {"ws": await _serve(ws_runner, backlog=4096)}

    tcp = await asyncio.start_server(_tcp_source, LOOPBACK, 0, backlog=4096)
    ports["tcp"] = tcp.sockets[0].getsockname()[1]

    @web.middleware
    async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            api_times.append(time.perf_counter() - started)

    async def ecs_api(ws_port: int, scheme: str) -> int:
        app = SimulatedECS(
            project_id=PROJECT_ID,
            access_key=os.environ["BENCH_ACCESS_KEY"],
            secret_key=os.environ["BENCH_SECRET_KEY"],
            servers=[SERVER],
            issue_console=_console_url(ws_port, scheme),
        ).app()
        app.middlewares.insert(0, timing)
        return await _serve(await _runner(app))

    ports["api"] = await ecs_api(ports["ws"], "http")
    if args.tls_dir is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_dir / "server.pem", args.tls_dir / "server-key.pem")
        # The same handler as `ws`, behind TLS: what a real nova-novncproxy serves.
        ports["wss"] = await _serve(ws_runner, backlog=4096, ssl_context=tls)
        ports["api_tls"] = await ecs_api(ports["wss"], "https")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(json.dumps(ports), flush=True)
    await stop.wait()
    # Thousands of held connections would each wait out a graceful close; nothing here needs one.
    os._exit(0)


def run_loop(coro_fn: Callable[[], Awaitable[None]], loop_name: str) -> None:
    """Run with uvloop when asked and installed, else asyncio's default loop."""
    factory = None
    if loop_name == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_fn())  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--tls-dir", type=Path, help="also serve wss (server.pem, server-key.pem)")
    ns = parser.parse_args()
    try:
        run_loop(lambda: main(ns), ns.loop)
    except KeyboardInterrupt:
        sys.exit(0)
