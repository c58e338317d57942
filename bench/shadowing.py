"""Shadowing's numbers (docs/shadowing.md, "What it costs"): what an observer costs, and that a stalled one
does not slow the owner. Run it alone: `.venv/bin/python -m bench.shadowing [--xvnc]`.

On the demo stack (the demo cloud's real websockify in front of the demo RFB server, or with `--xvnc` a
real Xvnc) and the real gateway in process, a Python RFB client asking for Raw updates:

1. time to the first full frame for an owner opening a console and for an observer joining it (no
   approval), medians of five;
2. the cloud's console calls and the gateway's relays per observer (each has its own upstream);
3. the owner's full-update round trip alone, then with five observers that asked for many updates and
   stopped reading;
4. bytes relayed to each observer's browser (the audit's console_closed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.gateway import Operator, RecordingTransport, RunningGateway, start_gateway
from tests.support.polling import wait_for
from tests.support.rfb_client import RFBClient
from tests.support.vnc_servers import xvnc_session

RUNS = 5
UPDATES = 40
XVNC_SERVER = SimServer(id="5a5a5a5a-0000-4000-8000-00000000d1d1", name="web-01")


def _config(data: dict[str, Any]) -> None:
    rule = {"name": "bench-watch", "groups": ["support"], "permission": "none", "join": True}
    data["policy"]["rules"].append({**rule, "join_approval": "none"})
    data["limits"] = {"per_user": 50, "global_max": 200, "requests_per_minute": 600, "burst": 100}


async def _first_frame(
    connect: Callable[[], Awaitable[RecordingTransport]],
) -> tuple[RecordingTransport, RFBClient, float]:
    started = time.perf_counter()
    transport = await connect()
    client = RFBClient(transport, timeout=20)
    await client.handshake()
    await client.full_update()
    return transport, client, time.perf_counter() - started


async def _round_trip(client: RFBClient) -> float:
    started = time.perf_counter()
    for _ in range(UPDATES):
        await client.full_update()
    return (time.perf_counter() - started) / UPDATES


async def measure(gateway: RunningGateway, cloud: DemoCloud) -> dict[str, Any]:
    owner_op, viewer = Operator(gateway), Operator(gateway)
    try:
        await owner_op.login("demo")
        await viewer.login("viewer")
        opens = []
        for _ in range(RUNS):
            transport, _, seconds = await _first_frame(lambda: owner_op.open_console("web-01"))
            opens.append(seconds)
            await transport.ws.close()
        owner, client, _ = await _first_frame(lambda: owner_op.open_console("web-01"))
        watched = owner.notices[0]["console_id"]

        async def join() -> RecordingTransport:
            ws = await viewer.http.ws_connect(gateway.ws_url(f"/ws/join/{watched}"), origin=gateway.origin)
            transport = RecordingTransport(ws, viewer.seen)
            await transport.hello()
            return transport

        calls = len(cloud.ecs.console_bodies)
        joins, observers = [], []
        for _ in range(RUNS):
            transport, _, seconds = await _first_frame(join)
            joins.append(seconds)
            observers.append(transport)
        per_observer_calls = (len(cloud.ecs.console_bodies) - calls) / RUNS
        relays = len(gateway.gw.registry.local)
        for transport in observers:
            await transport.ws.close()
        await wait_for(lambda: len(gateway.gw.registry.local) == 1, 10, "the observers released")
        alone = await _round_trip(client)
        stalled = []
        for _ in range(RUNS):
            transport = await join()
            stalled_client = RFBClient(transport, timeout=20)
            await stalled_client.handshake()
            for _ in range(200):
                stalled_client.proto.request_update(False)
            await transport.send(stalled_client.proto.data_to_send())
            stalled.append(transport)  # never read again
        with_stalled = await _round_trip(client)
        for transport in (*stalled, owner):
            await transport.ws.close()
        await wait_for(lambda: not gateway.gw.registry.local, 10, "every console released")
        closed = [e for e in gateway.audit_events() if e["event"] == "console_closed" and e.get("watching")]
        return {
            "owner_first_frame_ms": round(statistics.median(opens) * 1000),
            "observer_first_frame_ms": round(statistics.median(joins) * 1000),
            "cloud_console_calls_per_observer": per_observer_calls,
            "relays_with_owner_and_observers": relays,
            "owner_update_ms_alone": round(alone * 1000, 1),
            "owner_update_ms_with_stalled_observers": round(with_stalled * 1000, 1),
            "bytes_per_observer": sorted({e["bytes_to_browser"] for e in closed}),
        }
    finally:
        await owner_op.close()
        await viewer.close()


@contextlib.contextmanager
def _xvnc(workdir: Path, real: bool) -> Iterator[tuple[str, int] | None]:
    if not real:
        yield None
        return
    with xvnc_session(workdir / "xvnc.log", geometry="1280x800") as session:
        yield session.host, session.port


async def run(workdir: Path, real: bool) -> dict[str, Any]:
    with _xvnc(workdir, real) as address:
        if address is None:
            cloud = DemoCloud(workdir / "cloud")
        else:
            cloud = DemoCloud(workdir / "cloud", servers=(XVNC_SERVER,))
            cloud.rfb_addr[XVNC_SERVER.id] = address
        await cloud.start()
        try:
            gateway = await start_gateway(cloud, workdir, _config)
            try:
                return await measure(gateway, cloud)
            finally:
                await gateway.stop()
        finally:
            await cloud.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Shadowing's numbers (docs/shadowing.md)")
    parser.add_argument(
        "--xvnc", action="store_true", help="a real Xvnc at 1280x800 instead of the demo server"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(asyncio.run(run(Path(workdir), args.xvnc)), indent=2))


if __name__ == "__main__":
    main()
