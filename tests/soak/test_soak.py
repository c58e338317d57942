"""Soak: console churn (open, handshake, a frame, close, as fast as it goes) beside long sessions held by
operators who stream the whole time and press a key now and then; at the end no descriptor or thread is
left, memory has stopped growing, and the audit trail accounts for every session (each opened console
closed exactly once).

The gateway runs as its own `novnc-gateway serve` process, so its memory, descriptors and threads are
measured where only the gateway lives: the clients, the demo cloud, the suite's token scanner and pytest's
log capture all live in the test process and stay out of the figures.

The gateway keeps its idle cut on: the default 15 minutes on long runs, half the run on short ones, so
the smoke run in `make test` also fails if the long sessions stop behaving like an operator.

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

import aiohttp
import psutil
import pytest

from gateway.sim.demo import DemoCloud, demo_config_data
from tests.support import leaks
from tests.support.gateway import Operator, Seen
from tests.support.polling import wait_for
from tests.support.processes import GatewayProcess, free_port
from tests.support.rfb_client import RFBClient
from tests.support.token_scan import SCANNER

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CHURNERS = 4
MB = 1024 * 1024
SERVERS = ("web-01", "db-01", "build-runner")
IDLE = min(900.0, SECONDS / 2)
INPUT_EVERY = IDLE / 3  # the idle warning comes at 2/3 of IDLE without input: never reached
XK_SHIFT_L = 0xFFE1  # a key press that types nothing
# Flat memory: a least-squares line through the gateway's RSS against consoles opened, after the first
# quarter, may rise at most SLOPE_LIMIT bytes per open, or NOISE_FLOOR over the whole fit. The process
# climbs 10-20 MB over its first two thousand or so consoles (allocator and caches warming up) and then
# stays flat; the floor covers that on short runs, so the 60-second smoke catches gross leaks (several
# KiB per console) and the 30-minute run anything above SLOPE_LIMIT.
SLOPE_LIMIT = 256
NOISE_FLOOR = 16 * MB


class _Forgetful(Seen):
    """Scans what the browser got (for the token check) and keeps nothing: the client must not be the
    one whose memory grows."""

    def add(self, item: object) -> None:
        SCANNER.scan(item if isinstance(item, bytes | str) else str(item), "what a soak client received")


def _config(cloud: DemoCloud, workdir: Path) -> dict[str, Any]:
    data = demo_config_data(cloud, port=free_port())
    data["audit"] = {"target": str(workdir / "audit.jsonl")}
    data["limits"] = {"per_user": 100, "global_max": 500, "requests_per_minute": 1e7, "burst": 100000}
    data["console"] = {"idle_timeout": IDLE, "idle_warning": IDLE / 3}
    return data


async def _operator(gateway: GatewayProcess, user: str) -> Operator:
    op = Operator(gateway)  # type: ignore[arg-type]
    op.seen = _Forgetful()
    await op.login(user)
    return op


async def _long_session(op: Operator, name: str, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Streams until told to stop: small region updates back to back, a full frame now and then, and a
    key press every INPUT_EVERY seconds, as an operator at work would (the idle cut rightly ends a
    console nobody touches)."""
    transport = await op.open_console(name)
    client = RFBClient(transport, timeout=30)
    await client.handshake()
    loop = asyncio.get_running_loop()
    next_input = loop.time() + INPUT_EVERY
    i = 0
    while not stop.is_set():
        if loop.time() >= next_input:
            await client.key(XK_SHIFT_L)
            counts["long_inputs"] += 1
            next_input += INPUT_EVERY
        if i % 20 == 0:
            await client.full_update()
        else:
            await client.request_update(False, (0, 0, 64, 64))
            await client.next_update()
        counts["long_updates"] += 1
        i += 1
    warnings = [n for n in transport.notices if n.get("type") == "idle_warning"]
    assert not warnings, f"a long session on {name} was warned about idling: {warnings}"
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


async def _live_consoles(http: aiohttp.ClientSession, gateway: GatewayProcess) -> int:
    """Consoles relaying now, from the gateway's own /metrics."""
    async with http.get(gateway.url + "/metrics") as response:
        text = await response.text()
    prefix = "novnc_gateway_active_sessions{"
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)))


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


@pytest.mark.slow
async def test_soak(tmp_path: Path) -> None:
    cloud = DemoCloud(tmp_path / "cloud")
    await cloud.start()
    gateway: GatewayProcess | None = None
    operators: list[Operator] = []
    samples: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    http = aiohttp.ClientSession()
    try:
        gateway = await GatewayProcess.start(_config(cloud, tmp_path), tmp_path)
        gateway.cloud = cloud
        pid = gateway.pid
        # Long sessions: the first three (control, so their key presses count as input); churn: the last four.
        operators = [await _operator(gateway, u) for u in ("admin", "demo", "demo", "viewer", "admin")]
        # Warm up with the same concurrency (connection pools at their working size, first-use
        # allocations done), then take the baseline with nothing open.
        await _phase(gateway, http, operators, min(10.0, SECONDS / 10), Counter(), [])
        await wait_for(lambda: _balanced(tmp_path), 10, "the warm-up consoles to be released")
        baseline = leaks.of_pid(pid)
        warmup_opens = _audit_counts(tmp_path)[0]
        elapsed = await _phase(gateway, http, operators, SECONDS, counts, samples)
        await wait_for(lambda: _balanced(tmp_path), 20, "every console to be released")
        end = await leaks.settle(lambda: leaks.of_pid(pid), baseline, within=20)
        live_at_end = await _live_consoles(http, gateway)

        opened_total, opened, closed = _audit_counts(tmp_path)
        fit = samples[len(samples) // 4 :]
        slope = _slope([(s["churn_opens"], s["rss_mb"] * MB) for s in fit])
        fit_opens = fit[-1]["churn_opens"] - fit[0]["churn_opens"]
        summary = {
            "seconds": round(elapsed, 1),
            "idle_timeout": IDLE,
            "churn_opens": counts["churn_opens"],
            "opens_per_second": round(counts["churn_opens"] / elapsed, 1),
            "long_sessions": len(SERVERS),
            "long_session_updates": counts["long_updates"],
            "long_session_key_presses": counts["long_inputs"],
            "audit_opened": sum(opened.values()),
            "audit_closed": sum(closed.values()),
            "baseline": baseline.as_dict(),
            "end": end.as_dict(),
            "leaked": end.minus(baseline),
            "live_consoles_at_end": live_at_end,
            "rss_mb_first_quarter": fit[0]["rss_mb"],
            "rss_mb_max": max(s["rss_mb"] for s in samples),
            "rss_mb_end": round(end.rss / MB, 1),
            "rss_slope_bytes_per_open_after_first_quarter": round(slope, 1),
            "opens_in_fit": fit_opens,
            "samples": samples,
        }
        text = json.dumps(summary, indent=2)
        for target in (tmp_path / "soak.json", os.environ.get("SOAK_REPORT")):
            if target:
                Path(target).write_text(text + "\n")  # noqa: ASYNC240 - once, at the end
        print("\nsoak summary:", json.dumps({k: v for k, v in summary.items() if k != "samples"}))

        assert counts["churn_opens"] >= SECONDS, "the churn was far slower than one console a second"
        # A key every INPUT_EVERY from each session's open to the end (opening may take a moment).
        assert counts["long_inputs"] >= len(SERVERS) * (int(SECONDS / INPUT_EVERY) - 2)
        assert opened == closed, "an opened console was not closed exactly once in the audit trail"
        assert all(n == 1 for n in opened.values())
        assert opened_total == warmup_opens + counts["churn_opens"] + len(SERVERS)
        assert live_at_end == 0
        assert end.fds <= baseline.fds, f"leaked descriptors: {summary['leaked']}"
        assert end.threads <= baseline.threads, f"leaked threads: {summary['leaked']}"
        assert slope * fit_opens <= max(SLOPE_LIMIT * fit_opens, NOISE_FLOOR), summary
    finally:
        for op in operators:
            with contextlib.suppress(Exception):
                await op.close()
        await http.close()
        if gateway is not None:
            await gateway.stop()
        await cloud.stop()


def _balanced(workdir: Path) -> bool:
    _, opened, closed = _audit_counts(workdir)
    return opened == closed


def _audit_counts(workdir: Path) -> tuple[int, Counter[str], Counter[str]]:
    """console_opened lines, and opened/closed counts per console id, from the gateway's audit file."""
    opened: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    with (workdir / "audit.jsonl").open() as lines:
        for line in lines:
            event = json.loads(line)
            if event["event"] == "console_opened":
                opened[event["console_id"]] += 1
            elif event["event"] == "console_closed":
                closed[event["console_id"]] += 1
    return sum(opened.values()), opened, closed


async def _phase(
    gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    operators: list[Operator],
    seconds: float,
    counts: Counter[str],
    samples: list[dict[str, Any]],
) -> float:
    """Long sessions plus churn for `seconds`, sampling the gateway process (and, for comparison, this
    test process) every thirtieth of the run, at most every 10 s; returns the time taken."""
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.create_task(_long_session(op, name, stop, counts))
        for op, name in zip(operators[:3], SERVERS, strict=True)
    ]
    tasks += [asyncio.create_task(_churn(operators[1 + w % 4], w, stop, counts)) for w in range(CHURNERS)]
    step = min(max(seconds / 30, 0.5), 10.0)
    harness = psutil.Process()
    try:
        while time.monotonic() - started < seconds:
            done, _ = await asyncio.wait(tasks, timeout=step, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed worker fails the soak at once, with its own error
            snap = leaks.of_pid(gateway.pid)
            samples.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "rss_mb": round(snap.rss / MB, 2),
                    "fds": snap.fds,
                    "threads": snap.threads,
                    "live_consoles": await _live_consoles(http, gateway),
                    "churn_opens": counts["churn_opens"],
                    "harness_rss_mb": round(harness.memory_info().rss / MB, 1),
                }
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        task.result()
    return time.monotonic() - started
