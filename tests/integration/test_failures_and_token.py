"""Failures end as clear close reasons and log lines; the console token never reaches the browser or a log.

Each scenario drives a complete session against the real demo cloud and then scans everything the browser
received, every log record, the audit trail and /metrics for the token in any encoding.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import Fault
from tests.support.gateway import ConsoleRefused, Operator, RunningGateway
from tests.support.rfb_client import RFBClient


@pytest.fixture
def issued(cloud: DemoCloud) -> list[str]:
    """Every console URL the demo cloud hands out during the test, to search for afterwards."""
    urls: list[str] = []
    assert cloud.proxy is not None
    original = cloud.proxy.issue

    def recording_issue(host: str, port: int, **kw: Any) -> str:
        url = original(host, port, **kw)
        urls.append(url)
        return url

    cloud.proxy.issue = recording_issue  # type: ignore[method-assign]
    return urls


async def refusal(operator: Operator, server: str = "web-01") -> ConsoleRefused:
    """Open a console that must not open; the close code and reason the browser got."""
    with pytest.raises(ConsoleRefused) as refused:
        await operator.open_console(server)
    return refused.value


def token_forms(url: str) -> list[str]:
    token = parse_qs(urlsplit(url).query)["token"][0]
    return sorted({url, token, quote(token, safe=""), quote(quote(token, safe=""), safe="")}, key=len)


async def assert_no_token(
    gateway: RunningGateway, operator: Operator, caplog: pytest.LogCaptureFixture, issued: list[str]
) -> None:
    status, metrics = await operator.get("/metrics")
    assert status == 200
    haystacks = {
        "browser": operator.seen.text(),
        "logs": "\n".join(r.getMessage() + str(r.exc_text or "") for r in caplog.records),
        "audit": gateway.audit_path.read_text() if gateway.audit_path.exists() else "",
        "metrics": str(metrics),
    }
    for url in issued:
        for form in token_forms(url):
            for where, text in haystacks.items():
                assert form not in text, f"console token leaked into {where}"


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


async def test_successful_session_leaks_no_token(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways()
    operator = await sign_in(gateway, "demo")
    await operator.get("/servers")
    await operator.get("/api/servers")
    transport = await operator.open_console("web-01")
    client = RFBClient(transport)
    await client.handshake()
    await client.full_update()
    await transport.close()
    await gateway.wait_for_audit("console_closed")
    assert len(issued) == 1
    await assert_no_token(gateway, operator, caplog, issued)


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (
            Fault(status=404, body={"error": {"code": "Ecs.0114", "message": "not found"}}),
            4404,
            "no such server",
        ),
        (Fault(status=403, body={"error": {"code": "Ecs.0003", "message": "denied"}}), 4520, "permission"),
        (
            Fault(
                status=429,
                body={"error_code": "APIGW.0308", "error_msg": "slow"},
                headers={"Retry-After": "30"},
            ),
            4429,
            "retry in 30",
        ),
        (Fault(status=503, body=b"busy", times=5), 4520, "unavailable"),
        (Fault(status=401, body={"error_code": "APIGW.0301", "error_msg": "bad sig"}), 4520, "credentials"),
        (Fault(status=200, body=b"{not json"), 4520, "cannot use"),
    ],
    ids=["not-found", "forbidden", "throttled", "unavailable", "bad-signature", "malformed"],
)
async def test_cloud_api_errors_on_remote_console(
    cloud: DemoCloud,
    gateways: Any,
    sign_in: Any,
    issued: list[str],
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
    code: int,
    words: str,
) -> None:
    gateway = await gateways()
    operator = await sign_in(gateway, "demo")
    assert cloud.ecs is not None
    fault.path = "remote_console"
    cloud.ecs.inject(fault)
    refused = await refusal(operator)
    assert refused.code == code, refused.reason
    assert words in (refused.reason or "").lower()
    assert "Traceback" not in operator.seen.text()
    assert any(r.name == "gateway.console" and "remote_console" in r.getMessage() for r in caplog.records)
    await assert_no_token(gateway, operator, caplog, issued)


async def test_cloud_api_down(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways()
    operator = await sign_in(gateway, "demo")
    assert cloud._runner is not None
    await cloud._runner.cleanup()
    cloud._runner = None
    refused = await refusal(operator)
    assert refused.code == 4520
    assert "unreachable" in (refused.reason or "")
    status, body = await operator.get("/api/servers")
    assert status == 200
    assert body["servers"] == []
    assert "unreachable" in body["errors"][0]["message"]


async def test_expired_console_token(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways()
    operator = await sign_in(gateway, "demo")
    assert cloud.proxy is not None
    issue = cloud.proxy.issue
    cloud.proxy.issue = lambda host, port, **kw: issue(host, port, ttl=-1)  # type: ignore[method-assign]
    refused = await refusal(operator)
    assert refused.code == 4410
    assert "expired" in (refused.reason or "")
    await assert_no_token(gateway, operator, caplog, issued)


async def test_upstream_refuses_connections(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways()
    operator = await sign_in(gateway, "demo")
    assert cloud.proxy is not None
    await cloud.proxy.stop()
    refused = await refusal(operator)
    assert refused.code == 4530
    await assert_no_token(gateway, operator, caplog, issued)


async def test_upstream_tls_not_trusted(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways(lambda data: data["upstream"].pop("ca_file"))
    operator = await sign_in(gateway, "demo")
    refused = await refusal(operator)
    assert refused.code == 4531
    assert "certificate" in (refused.reason or "").lower()
    await assert_no_token(gateway, operator, caplog, issued)


async def test_upstream_host_not_allowed(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways(lambda data: data["upstream"].update(allowed_hosts=["*.example.com"]))
    operator = await sign_in(gateway, "demo")
    refused = await refusal(operator)
    assert refused.code == 4532
    assert any("not allowed" in r.getMessage() or "allow" in r.getMessage() for r in caplog.records)
    await assert_no_token(gateway, operator, caplog, issued)


async def test_upstream_closing_mid_session(
    cloud: DemoCloud, gateways: Any, sign_in: Any, issued: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways()
    operator = await sign_in(gateway, "demo")
    transport = await operator.open_console("web-01")
    client = RFBClient(transport)
    await client.handshake()
    await client.full_update()
    await cloud.rfb[cloud.servers[0].id].stop()
    await client.wait_closed()
    closed = await gateway.wait_for_audit("console_closed")
    assert closed["closed_by"] == "upstream"
    assert transport.close_code is not None
    await assert_no_token(gateway, operator, caplog, issued)
