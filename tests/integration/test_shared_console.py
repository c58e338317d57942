"""Nobody takes a console exclusively through the gateway unless configured to (issue 10, item 1).

A client whose ClientInit says shared-flag 0 makes QEMU (`share=allow-exclusive`, its default) and
TigerVNC's Xvnc (`-DisconnectClients`, its default) drop every other client. Here each real server sits
behind the real websockify (the demo's nova-novncproxy) and the real gateway, and a crafted view-only
client asks for exclusive access while an operator with control works on the same console.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.gateway import Operator, RunningGateway, demo_cloud_serving
from tests.support.rfb_client import RFBClient
from tests.support.vnc_servers import QEMU, XVNC, qemu_vnc, xvnc

SERVERS = {
    "xvnc": SimServer(id="5a5a5a5a-0000-4000-8000-00000000b1b1", name="real-xvnc"),
    "qemu": SimServer(id="5a5a5a5a-0000-4000-8000-00000000b2b2", name="real-qemu"),
}
SignIn = Callable[..., Awaitable[Operator]]
Vnc = tuple[SimServer, tuple[str, int]]


@pytest.fixture(params=sorted(SERVERS))
async def vnc(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SimServer, tuple[str, int]]]:
    """The real VNC server, started for the test and stopped by PID after it."""
    kind = request.param
    if kind == "xvnc":
        if XVNC is None:
            pytest.skip("Xvnc (tigervnc-standalone-server) is not installed")
        with xvnc(tmp_path / "xvnc.log", desktop="real-xvnc") as address:
            yield SERVERS[kind], address
    else:
        if QEMU is None:
            pytest.skip("qemu-system-x86_64 (qemu-system-x86) is not installed")
        async with qemu_vnc(tmp_path / "qemu.log") as address:
            yield SERVERS[kind], address


@pytest.fixture
async def cloud(tmp_path: Path, vnc: Vnc) -> AsyncIterator[DemoCloud]:
    server, address = vnc
    async with demo_cloud_serving(tmp_path / "cloud", server, address) as demo:
        yield demo


async def _console(
    op: Operator, server: SimServer, *, version: tuple[int, int] = (3, 8), shared: bool = True
) -> RFBClient:
    client = RFBClient(await op.open_console(server.id), version=version, shared=shared, timeout=10)
    await client.handshake()
    return client


async def _still_served(client: RFBClient) -> None:
    """Whole-screen updates keep coming: the server did not drop this client."""
    for _ in range(3):
        update = await client.full_update()
        assert sum(r.width * r.height for r in update.rects) >= 640 * 480


@pytest.mark.parametrize("version", [(3, 8), (3, 3)], ids=["RFB 3.8", "RFB 3.3"])
async def test_a_viewer_asking_for_exclusive_access_does_not_disconnect_the_operator(
    cloud: DemoCloud, gateway: RunningGateway, sign_in: SignIn, version: tuple[int, int]
) -> None:
    server = cloud.servers[0]
    operator = await _console(await sign_in(gateway, "demo"), server)
    await operator.full_update()
    # In 3.3 the server picks the security type: the gateway must read it to find ClientInit.
    viewer = await _console(await sign_in(gateway, "viewer"), server, version=version, shared=False)
    await _still_served(operator)  # on the old code: "connection closed", the server dropped it
    await _still_served(viewer)
    assert not [e for e in gateway.audit_events() if e["event"] == "console_closed"]


def _allow_exclusive(data: dict[str, Any]) -> None:
    data.setdefault("console", {})["allow_exclusive"] = True


async def test_allow_exclusive_lets_control_sessions_and_only_them_take_the_console(
    cloud: DemoCloud, gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn
) -> None:
    gateway = await gateways(_allow_exclusive)
    server = cloud.servers[0]
    first = await _console(await sign_in(gateway, "admin"), server)
    viewer = await _console(await sign_in(gateway, "viewer"), server, shared=False)  # view-only: shared
    await _still_served(first)
    taker = await _console(await sign_in(gateway, "demo"), server, shared=False)  # control: as asked
    # What the gateway otherwise prevents: the real server drops everyone else.
    for dropped in (first, viewer):
        await dropped.wait_closed()
    await _still_served(taker)
    closed = await gateway.wait_for_audit("console_closed", user="admin")
    assert closed["closed_by"] == "upstream"
