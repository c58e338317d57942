"""Just-in-time access across two gateway replicas on one real Redis: a request made on one is approved
on the other, honoured by the first, and when the grant ends the console that depended on it closes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.auth.cookie import generate_key
from gateway.auth.passwords import hash_password
from tests.support.gateway import Operator, RunningGateway, server_id
from tests.support.polling import wait_for
from tests.support.processes import ROOT, free_port, write_config
from tests.support.redis_server import RedisServer
from tests.support.rfb_client import RFBClient

LEAD_HASH = hash_password("lead")
RULE = {
    "name": "support-jit",
    "groups": ["support"],
    "permission": "control",
    "approvers": ["leads"],
    "max_grant": "1h",
}


async def replicas(redis: RedisServer, gateways: Callable[..., Any]) -> tuple[RunningGateway, RunningGateway]:
    key = generate_key()

    def replica(data: dict[str, Any]) -> None:
        data["session"]["keys"] = [key]
        data["state"] = {"backend": "redis", "redis": {"url": redis.url, "console_ttl": 6}}
        data["auth"]["local"]["users"].append(
            {"name": "lead", "password_hash": LEAD_HASH, "groups": ["leads", "support"]}
        )
        data["policy"]["rules"].append(RULE)

    return await gateways(replica), await gateways(replica)


def request_for(gateway: RunningGateway, duration: float) -> dict[str, Any]:
    web = server_id(gateway.cloud, "web-01")
    return {"cloud": "demo", "server_id": web, "duration": duration, "reason": "INC-7 nginx hangs"}


def explain_with_redis(redis: RedisServer, tmp_path: Path, web_id: str) -> str:
    data = {
        "session": {"keys": [generate_key()]},
        "auth": {"local": {"enabled": True}},
        "state": {"backend": "redis", "redis": {"url": redis.url}},
        "policy": {"rules": [RULE, {"name": "support-view", "groups": ["support"], "permission": "view"}]},
    }
    path = write_config(data, tmp_path / "explain.toml")
    args = [
        "explain",
        "viewer",
        web_id,
        "--group",
        "support",
        "--config",
        str(path),
        "--offline",
        "--cloud",
        "demo",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_request_approved_on_one_replica_grants_control_on_the_other_until_it_ends(
    redis: RedisServer, gateways: Callable[..., Any], sign_in: Callable[..., Any], tmp_path: Path
) -> None:
    a, b = await replicas(redis, gateways)
    viewer: Operator = await sign_in(a, "viewer")
    lead: Operator = await sign_in(b, "lead")

    status, listed = await viewer.get("/api/servers")
    web = next(s for s in listed["servers"] if s["name"] == "web-01")
    assert (web["permission"], web["requestable"]) == ("view", {"permission": "control", "max_grant": 3600.0})

    status, body = await viewer.post("/api/access-requests", {**request_for(a, 7200), "duration": 7200})
    assert status == 400 and "between" in body["error"]  # longer than the rule's max_grant
    status, body = await viewer.post("/api/access-requests", request_for(a, 12))
    assert status == 201, body
    made = body["request"]
    assert (made["status"], made["rule"], made["permission"]) == ("pending", "support-jit", "control")

    # The requester is no approver; an approver cannot decide their own request either.
    status, _ = await viewer.post(f"/api/access-requests/{made['id']}/approve")
    assert status == 403
    status, own = await lead.post("/api/access-requests", request_for(b, 60))
    assert status == 201
    status, body = await lead.post(f"/api/access-requests/{own['request']['id']}/approve")
    assert (status, body["code"]) == (403, "own_request")

    status, queue = await lead.get("/api/access-requests")
    assert [r["id"] for r in queue["to_decide"]] == [made["id"]]
    status, body = await lead.post(f"/api/access-requests/{made['id']}/approve")
    assert status == 200 and body["request"]["status"] == "approved"
    status, body = await lead.post(f"/api/access-requests/{made['id']}/deny")
    assert status == 409  # decided is decided

    # `explain` reads the grant from the shared state too.
    explained = await asyncio.to_thread(explain_with_redis, redis, tmp_path, request_for(a, 12)["server_id"])
    assert "grant:    support-jit (an approved access request)" in explained
    assert "decision: control" in explained and "rule:     support-jit" in explained

    transport = await viewer.open_console("web-01")  # on replica a, which never saw the approval
    assert transport.notices[0]["permission"] == "control"
    client = RFBClient(transport)
    await client.handshake()
    opened = await a.wait_for_audit("console_opened", user="viewer")
    assert opened["rule"] == "support-jit"

    # The grant ends: replica a's reconciliation re-decides the console, which closes with the reason.
    async with asyncio.timeout(30):
        while await transport.recv() is not None:
            pass
    assert transport.close_code == 4003
    assert transport.close_reason == "Your permission on this server changed; reopen the console"
    closed = await a.wait_for_audit("console_closed", user="viewer")
    assert closed["closed_by"] == "policy"

    for event in ("access_requested", "access_approved"):
        entry = await (a if event == "access_requested" else b).wait_for_audit(
            event, access_request=made["id"]
        )
        assert entry["target_user"] == "viewer" and entry["justification"] == "INC-7 nginx hangs"
    assert (await b.wait_for_audit("access_approved", access_request=made["id"]))["user"] == "lead"


async def test_a_new_request_is_posted_to_the_webhook_as_json(
    gateways: Callable[..., Any], sign_in: Callable[..., Any]
) -> None:
    """A chat system's incoming webhook (here a real HTTP server on loopback) hears of each new request."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook/secret-part", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:

        def with_hook(data: dict[str, Any]) -> None:
            data["policy"]["rules"].append(RULE)
            data["policy"]["access_webhook"] = f"http://127.0.0.1:{port}/hook/secret-part"

        gateway = await gateways(with_hook)
        viewer: Operator = await sign_in(gateway, "viewer")
        status, body = await viewer.post("/api/access-requests", request_for(gateway, 600))
        assert status == 201
        await wait_for(lambda: received, 10, "the webhook call")
        [payload] = received
        assert payload["event"] == "access_requested"
        assert payload["request"]["id"] == body["request"]["id"]
        assert payload["request"]["reason"] == "INC-7 nginx hangs"
        assert payload["decide_at"] == gateway.url + "/admin"
        assert payload["text"] == (
            "viewer asks for control on web-01 for 10 minutes: INC-7 nginx hangs (decide at "
            f"{gateway.url}/admin)"
        )
    finally:
        await runner.cleanup()
