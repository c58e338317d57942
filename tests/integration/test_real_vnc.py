"""A real VNC server (TigerVNC's Xvnc, Debian package) behind the real websockify, through the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.gateway import Operator, demo_cloud_serving, start_gateway
from tests.support.rfb_client import RFBClient
from tests.support.vnc_servers import XVNC
from tests.support.vnc_servers import xvnc as run_xvnc

pytestmark = pytest.mark.skipif(XVNC is None, reason="Xvnc (tigervnc-standalone-server) is not installed")

XVNC_ID = "5a5a5a5a-0000-4000-8000-00000000a0a0"


@pytest.fixture
def xvnc(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with run_xvnc(tmp_path / "xvnc.log", desktop="real-xvnc") as address:
        yield address


@pytest.fixture
async def cloud(tmp_path: Path, xvnc: tuple[str, int]) -> AsyncIterator[DemoCloud]:
    async with demo_cloud_serving(tmp_path / "cloud", SimServer(id=XVNC_ID, name="real-xvnc"), xvnc) as demo:
        yield demo


async def test_handshake_and_framebuffer_update_from_xvnc(cloud: DemoCloud, tmp_path: Path) -> None:
    gateway = await start_gateway(cloud, tmp_path)
    operator = Operator(gateway)
    try:
        await operator.login("demo")
        transport = await operator.open_console(XVNC_ID)
        client = RFBClient(transport)
        init = await asyncio.wait_for(client.handshake(), 10)
        assert (init.width, init.height) == (640, 480)
        assert "real-xvnc" in init.name
        update = await asyncio.wait_for(client.full_update(), 10)
        covered = sum(r.width * r.height for r in update.rects)
        assert covered >= 640 * 480
        await transport.close()
        closed = await gateway.wait_for_audit("console_closed", server_name="real-xvnc")
        assert closed["bytes_to_browser"] >= 640 * 480 * 4
    finally:
        await operator.close()
        await gateway.stop()
