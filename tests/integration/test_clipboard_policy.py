"""The clipboard policy on a real Xvnc behind the real websockify, through the gateway: a program on the
X display (tests/support/x_echo.py) says what reached the server's clipboard and puts text on it. A
denied paste never reaches the server; a denied copy never reaches the client; allowed ones do both."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.echo_console import echo_console_fixtures
from tests.support.gateway import Operator, RunningGateway, start_gateway
from tests.support.polling import wait_for
from tests.support.rfb_client import RFBClient
from tests.support.vnc_servers import XVNC
from tests.support.x_echo import XEcho

pytestmark = pytest.mark.skipif(XVNC is None, reason="Xvnc (tigervnc-standalone-server) is not installed")

XVNC_ID = "5a5a5a5a-0000-4000-8000-00000000c1b0"
PASTED = b"pasted from the browser"
COPIED = "copied in the console"


session, echo, cloud = echo_console_fixtures(SimServer(id=XVNC_ID, name="clip-xvnc"))


def clipboard(**settings: Any) -> Any:
    def tweak(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-operators-control":
                rule.update(settings)

    return tweak


async def opened(gateway: RunningGateway) -> tuple[Operator, RFBClient]:
    operator = Operator(gateway)
    await operator.login("demo")
    client = RFBClient(await operator.open_console(XVNC_ID))
    await asyncio.wait_for(client.handshake(), 10)
    await client.full_update()
    return operator, client


async def typed_through(client: RFBClient, echo: XEcho, text: str) -> None:
    """Keys after a transfer: once they arrived, the transfer before them was handled too."""
    await client.type_text(text)
    await wait_for(lambda: echo.typed.endswith(text), 10, "the typed keys at the X program")


async def test_allowed_paste_and_copy_reach_the_other_side(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho
) -> None:
    gateway = await start_gateway(cloud, tmp_path, clipboard(clipboard_max=1024))
    operator, client = await opened(gateway)
    try:
        client.proto.cut_text(PASTED)
        await typed_through(client, echo, "ab")
        assert await echo.command("clipboard?", "clipboard") == f"clipboard {PASTED.decode()!r}"

        await echo.command(f"copy {COPIED!r}", "copied")

        async def copied() -> bool:
            await client.full_update()
            return COPIED.encode() in client.proto.cut_texts

        await wait_for(copied, 10, "the console's copy at the client")
    finally:
        await operator.close()
        await gateway.stop()


async def test_denied_paste_never_reaches_the_server_and_denied_copy_never_the_client(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho
) -> None:
    gateway = await start_gateway(cloud, tmp_path, clipboard(clipboard_copy="deny", clipboard_paste="deny"))
    operator, client = await opened(gateway)
    try:
        client.proto.cut_text(PASTED)
        await typed_through(client, echo, "ab")
        assert await echo.command("clipboard?", "clipboard") == "clipboard None"

        await echo.command(f"copy {COPIED!r}", "copied")
        relays = [live.relay for live in gateway.gw.registry.local.values() if live.relay is not None]
        await wait_for(lambda: relays[0].stats.copy_denied >= 1, 10, "the copy refused at the gateway")
        await client.full_update()
        assert client.proto.cut_texts == []
        assert COPIED.encode() not in operator.seen.text().encode("latin-1")
        await client.close()
        closed = await gateway.wait_for_audit("console_closed", server_name="clip-xvnc")
        assert (closed["paste_denied"], closed["paste_denied_bytes"]) == (1, len(PASTED))
        assert closed["copy_denied"] >= 1 and closed["copy_denied_bytes"] >= len(COPIED)
        registry = gateway.gw.metrics.registry
        denied = "novnc_gateway_clipboard_denied_total"
        assert registry.get_sample_value(denied, {"direction": "paste"}) == 1
        assert (registry.get_sample_value(denied, {"direction": "copy"}) or 0) >= 1
        trail = gateway.audit_path.read_text()
        assert COPIED not in trail and PASTED.decode() not in trail
    finally:
        await operator.close()
        await gateway.stop()
