"""Soak: console churn (open, handshake, a frame, close, as fast as it goes) beside long sessions that
stream the whole time; at the end no descriptor or task is left, memory has stopped growing, and the
audit trail accounts for every session (each opened console closed exactly once).

SOAK_SECONDS sets the duration (60 in the suite; `make soak` runs 1800). SOAK_REPORT=path.json writes the
summary there too (it is always printed and written next to the test's temporary files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.demo import DemoCloud
from tests.support import leaks
from tests.support.gateway import Operator, RunningGateway, Seen, start_gateway
from tests.support.rfb_client import RFBClient
from tests.support.token_scan import SCANNER
from tests.support.ws_peers import wait_for

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CHURNERS = 4
MB = 1024 * 1024
SERVERS = ("web-01", "db-01", "build-runner")


class _Forgetful(Seen):
    """Scans what the browser got (for the token check) and keeps nothing: the client must not be the
    one whose memory grows."""

    def add(self, item: object) -> None:
        SCANNER.scan(item if isinstance(item, bytes | str) else str(item), "what a soak client received")


def _relaxed(data: dict[str, Any]) -> None:
    data["limits"] = {"per_user": 100, "global_max": 500, "requests_per_minute": 1e7, "burst": 100000}


async def _operator(gateway: RunningGateway, user: str) -> Operator:
    op = Operator(gateway)
    op.seen = _Forgetful()
    await op.login(user)
    return op


async def _long_session(op: Operator, name: str, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Streams until told to stop: small region updates back to back, a full frame now and then."""
    transport = await op.open_console(name)
    client = RFBClient(transport, timeout=30)
    await client.handshake()
    i = 0
    while not stop.is_set():
        if i % 20 == 0:
            await client.full_update()
        else:
            await client.request_update(False, (0, 0, 64, 64))
            await client.next_update()
        counts["long_updates"] += 1
        i += 1
    await transport.close()


async def _churn(op: Operator, worker: int, stop: asyncio.Event, counts: Counter[str]) -> None:
    i = 0
    while not stop.is_set():
        name = SERVERS[(worker + i) % len(SERVERS)]
        transport = await op.open_console(name)
        client = RFBClient(transport, timeout=30)
        await client.handshake()
        await client.request_update(False, (0, 0, 32, 32))
        await client.next_update()
        await transport.close()
        counts["churn_opens"] += 1
        i += 1


@pytest.mark.slow
async def test_soak(tmp_path: Path) -> None:
    cloud = DemoCloud(tmp_path / "cloud")
    await cloud.start()
    gateway = await start_gateway(cloud, tmp_path, _relaxed)
    operators: list[Operator] = []
    samples: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    try:
        operators = [await _operator(gateway, u) for u in ("admin", "demo", "viewer", "demo", "admin")]
        # Warm up with the same concurrency (connection pools at their working size, first-use
        # allocations done), then take the baseline with nothing open.
        await _phase(gateway, operators, min(3.0, SECONDS / 10), Counter(), [])
        await wait_for(lambda: not gateway.gw.registry.local, 10, "the warm-up consoles to be released")
        warmup_opens = len([e for e in gateway.audit_events() if e["event"] == "console_opened"])
        baseline = leaks.here()
        elapsed = await _phase(gateway, operators, SECONDS, counts, samples)
        await wait_for(lambda: not gateway.gw.registry.local, 15, "every console to be released")
        end = await leaks.settle(leaks.here, baseline, fd_slack=0, task_slack=0, within=15)

        events = gateway.audit_events()
        opened = Counter(e["console_id"] for e in events if e["event"] == "console_opened")
        closed = Counter(e["console_id"] for e in events if e["event"] == "console_closed")
        quarter = samples[max(0, len(samples) // 4 - 1)]
        summary = {
            "seconds": round(elapsed, 1),
            "churn_opens": counts["churn_opens"],
            "opens_per_second": round(counts["churn_opens"] / elapsed, 1),
            "long_sessions": len(SERVERS),
            "long_session_updates": counts["long_updates"],
            "audit_opened": sum(opened.values()),
            "audit_closed": sum(closed.values()),
            "baseline": baseline.as_dict(),
            "end": end.as_dict(),
            "leaked": end.minus(baseline),
            "rss_growth_after_first_quarter_mb": round((end.rss - quarter["rss_mb"] * MB) / MB, 1),
            "samples": samples,
        }
        text = json.dumps(summary, indent=2)
        for target in (tmp_path / "soak.json", os.environ.get("SOAK_REPORT")):
            if target:
                Path(target).write_text(text + "\n")  # noqa: ASYNC240 - once, at the end
        print("\nsoak summary:", json.dumps({k: v for k, v in summary.items() if k != "samples"}))

        assert counts["churn_opens"] >= SECONDS, "the churn was far slower than one console a second"
        assert opened == closed, "an opened console was not closed exactly once in the audit trail"
        assert all(n == 1 for n in opened.values())
        assert sum(opened.values()) == warmup_opens + counts["churn_opens"] + len(SERVERS)
        assert end.fds <= baseline.fds, f"leaked descriptors: {summary['leaked']}"
        assert end.tasks <= baseline.tasks, f"leaked tasks: {summary['leaked']}"
        # Stable memory: after the first quarter (allocator and caches warm) it may wobble, not climb.
        assert summary["rss_growth_after_first_quarter_mb"] < 40, summary
    finally:
        for op in operators:
            with contextlib.suppress(Exception):
                await op.close()
        await gateway.stop()
        await cloud.stop()


async def _phase(
    gateway: RunningGateway,
    operators: list[Operator],
    seconds: float,
    counts: Counter[str],
    samples: list[dict[str, Any]],
) -> float:
    """Long sessions plus churn for `seconds`, sampling resources every tenth; returns the time taken."""
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.create_task(_long_session(op, name, stop, counts))
        for op, name in zip(operators[:3], SERVERS, strict=True)
    ]
    tasks += [asyncio.create_task(_churn(operators[1 + w % 4], w, stop, counts)) for w in range(CHURNERS)]
    step = max(seconds / 10, 0.5)
    try:
        while time.monotonic() - started < seconds:
            done, _ = await asyncio.wait(tasks, timeout=step, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed worker fails the soak at once, with its own error
            snap = leaks.here()
            samples.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "rss_mb": round(snap.rss / MB, 1),
                    "fds": snap.fds,
                    "tasks": snap.tasks,
                    "live_consoles": len(gateway.gw.registry.local),
                    "churn_opens": counts["churn_opens"],
                }
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        task.result()
    return time.monotonic() - started
