"""Faults measured on a real gateway process (`python -m gateway serve`), where its memory and descriptors
are its own: a browser that never reads behind a console proxy that never stops writing, and slowloris
clients holding connections open with request heads that never end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.sim.demo import DemoCloud, demo_config_data
from tests.faults.conftest import REPORT
from tests.support import leaks
from tests.support.gateway import Operator
from tests.support.hostile import HOSTILE_SERVER, HostileCloud, HostileUpstreams, RawWebSocket, slowloris
from tests.support.polling import wait_for
from tests.support.processes import GatewayProcess, free_port
from tests.support.rfb_client import RFBClient

MB = 1024 * 1024


@dataclass
class ProcRig:
    cloud: DemoCloud
    hostile: HostileCloud
    upstreams: HostileUpstreams
    gateway: GatewayProcess
    workdir: Path


@pytest.fixture
async def prig(tmp_path: Path) -> AsyncIterator[ProcRig]:
    cloud = DemoCloud(tmp_path / "cloud")
    await cloud.start()
    assert cloud.proxy is not None
    upstreams = HostileUpstreams(certs=cloud.proxy.certs, workdir=tmp_path / "hostile")
    await upstreams.start()
    hostile = HostileCloud(upstreams)
    await hostile.start()
    data = demo_config_data(cloud, port=free_port())
    data["clouds"].append(hostile.cloud_config())
    data["server"]["keepalive_timeout"] = 1.0
    data["audit"] = {"target": str(tmp_path / "audit.jsonl")}
    gateway: GatewayProcess | None = None
    try:
        gateway = await GatewayProcess.start(data, tmp_path)
        gateway.cloud = cloud
        yield ProcRig(cloud, hostile, upstreams, gateway, tmp_path)
    finally:
        if gateway is not None:
            await gateway.stop()
        await hostile.stop()
        await upstreams.stop()
        await cloud.stop()


async def _plateau(read: Any, *, quiet: float = 0.6, within: float = 15.0) -> int:
    """The value once it has stopped growing for `quiet` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last, since = read(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet:
            return now
    raise AssertionError(f"still growing after {within} s: {last}")


async def test_a_browser_that_never_reads_costs_bounded_memory(prig: ProcRig) -> None:
    pid = prig.gateway.pid
    healthy = Operator(prig.gateway)  # type: ignore[arg-type]
    victim = Operator(prig.gateway)  # type: ignore[arg-type]
    try:
        await healthy.login("admin")
        await victim.login("demo")
        console = await healthy.open_console("web-01")
        rfb = RFBClient(console)
        await rfb.handshake()
        await rfb.full_update()
        before = leaks.of_pid(pid)

        prig.hostile.mode = "upstream:firehose"
        cookie = "; ".join(
            f"{k}={v.value}" for k, v in victim.http.cookie_jar.filter_cookies(URL(prig.gateway.url)).items()
        )
        port = int(prig.gateway.url.rsplit(":", 1)[1])
        raw = await RawWebSocket.connect(
            port,
            f"/ws/console/hostile/{HOSTILE_SERVER['id']}",
            cookie=cookie,
            origin=prig.gateway.origin,
            recv_buffer=32 * 1024,
        )
        assert raw.status == 101
        taken = await _plateau(lambda: prig.upstreams.firehose_sent)
        during = leaks.of_pid(pid)
        # The other user's console still streams while this one is stuck.
        assert (await rfb.full_update()).rects
        raw.reset()
        await wait_for(lambda: leaks.of_pid(pid).fds <= before.fds + 1, 10, "the stuck session to go")
        after = leaks.of_pid(pid)
        row = {
            "fault": "browser:never-reads (firehose upstream, real process)",
            "upstream_bytes_accepted_before_stall": taken,
            "gateway_rss_growth_mb": round((during.rss - before.rss) / MB, 1),
            "before": before.as_dict(),
            "during": during.as_dict(),
            "after": after.as_dict(),
        }
        REPORT.append(row)
        # Unbounded buffering would take everything the firehose can write (gigabytes); here the pipe
        # stalls after kernel socket buffers plus a message or two in the gateway.
        assert taken < 48 * MB, row
        assert during.rss - before.rss < 48 * MB, row
        assert after.fds <= before.fds + 1, row
    finally:
        await healthy.close()
        await victim.close()


async def test_slowloris_clients_are_cut_off_and_others_served(prig: ProcRig) -> None:
    pid = prig.gateway.pid
    port = int(prig.gateway.url.rsplit(":", 1)[1])
    before = leaks.of_pid(pid)
    stop = asyncio.Event()
    attack = asyncio.create_task(slowloris(port, 300, interval=0.2, stop=stop))
    try:
        await wait_for(lambda: leaks.of_pid(pid).fds >= before.fds + 250, 10, "the slow connections")
        peak = leaks.of_pid(pid)
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.get(prig.gateway.url + "/login") as resp:
                assert resp.status == 200
            served_in = time.monotonic() - started
        # keepalive_timeout (1 s here) closes request heads that never end; give it a few periods.
        await wait_for(lambda: leaks.of_pid(pid).fds <= before.fds + 5, 10, "the gateway to hang up")
    finally:
        stop.set()
        hung_up = await attack
    after = leaks.of_pid(pid)
    REPORT.append(
        {
            "fault": "http:slowloris x300 (real process, keepalive_timeout 1 s)",
            "before": before.as_dict(),
            "peak": peak.as_dict(),
            "after": after.as_dict(),
            "normal_request_seconds_during_attack": round(served_in, 3),
            "cut_off_by_gateway": sum(hung_up),
        }
    )
    assert served_in < 2.0
    assert sum(hung_up) == 300, "every slow connection is hung up by the gateway, not by the client"
    assert after.fds <= before.fds + 2
    assert "Traceback" not in prig.gateway.log()
