"""The scenarios. Each runs every system side by side in the same run and returns plain data for JSON.

Systems that are compared take turns round by round (a, b, c, a, b, c, ...) so a burst of load from
elsewhere on the machine hits them alike; figures are medians over rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import psutil

from bench.client import Session, new_http, open_session
from bench.protocol import profile
from bench.systems import Forwarder, Gateway, Source, Target, Websockify

MB = 1e6


class System(Protocol):
    def target(self) -> Target: ...
    def processes(self) -> list[psutil.Process]: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run: `full()` for the committed results, `quick()` for the smoke test."""

    quick: bool
    stream_64k: int  # bytes per round
    stream_mix: int
    rounds: int
    pings_one: int
    latency_sessions: int
    latency_rate: float  # messages per second per session
    latency_seconds: float
    latency_slices: int
    idle_levels: tuple[int, ...]
    idle_websockify_levels: tuple[int, ...]  # a forked process per connection, select() below fd 1024
    idle_window: float
    idle_settle: float
    opens: int
    scaling_sessions: int
    scaling_bytes: int  # per session per round
    scaling_workers: tuple[int, ...]

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            stream_64k=256 << 20,
            stream_mix=128 << 20,
            rounds=5,
            pings_one=5000,
            latency_sessions=100,
            latency_rate=30.0,
            latency_seconds=20.0,
            latency_slices=4,
            idle_levels=(1000, 5000, 10000),
            idle_websockify_levels=(400, 1000),
            idle_window=10.0,
            idle_settle=2.0,
            opens=200,
            scaling_sessions=8,
            scaling_bytes=32 << 20,
            scaling_workers=(1, 2),
        )

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            quick=True,
            stream_64k=2 << 20,
            stream_mix=1 << 20,
            rounds=1,
            pings_one=50,
            latency_sessions=5,
            latency_rate=30.0,
            latency_seconds=0.5,
            latency_slices=1,
            idle_levels=(10, 20),
            idle_websockify_levels=(10, 20),
            idle_window=0.2,
            idle_settle=0.2,
            opens=5,
            scaling_sessions=2,
            scaling_bytes=1 << 20,
            scaling_workers=(1, 2),
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class CPUMeter:
    """CPU seconds of the system under test, the source and this client over one measured interval."""

    def __init__(self, system: System, source: Source) -> None:
        self.system = system if not isinstance(system, Source) else None
        self.source = source
        self.me = psutil.Process()

    def sample(self) -> tuple[float, float, float]:
        sys_procs = self.system.processes() if self.system is not None else []
        return cpu_seconds(sys_procs), cpu_seconds(self.source.processes()), cpu_seconds([self.me])


# -- throughput -----------------------------------------------------------------------------------


async def throughput(
    systems: dict[str, System], source: Source, name: str, total: int, rounds: int
) -> dict[str, Any]:
    """One session per system; the same stream `rounds` times, systems taking turns."""
    prof = profile(name, total)
    warm = profile(name, min(total, 4 << 20))
    results: dict[str, Any] = {}
    async with new_http() as http:
        sessions: dict[str, Session] = {}
        for key, system in systems.items():
            sessions[key] = await open_session(http, system.target())
            await sessions[key].stream(warm)
        runs: dict[str, list[float]] = {k: [] for k in systems}
        spent: dict[str, list[float]] = {k: [0.0, 0.0, 0.0, 0.0] for k in systems}  # seconds, cpu x3
        for _ in range(rounds):
            for key, system in systems.items():
                meter = CPUMeter(system, source)
                before = meter.sample()
                seconds = await sessions[key].stream(prof)
                after = meter.sample()
                runs[key].append(prof.total / seconds / MB)
                spent[key][0] += seconds
                for i in range(3):
                    spent[key][i + 1] += after[i] - before[i]
        for session in sessions.values():
            await session.close()
    for key in systems:
        seconds, relay, src, client = spent[key]
        gigabytes = prof.total * rounds / 1e9
        results[key] = {
            "mb_per_s": round(median(runs[key]), 1),
            "rounds_mb_per_s": [round(v, 1) for v in runs[key]],
            # Over all rounds together: psutil's CPU times tick in 10 ms steps.
            "cores": {
                "relay": round(relay / seconds, 3),
                "source": round(src / seconds, 3),
                "client": round(client / seconds, 3),
            },
            # CPU the relay process(es) spend per GB moved: robust against load from elsewhere.
            "relay_core_seconds_per_gb": round(relay / gigabytes, 3) if key != "direct" else None,
        }
    return {
        "profile": name,
        "bytes_per_round": prof.total,
        "messages_per_round": len(prof.sizes),
        "rounds": rounds,
        "results": results,
    }


# -- latency --------------------------------------------------------------------------------------


def _latency_summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50) * 1000, 3),
        "p99_ms": round(percentile(samples, 99) * 1000, 3),
        "p999_ms": round(percentile(samples, 99.9) * 1000, 3),
    }


def _added(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    base = results["direct"]
    return {
        key: {f"{q}_ms": round(r[f"{q}_ms"] - base[f"{q}_ms"], 3) for q in ("p50", "p99", "p999")}
        for key, r in results.items()
        if key != "direct"
    }


async def latency_one(systems: dict[str, System], count: int) -> dict[str, Any]:
    """One session, small messages back to back, systems taking turns in blocks of 100."""
    samples: dict[str, list[float]] = {k: [] for k in systems}
    async with new_http() as http:
        sessions = {k: await open_session(http, s.target()) for k, s in systems.items()}
        for session in sessions.values():
            for i in range(20):  # warm-up
                await session.ping(i)
        ident = 0
        while ident < count:
            block = min(100, count - ident)
            for key, session in sessions.items():
                for i in range(block):
                    samples[key].append(await session.ping(ident + i))
            ident += block
        for session in sessions.values():
            await session.close()
    results = {k: _latency_summary(v) for k, v in samples.items()}
    return {"sessions": 1, "messages": count, "results": results, "added": _added(results)}


async def _paced(session: Session, rate: float, start: float, until: float, out: list[float]) -> None:
    period = 1.0 / rate
    due = start + random.random() * period
    ident = 0
    while due < until:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        out.append(await session.ping(ident))
        ident += 1
        due = max(due + period, time.perf_counter())


async def latency_many(
    systems: dict[str, System], sessions: int, rate: float, seconds: float, slices: int
) -> dict[str, Any]:
    """`sessions` sessions per system each sending `rate` small messages a second. Every system's
    sessions stay open throughout; the systems take turns in `slices` slices of the time each."""
    samples: dict[str, list[float]] = {k: [] for k in systems}
    async with new_http() as http:
        opened: dict[str, list[Session]] = {}
        for key, system in systems.items():
            opened[key] = await _open_many(http, system.target(), sessions, 20)
            for s in opened[key]:
                await s.ping(0)
        for _ in range(slices):
            for key in systems:
                start = time.perf_counter()
                until = start + seconds / slices
                await asyncio.gather(*(_paced(s, rate, start, until, samples[key]) for s in opened[key]))
        for group in opened.values():
            await asyncio.gather(*(s.close() for s in group), return_exceptions=True)
    results = {k: _latency_summary(v) for k, v in samples.items()}
    return {
        "sessions": sessions,
        "rate_per_session": rate,
        "seconds": seconds,
        "slices": slices,
        "results": results,
        "added": _added(results),
    }


async def _open_many(
    http: aiohttp.ClientSession, target: Target, count: int, concurrency: int, *, tolerate: bool = False
) -> list[Any]:
    """`count` sessions, `concurrency` at a time; with `tolerate`, failures come back as exceptions."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Session:
        async with gate:
            return await open_session(http, target)

    return list(await asyncio.gather(*(one() for _ in range(count)), return_exceptions=tolerate))


# -- idle sessions ----------------------------------------------------------------------------------


def _memory_kib(procs: Sequence[psutil.Process], forked: bool) -> float:
    """RSS of the process(es); for a forking server the sum of PSS (shared pages counted once)."""
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss if forked else p.memory_info().rss
    return total / 1024


async def idle(
    name: str,
    start: Callable[[], Awaitable[System]],
    levels: Sequence[int],
    window: float,
    settle: float,
    *,
    forked: bool = False,
    fd_per_session: int = 1,
) -> dict[str, Any]:
    """Open sessions in steps up to each level and hold them; memory and CPU of the system at each."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    system = await start()
    points: list[dict[str, Any]] = []
    readers: list[asyncio.Task[None]] = []
    held: list[Session] = []
    http = new_http()
    try:
        target = system.target()
        warm = await open_session(http, target)
        await warm.close()
        await asyncio.sleep(settle)
        base = _memory_kib(system.processes(), forked)
        for level in levels:
            # The system holds fd_per_session descriptors per session; stop short of the hard limit.
            feasible = min(level, (hard - 100) // fd_per_session)
            opened = await _open_many(http, target, feasible - len(held), 50, tolerate=True)
            new = [s for s in opened if isinstance(s, Session)]
            failed = [e for e in opened if not isinstance(e, Session)]
            held.extend(new)
            readers.extend(asyncio.create_task(_drain(s)) for s in new)
            if failed:
                points.append(
                    {
                        "requested": level,
                        "sessions": len(held),
                        "failed_opens": len(failed),
                        "error": f"{type(failed[0]).__name__}: {failed[0]}",
                    }
                )
                break
            await asyncio.sleep(settle)
            memory = _memory_kib(system.processes(), forked)
            procs = system.processes()
            before = cpu_seconds(procs)
            await asyncio.sleep(window)
            cpu = (cpu_seconds(system.processes()) - before) / window
            points.append(
                {
                    "requested": level,
                    "sessions": len(held),
                    "memory_kib": round(memory),
                    "kib_per_session": round((memory - base) / len(held), 1),
                    "cpu_percent": round(cpu * 100, 2),
                    "processes": len(procs),
                }
            )
            if feasible < level:
                break
    finally:
        system.stop()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await http.close()
    return {
        "system": name,
        "memory_metric": "sum of PSS over the process tree" if forked else "RSS",
        "baseline_kib": round(base),
        "points": points,
    }


async def _drain(session: Session) -> None:
    """Keep reading so pings are answered (the gateway's keepalive closes silent peers)."""
    with contextlib.suppress(Exception):
        async for _msg in session.ws:
            pass


# -- console open ---------------------------------------------------------------------------------


async def console_open(systems: dict[str, System], source: Source, count: int) -> dict[str, Any]:
    """From the WebSocket request to the first RFB byte, one console at a time, systems taking turns."""
    opens: dict[str, list[float]] = {k: [] for k in systems}
    api: list[float] = []
    async with new_http() as http:
        for _ in range(3):  # warm-up
            for system in systems.values():
                await (await open_session(http, system.target())).close()
        for _ in range(count):
            for key, system in systems.items():
                if key == "gateway":
                    await source.api_times(http, reset=True)
                session = await open_session(http, system.target())
                opens[key].append(session.opened)
                if key == "gateway":
                    times = await source.api_times(http, reset=True)
                    api.append(sum(times))
                await session.close()
    results = {
        k: {
            "n": len(v),
            "p50_ms": round(percentile(v, 50) * 1000, 3),
            "p99_ms": round(percentile(v, 99) * 1000, 3),
        }
        for k, v in opens.items()
    }
    overhead = [o - a for o, a in zip(opens["gateway"], api, strict=True)]
    return {
        "opens": count,
        "results": results,
        "gateway_api_ms": {
            "p50_ms": round(percentile(api, 50) * 1000, 3),
            "p99_ms": round(percentile(api, 99) * 1000, 3),
            "calls_per_open": 2,
        },
        "gateway_overhead_ms": {
            "p50_ms": round(percentile(overhead, 50) * 1000, 3),
            "p99_ms": round(percentile(overhead, 99) * 1000, 3),
        },
    }


# -- scaling --------------------------------------------------------------------------------------


def _per_worker(gateway: Gateway) -> list[int]:
    counts = []
    for proc in gateway.procs:
        try:
            conns = psutil.Process(proc.pid).net_connections("tcp")
        except psutil.Error:
            counts.append(0)
            continue
        counts.append(
            sum(
                1
                for c in conns
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == gateway.port
            )
        )
    return counts


async def scaling(
    workdir: Path,
    source: Source,
    references: dict[str, System],
    plan: Plan,
    loop: str,
) -> dict[str, Any]:
    """Aggregate downstream throughput of several sessions: gateway with 1..n `--reuse-port` workers."""
    prof = profile("64k", plan.scaling_bytes)
    results: dict[str, Any] = {}

    async def measure(key: str, system: System, extra: dict[str, Any] | None = None) -> None:
        async with new_http() as http:
            sessions = await _open_many(http, system.target(), plan.scaling_sessions, plan.scaling_sessions)
            if isinstance(system, Gateway):
                (extra := extra or {})["sessions_per_worker"] = _per_worker(system)
            await asyncio.gather(*(s.stream(profile("64k", 1 << 20)) for s in sessions))
            runs = []
            cpu = elapsed_total = 0.0
            for _ in range(plan.rounds):
                before = cpu_seconds(system.processes())
                started = time.perf_counter()
                await asyncio.gather(*(s.stream(prof) for s in sessions))
                elapsed = time.perf_counter() - started
                runs.append(prof.total * len(sessions) / elapsed / MB)
                cpu += cpu_seconds(system.processes()) - before
                elapsed_total += elapsed
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        results[key] = {
            "mb_per_s": round(median(runs), 1),
            "rounds_mb_per_s": [round(v, 1) for v in runs],
            "relay_cores": round(cpu / elapsed_total, 3),
            **(extra or {}),
        }

    for key, system in references.items():
        await measure(key, system)
    for workers in plan.scaling_workers:
        gateway = Gateway(workdir, source, workers=workers, loop=loop)
        try:
            await gateway.start()
            await measure(f"gateway_{workers}w", gateway, {"workers": workers})
        finally:
            gateway.stop()
    return {
        "sessions": plan.scaling_sessions,
        "bytes_per_session_per_round": prof.total,
        "rounds": plan.rounds,
        "results": results,
    }


async def start_websockify(workdir: Path, source: Source) -> Websockify:
    w = Websockify(workdir, source.ports["tcp"])
    await w.start()
    return w


async def start_gateway(workdir: Path, source: Source, loop: str) -> Gateway:
    g = Gateway(workdir, source, loop=loop)
    await g.start()
    return g


async def start_forwarder(workdir: Path, source: Source) -> Forwarder:
    f = Forwarder(workdir, source.ports["ws"])
    await f.start()
    return f
