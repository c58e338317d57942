"""No log forging (issue 10, item 11): a browser's close reason and a server id from the URL are written
into log lines; a line break in either used to start a whole forged line in the plain format.

The gateway runs as its own `serve` process in each log format, and the test reads what it wrote.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from gateway.sim.demo import DemoCloud, demo_config_data
from tests.support.audit_schema import validate_line
from tests.support.gateway import ConsoleRefused, Operator
from tests.support.polling import wait_for
from tests.support.processes import GatewayProcess, free_port

MARK = "FORGED-BY-TEST"
# What an attacker wants a log reader (or a line-based shipper) to see as a record of its own.
FORGED = f"2026-01-01 00:00:00,000 WARNING gateway.web [0123456789abcdef] admin signed in {MARK}"
# Every way a line ends for someone: LF, CR, CRLF, and what str.splitlines() also splits on (NEL, the
# Unicode line and paragraph separators); plus an ANSI escape for whoever tails the log in a terminal.
BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x1b[2K\r"]


@pytest.fixture
async def process(cloud: DemoCloud, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway process per log format (the test's parameter), stopped at the end."""
    started: list[GatewayProcess] = []

    async def start(log_format: str) -> GatewayProcess:
        data = demo_config_data(cloud, port=free_port())
        data["server"]["log_format"] = log_format
        data["audit"] = {"target": str(tmp_path / "audit.jsonl")}
        data["limits"] = {"burst": 2 * len(BREAKS)}  # two console requests per line break
        gp = await GatewayProcess.start(data, tmp_path)
        gp.cloud = cloud
        started.append(gp)
        return gp

    try:
        yield start  # type: ignore[misc]
    finally:
        for gp in started:
            await gp.stop()


@pytest.mark.parametrize("log_format", ["plain", "json"])
async def test_a_close_reason_and_a_server_id_cannot_forge_log_lines(
    process: object, tmp_path: Path, log_format: str
) -> None:
    gp = await process(log_format)  # type: ignore[operator]
    op = Operator(gp)  # type: ignore[arg-type]
    try:
        await op.login("demo")
        for brk in BREAKS:
            # The browser closes its console with a reason of its choosing (at most 123 bytes).
            transport = await op.open_console("web-01")
            await transport.ws.close(code=1000, message=f"bye{brk}{FORGED}"[:60].encode())
            # A server id with a line break, and `token="` (the JSON formatter masked credentials
            # after encoding, which could eat the quote closing a string).
            server_id = quote(f'x{brk}{FORGED} token="y', safe="")
            with pytest.raises(ConsoleRefused):
                await op.open_console(server_id)
        await wait_for(
            lambda: gp.log().count("cloud API error") >= len(BREAKS), 10, "the refusals' log lines"
        )
        await wait_for(
            lambda: gp.log().count("closed by browser") >= len(BREAKS), 10, "the closes' log lines"
        )
    finally:
        await op.close()

    text = gp.log_path.read_bytes().decode("utf-8")
    lines = text.splitlines()  # the strictest reader: every line break Python knows
    marked = [line for line in lines if MARK[:8] in line or "2026-01-01" in line]
    assert marked, "the forged text never reached the log"
    for line in marked:
        if log_format == "json":
            message = json.loads(line)["message"]
        else:
            assert not line.startswith("2026-01-01"), f"a forged line: {line!r}"
            message = line
        assert "closed by browser" in message or "cloud API error" in message, f"a forged line: {line!r}"
    if log_format == "json":
        for line in lines:
            json.loads(line)  # every line is one whole JSON object
    # The audit trail carries the same reason; each of its lines is one JSON object too.
    audit_lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    closed = [validate_line(line) for line in audit_lines if '"console_closed"' in line]
    assert len(closed) == len(BREAKS)
    assert {e["reason"][:3] for e in closed} == {"bye"}
