"""The fault rig: the demo cloud and a hostile cloud behind one in-process gateway, a healthy console that
must keep streaming through every fault, and a report of what each fault cost (FAULT_REPORT=path.json)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.sim.demo import DemoCloud
from tests.support.gateway import Operator, RecordingTransport, RunningGateway, start_gateway
from tests.support.hostile import HostileCloud, HostileUpstreams
from tests.support.rfb_client import RFBClient

REPORT: list[dict[str, Any]] = []


@pytest.fixture(scope="session", autouse=True)
def _fault_report() -> Iterator[None]:
    yield
    target = os.environ.get("FAULT_REPORT")
    if target and REPORT:
        Path(target).write_text(json.dumps(REPORT, indent=2) + "\n")


class PumpedTransport:
    """Reads the console socket all the time (so keep-alive pings are answered, as a browser does) and
    hands binary messages to the RFB client on demand."""

    def __init__(self, console: RecordingTransport) -> None:
        self.console = console
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            data = await self.console.recv()
            self.queue.put_nowait(data)
            if data is None:
                return

    async def send(self, data: bytes) -> None:
        await self.console.send(data)

    async def recv(self) -> bytes | None:
        return await self.queue.get()

    async def close(self) -> None:
        await self.console.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@dataclass
class Rig:
    cloud: DemoCloud
    hostile: HostileCloud
    upstreams: HostileUpstreams
    gateway: RunningGateway
    healthy: Operator
    healthy_console: RecordingTransport
    healthy_rfb: RFBClient
    victim: Operator  # the user who runs into the faults

    async def everyone_else_is_served(self) -> None:
        """The healthy console still streams and the API still answers, whatever just happened."""
        update = await self.healthy_rfb.full_update()
        assert update.rects, "the healthy console stopped streaming"
        status, body = await self.healthy.get("/api/servers")
        assert status == 200 and any(s["name"] == "web-01" for s in body["servers"])


def rig_config(hostile: HostileCloud, *, keepalive: float) -> Any:
    def tweak(data: dict[str, Any]) -> None:
        data["clouds"].append(hostile.cloud_config(read_timeout=0.5))
        data["upstream"]["connect_timeout"] = 1.0
        data["console"] = {"keepalive": keepalive}
        data["limits"] = {"per_user": 50, "global_max": 200, "requests_per_minute": 100000, "burst": 10000}

    return tweak


async def build_rig(workdir: Path, *, keepalive: float) -> AsyncIterator[Rig]:
    cloud = DemoCloud(workdir / "cloud")
    await cloud.start()
    upstreams = HostileUpstreams(certs=cloud.proxy.certs, workdir=workdir / "hostile")  # type: ignore[union-attr]
    await upstreams.start()
    hostile = HostileCloud(upstreams)
    await hostile.start()
    gateway = await start_gateway(cloud, workdir, rig_config(hostile, keepalive=keepalive))
    healthy, victim = Operator(gateway), Operator(gateway)
    try:
        await healthy.login("admin")
        await victim.login("demo")
        console = await healthy.open_console("web-01")
        pumped = PumpedTransport(console)
        rfb = RFBClient(pumped)
        await rfb.handshake()
        await rfb.full_update()
        yield Rig(cloud, hostile, upstreams, gateway, healthy, console, rfb, victim)
        await pumped.close()
    finally:
        await healthy.close()
        await victim.close()
        await gateway.stop()
        await hostile.stop()
        await upstreams.stop()
        await cloud.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async for value in build_rig(tmp_path_factory.mktemp("fault-rig"), keepalive=1.0):
        yield value
