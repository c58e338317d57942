"""Real `novnc-gateway` processes: SIGHUP reload, SIGTERM drain, metrics listener, the CLI commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.sim.demo import DemoCloud, demo_config_data
from tests.support.gateway import ConsoleRefused, Operator
from tests.support.polling import wait_for
from tests.support.processes import ROOT, GatewayProcess, free_port, write_config
from tests.support.rfb_client import RFBClient


def config(cloud: DemoCloud, tmp_path: Path, **server: Any) -> dict[str, Any]:
    data = demo_config_data(cloud, port=free_port())
    data["server"].update(server)
    data["audit"] = {"target": str(tmp_path / "audit.jsonl")}
    return data


def audit(tmp_path: Path, name: str = "audit.jsonl") -> list[dict[str, Any]]:
    path = tmp_path / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def config_reloaded(tmp_path: Path) -> list[dict[str, Any]]:
    """The `config_reloaded` lines of the current audit file, once the reload has written one."""
    return await wait_for(
        lambda: [e for e in audit(tmp_path) if e["event"] == "config_reloaded"], 10, "config_reloaded"
    )


@pytest.fixture
async def process(cloud: DemoCloud, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[GatewayProcess] = []
    operators: list[Operator] = []

    async def start(data: dict[str, Any]) -> GatewayProcess:
        gp = await GatewayProcess.start(data, tmp_path)
        gp.cloud = cloud
        started.append(gp)
        return gp

    async def operator(gp: GatewayProcess, user: str) -> Operator:
        op = Operator(gp)  # type: ignore[arg-type]
        operators.append(op)
        await op.login(user)
        return op

    start.operator = operator  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for op in operators:
            await op.close()
        for gp in started:
            await gp.stop()


async def test_sighup_reloads_policy_closes_downgraded_consoles_and_reopens_audit(
    process: Any, cloud: DemoCloud, tmp_path: Path
) -> None:
    data = config(cloud, tmp_path)
    gp = await process(data)
    demo = await process.operator(gp, "demo")
    transport = await demo.open_console("web-01")
    client = RFBClient(transport)
    await client.handshake()

    (tmp_path / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")  # what logrotate does before the HUP
    data["policy"]["rules"][0]["permission"] = "view"
    write_config(data, gp.config_path)
    gp.signal(signal.SIGHUP)

    await asyncio.wait_for(client.wait_closed(), 10)
    assert transport.close_code == 4003
    assert "permission" in (transport.close_reason or "")
    reloaded = await config_reloaded(tmp_path)  # in the new file
    assert reloaded[0]["outcome"] == "ok" and reloaded[0]["terminated"] == 1
    assert any(e["event"] == "console_opened" for e in audit(tmp_path, "audit.jsonl.1"))
    again = await demo.open_console("web-01")
    assert again.notices[0]["permission"] == "view"
    await again.close()


async def test_sighup_ends_removed_local_users_and_redecides_demoted_ones(
    process: Any, cloud: DemoCloud, tmp_path: Path
) -> None:
    """Issue 10 item 5: a local user's groups come from the running config, not from their cookie."""
    data = config(cloud, tmp_path)
    gp = await process(data)
    demo, viewer = await process.operator(gp, "demo"), await process.operator(gp, "viewer")
    consoles = {}
    for op in (demo, viewer):
        transport = await op.open_console("web-01")
        client = RFBClient(transport)
        await client.handshake()
        consoles[op] = (transport, client)
    assert consoles[demo][0].notices[0]["permission"] == "control"

    users = data["auth"]["local"]["users"]
    users[:] = [u for u in users if u["name"] != "viewer"]  # removed
    next(u for u in users if u["name"] == "demo")["groups"] = ["support"]  # demoted: control -> view
    write_config(data, gp.config_path)
    gp.signal(signal.SIGHUP)

    for op, code, words in ((viewer, 4004, "sign-in"), (demo, 4003, "permission")):
        transport, client = consoles[op]
        await asyncio.wait_for(client.wait_closed(), 10)
        assert transport.close_code == code and words in (transport.close_reason or "")
    status, _ = await viewer.get("/api/me")
    assert status == 401, "the removed user's cookie no longer signs in"
    status, me = await demo.get("/api/me")
    assert (status, me["groups"]) == (200, ["support"])
    again = await demo.open_console("web-01")
    assert again.notices[0]["permission"] == "view"
    await again.close()
    reloaded = await config_reloaded(tmp_path)
    assert reloaded[0]["terminated"] == 2
    ended = [e for e in audit(tmp_path) if e["event"] == "logout"]
    assert [(e["user"], e["reason"]) for e in ended] == [("viewer", "removed from auth.local.users")]


async def test_sighup_with_a_broken_config_keeps_running(
    process: Any, cloud: DemoCloud, tmp_path: Path
) -> None:
    data = config(cloud, tmp_path)
    gp = await process(data)
    gp.config_path.write_text("[server\nbroken = ")
    gp.signal(signal.SIGHUP)
    failed = await config_reloaded(tmp_path)
    assert failed[0]["outcome"] == "error"
    assert "not valid TOML" in failed[0]["error"]
    await gp.wait_ready()
    demo = await process.operator(gp, "demo")
    transport = await demo.open_console("db-01")
    await transport.close()


async def test_sigterm_drains_then_closes_with_a_message(
    process: Any, cloud: DemoCloud, tmp_path: Path
) -> None:
    gp = await process(config(cloud, tmp_path, drain_timeout=3))
    demo = await process.operator(gp, "demo")
    transport = await demo.open_console("web-01")
    client = RFBClient(transport)
    await client.handshake()
    loop = asyncio.get_running_loop()
    gp.signal(signal.SIGTERM)
    started = loop.time()

    async def draining() -> bool:
        async with aiohttp.ClientSession() as http, http.get(gp.url + "/readyz") as response:
            return response.status == 503

    await wait_for(draining, 3, "/readyz to say draining")
    with pytest.raises(ConsoleRefused) as refused:
        await demo.open_console("db-01")
    assert refused.value.code == 4012
    await client.request_update(incremental=False)
    assert (await client.next_update()).rects, "the live console keeps working while draining"
    await asyncio.wait_for(client.wait_closed(), 10)
    assert transport.close_code == 4012
    assert "restarting" in (transport.close_reason or "")
    assert loop.time() - started >= 2.5
    assert await gp.wait_exit(20) == 0
    closed = [e for e in audit(tmp_path) if e["event"] == "console_closed"]
    assert closed[-1]["closed_by"] == "drain"


async def test_metrics_on_a_separate_listener(process: Any, cloud: DemoCloud, tmp_path: Path) -> None:
    metrics_port = free_port()
    gp = await process(config(cloud, tmp_path, metrics_listen=f"127.0.0.1:{metrics_port}"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            assert response.status == 200
            assert "novnc_gateway_active_sessions" in await response.text()
        async with http.get(f"http://127.0.0.1:{metrics_port}/readyz") as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{metrics_port}/login") as response:
            assert response.status == 404, "only health and metrics on the metrics listener"
        async with http.get(gp.url + "/metrics") as response:
            assert response.status == 404, "metrics are not on the public listener when they have their own"
        async with http.get(gp.url + "/readyz") as response:
            assert response.status == 200, "probes stay on the main listener"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_hash_password_and_keygen() -> None:
    from gateway.auth.cookie import parse_key
    from gateway.auth.passwords import verify_password

    result = cli("hash-password", "--stdin", stdin="s3cret-pass\n")
    assert result.returncode == 0
    encoded = result.stdout.strip()
    assert verify_password("s3cret-pass", encoded)
    assert not verify_password("other", encoded)
    assert "s3cret-pass" not in result.stdout + result.stderr
    assert cli("hash-password", "--stdin", stdin="\n").returncode == 1
    key = cli("keygen").stdout.strip()
    assert len(parse_key(key)) == 32


def test_explain_prints_the_decision_and_rule(tmp_path: Path) -> None:
    data = {
        "session": {"keys": [cli("keygen").stdout.strip()]},
        "auth": {"local": {"enabled": True}},
        "policy": {
            "rules": [
                {"name": "ops-web", "groups": ["ops"], "names": ["web-*"], "permission": "control"},
                {"name": "no-prod-db", "groups": ["ops"], "tags": ["env=prod"], "permission": "deny"},
            ]
        },
    }
    path = write_config(data, tmp_path / "gw.toml")
    result = cli("explain", "alice", "web-01", "--config", str(path), "--group", "ops", "--offline")
    assert result.returncode == 0, result.stderr
    assert "control" in result.stdout and "ops-web" in result.stdout
    result = cli(
        "explain",
        "alice",
        "web-01",
        "--config",
        str(path),
        "--group",
        "ops",
        "--offline",
        "--tag",
        "env=prod",
    )
    assert "no-prod-db" in result.stdout and "deny" in result.stdout.lower()
    result = cli("explain", "bob", "web-01", "--config", str(path), "--offline")
    assert "none" in result.stdout.lower() or "default deny" in result.stdout.lower()


async def test_demo_command_serves_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        gp = GatewayProcess(Path(), f"http://127.0.0.1:{port}", log, proc)
        await gp.wait_ready(30, path="/login")
        async with aiohttp.ClientSession() as http, http.get(gp.url + "/api/auth/methods") as response:
            assert (await response.json())["methods"] == [{"type": "local"}]
        output = log.read_text()
        assert "bound to 127.0.0.1 only" in output
        assert "demo/demo" in output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, proc.wait), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    assert code == 0
