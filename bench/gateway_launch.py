"""`python -m bench.gateway_launch [--loop uvloop|asyncio] serve --config X [--reuse-port]`.

The real `novnc-gateway` command line, with the event loop chosen up front so the benchmark can
compare asyncio's default loop with uvloop on an otherwise identical gateway.

One shim, reported in the results: a ClientSession made without a connector gets one without
aiohttp's default cap of 100 connections. The gateway's shared client session (gateway/app.py)
holds every upstream WebSocket, so with the cap the 101st concurrent console waits for a slot and
fails after upstream.connect_timeout. Once app.py passes its own connector, the shim does nothing.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

import aiohttp

from bench.source import raise_nofile


def _uncap_default_connector() -> None:
    original = aiohttp.ClientSession.__init__

    @functools.wraps(original)
    def init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        if not args and kwargs.get("connector") is None:
            kwargs["connector"] = aiohttp.TCPConnector(limit=0)
            print(
                "bench shim: ClientSession without a connector given TCPConnector(limit=0)", file=sys.stderr
            )
        original(self, *args, **kwargs)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    loop = "asyncio"
    if argv[:1] == ["--loop"]:
        loop, argv = argv[1], argv[2:]
    if argv[:1] == ["--uncapped-connector"]:
        argv = argv[1:]
        _uncap_default_connector()
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    raise_nofile()
    from gateway.cli import main as gateway_main

    return gateway_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
