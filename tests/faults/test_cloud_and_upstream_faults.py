"""A cloud API and console proxies that fail in every way we could make them fail, with real sockets.

For each fault: the close code and words the user gets, the log line an operator gets, the healthy
console of another user streaming on, and no descriptor, task or registry entry left behind (measured
after the first and after the last repetition: a leak grows with repetitions, noise does not).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from gateway.consoles.codes import CLOSE_UPSTREAM_LOST
from tests.faults.conftest import REPORT, Rig
from tests.support import leaks
from tests.support.gateway import ConsoleRefused
from tests.support.hostile import HOSTILE_SERVER
from tests.support.polling import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

# fault -> (close codes the user may get, words in the reason, words in a gateway log line)
CLOUD_CASES: dict[str, tuple[set[int], str, str]] = {
    "timeout": ({4520}, "unreachable", "UNREACHABLE"),
    "500": ({4520}, "internal error", "INTERNAL"),
    "503": ({4520}, "unavailable", "UNREACHABLE"),
    "429-retry-after": ({4429}, "retry in 1 s", "THROTTLED"),
    "429-no-retry-after": ({4429}, "retry in a few seconds", "THROTTLED"),
    "malformed": ({4520}, "cannot use", "not valid JSON"),
    "wrong-types": ({4520}, "cannot use", "remote_console.url"),
    "oversized": ({4520}, "cannot use", "larger than"),
    "oversized-chunked": ({4520}, "cannot use", "larger than"),
    "slow-body": ({4520}, "unreachable", "UNREACHABLE"),
}
UPSTREAM_REFUSALS: dict[str, tuple[set[int], str, str]] = {
    "plain-tcp": ({4530, 4531}, "console proxy", "upstream connect failed"),
    "wrong-cert": ({4531}, "certificate", "upstream connect failed: tls"),
    "close-in-handshake": ({4410}, "expired", "upstream connect failed: expired"),
    "partial-101": ({4410, 4530}, "console", "upstream connect failed"),
    "stall-tls": ({4530}, "did not answer in time", "upstream connect failed: timeout"),
    "stall-handshake": ({4530}, "did not answer in time", "upstream connect failed: timeout"),
}
SLOW = {"timeout", "slow-body", "429-retry-after", "stall-tls", "stall-handshake"}


async def _refused(rig: Rig) -> ConsoleRefused:
    with pytest.raises(ConsoleRefused) as refused:
        await rig.victim.open_console(HOSTILE_SERVER["id"], cloud="hostile")
    return refused.value


async def _settled(rig: Rig, baseline: leaks.Snapshot) -> leaks.Snapshot:
    live = rig.gateway.gw.registry.local
    await wait_for(lambda: len(live) <= 1, 10, "the fault's console to be released")  # healthy one stays
    return await leaks.settle(leaks.here, baseline, fd_slack=1, task_slack=1)


async def _run_fault(
    rig: Rig, caplog: pytest.LogCaptureFixture, name: str, attempt: Any, reps: int
) -> dict[str, Any]:
    caplog.set_level(logging.INFO)
    before = leaks.here()
    results = [await attempt()]
    first = await _settled(rig, before)
    for _ in range(reps - 1):
        results.append(await attempt())
    last = await _settled(rig, first)
    await rig.everyone_else_is_served()
    assert len(rig.gateway.gw.registry.local) == 1, "a console of the faulty kind is still registered"
    growth = last.minus(first)
    row = {
        "fault": name,
        "reps": reps,
        "before": before.as_dict(),
        "after_first": first.as_dict(),
        "after_last": last.as_dict(),
        "growth_over_reps": growth,
        "user_saw": results[0],
    }
    REPORT.append(row)
    assert growth["fds"] <= 1, f"descriptors grow with repetitions: {row}"
    assert growth["tasks"] <= 1, f"tasks grow with repetitions: {row}"
    return row


@pytest.mark.parametrize("fault", sorted(CLOUD_CASES))
async def test_cloud_api_fault(rig: Rig, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    codes, words, logged = CLOUD_CASES[fault]
    rig.hostile.mode = fault

    async def attempt() -> dict[str, Any]:
        started = time.monotonic()
        refusal = await _refused(rig)
        assert refusal.code in codes, (refusal.code, refusal.reason)
        assert words in (refusal.reason or "").lower(), refusal.reason
        return {
            "code": refusal.code,
            "reason": refusal.reason,
            "seconds": round(time.monotonic() - started, 2),
        }

    await _run_fault(rig, caplog, f"cloud:{fault}", attempt, reps=2 if fault in SLOW else 3)
    assert any(logged in r.getMessage() and r.name.startswith("gateway") for r in caplog.records), [
        r.getMessage() for r in caplog.records if r.name.startswith("gateway")
    ][-5:]
    # The API's own words (with a newline and markup in them) reach the log as one line, never the user.
    assert not any("<b>" in r.getMessage() and "\n" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", sorted(UPSTREAM_REFUSALS))
async def test_upstream_refusal(rig: Rig, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    codes, words, logged = UPSTREAM_REFUSALS[kind]
    rig.hostile.mode = f"upstream:{kind}"

    async def attempt() -> dict[str, Any]:
        refusal = await _refused(rig)
        assert refusal.code in codes, (refusal.code, refusal.reason)
        assert words in (refusal.reason or "").lower(), refusal.reason
        return {"code": refusal.code, "reason": refusal.reason}

    await _run_fault(rig, caplog, f"upstream:{kind}", attempt, reps=2 if kind in SLOW else 3)
    assert any(logged in r.getMessage() for r in caplog.records)


async def test_a_redirecting_console_proxy_is_refused_and_nothing_reaches_the_target(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """An allow-listed proxy answering 302 to a host off the allow-list: aiohttp's ws_connect would
    follow it (the allow-list saw only the first URL) and the audit would name the allowed host."""
    rig.hostile.mode = "upstream:redirect"
    allowed = f"127.0.0.1:{rig.upstreams.ports['redirect']}"

    async def attempt() -> dict[str, Any]:
        refusal = await _refused(rig)
        assert refusal.code == 4532, (refusal.code, refusal.reason)
        assert "redirected" in (refusal.reason or ""), refusal.reason
        failed = await rig.gateway.wait_for_audit("console_failed", failure="upstream_redirect")
        assert failed["upstream"] == allowed and failed["close_code"] == 4532
        return {"code": refusal.code, "reason": refusal.reason}

    await _run_fault(rig, caplog, "upstream:redirect", attempt, reps=2)
    assert rig.upstreams.connections.get("redirect-target", 0) == 0, "the gateway followed the redirect"
    assert any("redirect" in r.getMessage() and "302 to 127.0.0.2" in r.getMessage() for r in caplog.records)


async def test_the_audit_names_the_address_the_console_reached(rig: Rig) -> None:
    healthy = rig.gateway.audit_events()
    opened = next(e for e in healthy if e["event"] == "console_opened" and e["server_name"] == "web-01")
    assert opened["upstream_address"] == opened["upstream"] == f"127.0.0.1:{rig.cloud.proxy.port}"


@pytest.mark.parametrize("kind", ["close-mid-stream", "stall-stream"])
async def test_upstream_dies_mid_session(rig: Rig, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """The console opened (the user saw the hello), then the proxy vanished or froze."""
    rig.hostile.mode = f"upstream:{kind}"

    async def attempt() -> dict[str, Any]:
        transport = await rig.victim.open_console(HOSTILE_SERVER["id"], cloud="hostile")
        first = await transport.recv()
        assert first == b"RFB 003.008\n"
        started = time.monotonic()
        assert await transport.recv() is None
        assert transport.close_code == CLOSE_UPSTREAM_LOST, (transport.close_code, transport.close_reason)
        assert "lost" in (transport.close_reason or "")
        closed = await rig.gateway.wait_for_audit(
            "console_closed", console_id=transport.notices[0]["console_id"]
        )
        assert closed["closed_by"] == "upstream"
        return {
            "code": transport.close_code,
            "reason": transport.close_reason,
            "seconds_to_notice": round(time.monotonic() - started, 2),
        }

    row = await _run_fault(rig, caplog, f"upstream:{kind}", attempt, reps=2)
    if kind == "stall-stream":
        # Noticed by the keep-alive ping (1 s here), not left hanging until the idle timeout.
        assert row["user_saw"]["seconds_to_notice"] < 5


async def test_every_opened_fault_session_was_closed_in_the_audit(rig: Rig) -> None:
    events = rig.gateway.audit_events()
    opened = {e["console_id"] for e in events if e["event"] == "console_opened"}
    closed = {e["console_id"] for e in events if e["event"] == "console_closed"}
    healthy = rig.healthy_console.notices[0]["console_id"]
    assert opened - closed == {healthy}
    assert closed <= opened
