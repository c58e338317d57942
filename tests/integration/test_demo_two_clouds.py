"""`make demo` shows two clouds side by side: the simulated Huawei ECS and a simulated Nova (behind the
simulated identity service), both through the same gateway, policy, audit and console path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.sim.demo import DEMO_NOVA_SERVERS, NOVA_CLOUD_NAME, DemoCloud
from tests.support.gateway import ConsoleRefused, Operator, start_gateway
from tests.support.rfb_client import RFBClient


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[DemoCloud]:
    cloud = DemoCloud(tmp_path / "cloud", nova_servers=DEMO_NOVA_SERVERS)
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()


async def test_the_demo_serves_consoles_from_both_clouds(demo: DemoCloud, tmp_path: Path) -> None:
    gateway = await start_gateway(demo, tmp_path)
    op = Operator(gateway)
    try:
        await op.login("demo")
        status, listing = await op.get("/api/servers")
        assert status == 200 and listing["errors"] == []
        assert {s["cloud"] for s in listing["servers"]} == {"demo", NOVA_CLOUD_NAME}
        nova_web = DEMO_NOVA_SERVERS[0]
        transport = await op.open_console(nova_web.id, cloud=NOVA_CLOUD_NAME)
        client = RFBClient(transport)
        assert nova_web.name in (await client.handshake()).name
        await transport.close()
        with pytest.raises(ConsoleRefused) as refused:
            await op.open_console(DEMO_NOVA_SERVERS[1].id, cloud=NOVA_CLOUD_NAME)
        opened = await gateway.wait_for_audit("console_opened", cloud=NOVA_CLOUD_NAME)
    finally:
        await op.close()
        await gateway.stop()
    assert refused.value.code == 4423
    assert refused.value.reason == "The server is being migrated"
    assert opened["server_id"] == nova_web.id
