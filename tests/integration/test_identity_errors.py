"""Identity errors are identity errors (issue 14, item 6), for Huawei's IAM-token path against a real
Keystone: an identity URL written the usual way (`.../v3`) works, an identity failure is reported as the
gateway's credential problem (never "no such server", 4404), and after the identity service rejects the
gateway's password the gateway waits before trying again and says so on /readyz and in the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.cookie import generate_key
from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.registry import build_provider
from gateway.config import load_config
from gateway.sim.demo import DemoCloud
from tests.support.gateway import ConsoleRefused, Operator, start_gateway
from tests.support.keystone import Account, Keystone
from tests.support.processes import write_config

WEB_01 = "6f7c3c52-2a7e-4a45-9d1c-4d2b0c9c1a01"


def _iam_cloud(cloud: DemoCloud, account: Account, endpoint: str, password: str) -> dict[str, Any]:
    """The demo cloud with Huawei IAM-token sign-in at `endpoint` instead of AK/SK."""
    entry = cloud.cloud_config()
    del entry["access_key"], entry["secret_key"]
    entry["project_id"] = account.project_id
    entry["iam"] = {
        "domain": account.user_domain,
        "user": account.user,
        "password": password,
        "endpoint": endpoint,
    }
    return entry


async def test_an_iam_endpoint_ending_in_v3_signs_in_and_is_never_no_such_server(
    keystone: tuple[Keystone, Account], cloud: DemoCloud, tmp_path: Path
) -> None:
    ks, account = keystone
    data = {
        "session": {"keys": [generate_key()]},
        "auth": {"local": {"enabled": True}},
        "clouds": [_iam_cloud(cloud, account, f"{ks.url}/v3/", account.password)],
    }
    config = load_config(write_config(data, tmp_path / "gw.toml"), {})  # what check-config reads
    seen: list[tuple[str, str]] = []
    provider = build_provider(config.clouds[0], observe=lambda op, outcome, _s: seen.append((op, outcome)))
    try:
        with pytest.raises(CloudError) as refused:
            await provider.get_server(WEB_01)
    finally:
        await provider.close()
    # Keystone issued the gateway a token (the simulated ECS then refuses a token it does not know)...
    assert any(op.endswith("_token") and outcome == "ok" for op, outcome in seen), seen
    # ...and nothing along the way became "no such server".
    assert refused.value.kind is CloudErrorKind.AUTH


async def test_identity_failures_reach_the_user_as_the_gateways_credentials(
    keystone: tuple[Keystone, Account], cloud: DemoCloud, tmp_path: Path
) -> None:
    ks, account = keystone

    def wrong_path(data: dict[str, Any]) -> None:
        data["clouds"] = [_iam_cloud(cloud, account, f"{ks.url}/identity/v3", account.password)]

    gateway = await start_gateway(cloud, tmp_path, wrong_path)
    op = Operator(gateway)
    try:
        await op.login("demo")
        with pytest.raises(ConsoleRefused) as refused:
            await op.open_console(WEB_01)
    finally:
        await op.close()
        await gateway.stop()
    assert refused.value.code == 4520, refused.value.reason
    assert "identity service address is wrong" in (refused.value.reason or "")


async def test_a_rejected_password_backs_off_and_says_so(
    keystone: tuple[Keystone, Account], cloud: DemoCloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ks, account = keystone
    caplog.set_level(logging.DEBUG)

    def wrong_password(data: dict[str, Any]) -> None:
        data["clouds"] = [_iam_cloud(cloud, account, ks.url, "not-the-password-" + "x" * 8)]

    gateway = await start_gateway(cloud, tmp_path, wrong_password)
    op = Operator(gateway)
    try:
        await op.login("demo")
        reasons = []
        for _ in range(3):
            with pytest.raises(ConsoleRefused) as refused:
                await op.open_console(WEB_01)
            assert refused.value.code == 4520
            reasons.append(refused.value.reason or "")
        gateway.gw.last_cloud_ok = 0.0
        status, body = await op.get("/readyz")
    finally:
        await op.close()
        await gateway.stop()
    attempts = [r for r in caplog.records if r.getMessage().endswith(" POST /v3/auth/tokens")]
    assert len(attempts) == 1, "one password attempt, then the gateway waits"
    assert "rejected the gateway's own credentials" in reasons[0]
    assert all("waits" in reason for reason in reasons[1:])
    assert status == 503
    assert any(p.startswith("cloud demo: ") and "waits" in p for p in body["problems"]), body
    assert "no new sign-in for" in caplog.text
    assert "not-the-password-" not in caplog.text
