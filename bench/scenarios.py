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

from bench import protocol
from bench.client import Session, new_http, open_session
from bench.protocol import profile
from bench.systems import Forwarder, Gateway, Nginx, Source, Target, Websockify

MB = 1e6
ADDED_P99_LIMIT_MS = 5.0  # the consoles-per-core ramp stops once the gateway adds more than this


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
    stream_tls_64k: int  # bytes per round with TLS on a hop
    stream_tls_mix: int
    console_levels: tuple[int, ...]  # the consoles-per-core ramp
    console_window: float  # seconds per level, per system

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
            stream_tls_64k=128 << 20,
            stream_tls_mix=64 << 20,
            console_levels=(250, 500, 1000, 2000, 3000),
            console_window=6.0,
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
            stream_tls_64k=1 << 20,
            stream_tls_mix=1 << 20,
            console_levels=(5, 10),
            console_window=2.0,  # a turn of 0.5 s: one tick per console at least
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


_QUANTILES = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


def _added_paired(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Added latency per round trip: each system's i-th round trip minus direct's i-th, taken back to
    back, so both met the same moment's load; percentiles of those differences."""
    base = samples["direct"]
    return {
        key: {
            f"{q}_ms": round(percentile([a - b for a, b in zip(v, base, strict=True)], x) * 1000, 3)
            for q, x in _QUANTILES.items()
        }
        for key, v in samples.items()
        if key != "direct"
    }


def _added_beyond_noise(
    results: dict[str, dict[str, float]], direct_slices: list[list[float]]
) -> dict[str, dict[str, Any]]:
    """System percentile minus direct's where that difference is larger than the spread of direct's own
    percentile between its time slices; otherwise None: the difference is then load from elsewhere on
    the machine, not the relay (a difference of percentiles from different moments can even be < 0)."""
    noise = {}
    for q, x in _QUANTILES.items():
        per_slice = [percentile(v, x) for v in direct_slices if v]
        noise[q] = (max(per_slice) - min(per_slice)) * 1000 if len(per_slice) > 1 else 0.0
    out: dict[str, dict[str, Any]] = {}
    for key, r in results.items():
        if key == "direct":
            continue
        added: dict[str, Any] = {}
        for q in _QUANTILES:
            diff = r[f"{q}_ms"] - results["direct"][f"{q}_ms"]
            added[f"{q}_ms"] = round(diff, 3) if diff > noise[q] and diff > 0 else None
        added["noise_ms"] = {f"{q}_ms": round(v, 3) for q, v in noise.items()}
        out[key] = added
    return out


async def latency_one(systems: dict[str, System], count: int) -> dict[str, Any]:
    """One session per system, small messages back to back, the systems taking turns message by
    message (so the added latency is a difference per round trip)."""
    samples: dict[str, list[float]] = {k: [] for k in systems}
    async with new_http() as http:
        sessions = {k: await open_session(http, s.target()) for k, s in systems.items()}
        for session in sessions.values():
            for i in range(20):  # warm-up
                await session.ping(i)
        for ident in range(count):
            for key, session in sessions.items():
                samples[key].append(await session.ping(ident))
        for session in sessions.values():
            await session.close()
    results = {k: _latency_summary(v) for k, v in samples.items()}
    return {"sessions": 1, "messages": count, "results": results, "added": _added_paired(samples)}


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
    samples: dict[str, list[list[float]]] = {k: [] for k in systems}  # per slice
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
                samples[key].append(out := [])
                await asyncio.gather(*(_paced(s, rate, start, until, out) for s in opened[key]))
        for group in opened.values():
            await asyncio.gather(*(s.close() for s in group), return_exceptions=True)
    results = {k: _latency_summary([x for part in parts for x in part]) for k, parts in samples.items()}
    return {
        "sessions": sessions,
        "rate_per_session": rate,
        "seconds": seconds,
        "slices": slices,
        "results": results,
        "added": _added_beyond_noise(results, samples["direct"]),
    }


async def _open_many(
    http: aiohttp.ClientSession,
    target: Target,
    count: int,
    concurrency: int,
    *,
    tolerate: bool = False,
    then: Callable[[Session], object] | None = None,
) -> list[Any]:
    """`count` sessions, `concurrency` at a time; with `tolerate`, failures come back as exceptions;
    `then` is called with each session as soon as it is open."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Session:
        async with gate:
            session = await open_session(http, target)
        if then is not None:
            then(session)
        return session

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
    """Open sessions in steps up to each level and hold them; memory and CPU of the system at each. The
    system inherits this process's RLIMIT_NOFILE (bench.run raises it as far as it may); a level that
    needs more descriptors than that is cut short, and its point says how far it got and why."""
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
            # Each session is read from the moment it opens: one that waited for the whole step would
            # leave the system's keep-alive pings unanswered, and be closed as a dead peer.
            opened = await _open_many(
                http,
                target,
                feasible - len(held),
                50,
                tolerate=True,
                then=lambda s: readers.append(asyncio.create_task(_drain(s))),
            )
            new = [s for s in opened if isinstance(s, Session)]
            failed = [e for e in opened if not isinstance(e, Session)]
            held.extend(new)
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
            still_open = sum(1 for s in held if not s.ws.closed)
            points.append(
                {
                    "requested": level,
                    "sessions": still_open,  # open at the end of the window: a closed one is not idle
                    "opened": len(held),
                    "memory_kib": round(memory),
                    "kib_per_session": round((memory - base) / max(1, still_open), 1),
                    "cpu_percent": round(cpu * 100, 2),
                    "processes": len(procs),
                }
            )
            if feasible < level:
                points[-1]["limited_by"] = (
                    f"RLIMIT_NOFILE hard limit {hard} ({fd_per_session} descriptor(s) per session, 100 spare)"
                )
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
        "cpu_window_s": window,
        "nofile_hard_limit": hard,
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


async def start_websockify(workdir: Path, source: Source, *, tls: bool = False) -> Websockify:
    w = Websockify(workdir, source.ports["tcp"], source.certs if tls else None)
    await w.start()
    return w


async def start_gateway(
    workdir: Path, source: Source, loop: str, *, tls_upstream: bool = False, tls_serve: bool = False
) -> Gateway:
    g = Gateway(workdir, source, loop=loop, tls_upstream=tls_upstream, tls_serve=tls_serve)
    await g.start()
    return g


async def start_nginx(
    workdir: Path, source: Source, *, tls_upstream: bool = False, tls_serve: bool = False
) -> Nginx:
    n = Nginx(workdir, source, tls_upstream=tls_upstream, tls_serve=tls_serve)
    await n.start()
    return n


async def start_forwarder(workdir: Path, source: Source, *, tls: bool = False) -> Forwarder:
    if tls:
        f = Forwarder(workdir, source.ports["wss"], source.client_tls)
    else:
        f = Forwarder(workdir, source.ports["ws"])
    await f.start()
    return f


# -- TLS ------------------------------------------------------------------------------------------


class TLSDirect:
    """The direct path over TLS: the client on the source's `wss` port (no relay process)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def target(self) -> Target:
        return self.source.tls_target()

    def processes(self) -> list[psutil.Process]:
        return []

    def stop(self) -> None:
        pass


# What each system does with TLS in the two TLS scenarios (reported with the figures).
TLS_HOPS = {
    "tls_upstream": {
        "direct": "client to source over TLS",
        "websockify": "serves TLS (--cert --ssl-only); its upstream, VNC over TCP, is plain",
        "gateway": "TLS client of the source (as of nova-novncproxy); serves plain ws",
        "nginx": "TLS client of the source (proxy_pass https, verified); serves plain ws",
        "forwarder": "passes the client's TLS to the source untouched",
    },
    "tls_both": {
        "direct": "client to source over TLS",
        "websockify": "serves TLS (--cert --ssl-only); its upstream, VNC over TCP, is plain",
        "gateway": "serves HTTPS/wss and is a TLS client of the source",
        "nginx": "serves TLS and is a TLS client of the source",
        "forwarder": "passes the client's TLS to the source untouched",
    },
}


# -- consoles per core ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleProfile:
    """One active console, driven by the client: every `period` seconds a key press and release and a
    pointer event go upstream (the pointer is answered with a 12-byte update: the round trip measured),
    then the console asks for a few small screen updates (`small` bytes); every `burst_every`-th tick
    the updates are a burst of `burst` bytes instead (a window redrawn, a scroll)."""

    period: float = 0.5
    small: int = 600
    burst: int = 48 << 10
    burst_every: int = 20

    def describe(self) -> str:
        per_s = 1 / self.period
        return (
            f"per console: {2 * per_s:g} key events + {per_s:g} pointer events/s upstream; "
            f"{per_s:g} round trips/s and ~{self.small} B of small updates {per_s:g} times/s downstream; "
            f"a {self.burst >> 10} KiB burst every {self.period * self.burst_every:g} s"
        )


async def _console(
    session: Session, prof: ConsoleProfile, start: float, until: float, rtts: list[float], ticks: list[int]
) -> None:
    small, burst = profile("mix", prof.small), profile("mix", prof.burst)
    down, up = protocol.key(True, 0x61), protocol.key(False, 0x61)
    tick = random.randrange(prof.burst_every)
    due = start + random.random() * prof.period
    send = session.ws.send_bytes
    while due < until:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(down)
        await send(up)
        rtts.append(await session.ping(tick))
        await session.stream(burst if tick % prof.burst_every == 0 else small)
        tick += 1
        ticks[0] += 1
        due = max(due + prof.period, time.perf_counter())


async def _drive(
    sessions: Sequence[Session], prof: ConsoleProfile, seconds: float, system: System | None
) -> tuple[list[float], float, float]:
    """Every session runs `prof` for `seconds`; round trips, ticks per second per console, and the
    cores the system's processes used meanwhile."""
    rtts: list[float] = []
    ticks = [0]
    procs = system.processes() if system is not None else []
    before = cpu_seconds(procs)
    start = time.perf_counter()
    await asyncio.gather(*(_console(s, prof, start, start + seconds, rtts, ticks) for s in sessions))
    elapsed = time.perf_counter() - start
    cores = (cpu_seconds(procs) - before) / elapsed
    return rtts, ticks[0] / elapsed / len(sessions), cores


def _stop_reason(last: dict[str, Any] | None) -> str:
    if last is None:
        reason = "nothing ran"
    elif last["gateway_cores"] >= 0.95:
        reason = "the gateway used a whole core"
    elif not last["full_rate"]:
        reason = "the bench's client or source fell below the profile's rate (the machine, not the gateway)"
    elif (last["added_p99_ms"] or 0) > ADDED_P99_LIMIT_MS:
        reason = f"added p99 over {ADDED_P99_LIMIT_MS:g} ms"
    else:
        reason = "last level reached"
    return reason + "; consoles per core from the gateway's CPU at the last full-rate level within the limit"


async def consoles_per_core(
    gateway: System,
    source: Source,
    levels: Sequence[int],
    window: float,
    prof: ConsoleProfile,
    turns: int = 4,
) -> dict[str, Any]:
    """Ramp the number of active consoles through the gateway (and as many direct, the reference) until
    the gateway's process uses a whole core or its added p99 round trip passes 5 ms. At each level the
    two take turns, `turns` times, for `window` seconds in all each. Added p99 = the median over the
    turns of (gateway's p99 - direct's p99 in the turn right after): each pair met the same moment's
    load, and one burst of load from elsewhere moves one pair, not the median. Consoles per core =
    consoles * (achieved / intended ticks per console) / gateway cores: consoles at the profile that one
    core of the gateway carries, whether or not the client (one Python process) kept up the full rate."""
    points: list[dict[str, Any]] = []
    me = psutil.Process()
    async with new_http() as http:
        held: dict[str, list[Session]] = {"gateway": [], "direct": []}
        targets = {"gateway": gateway.target(), "direct": source.target()}
        for level in levels:
            for name, group in held.items():
                group += await _open_many(http, targets[name], level - len(group), 50)
            rtts: dict[str, list[list[float]]] = {"gateway": [], "direct": []}  # per turn
            rates: list[float] = []
            cores: list[float] = []
            bench_before = cpu_seconds([me]), cpu_seconds(source.processes())
            started = time.perf_counter()
            for _ in range(turns):
                for name, group in held.items():
                    measured = gateway if name == "gateway" else None
                    got, rate, used = await _drive(group, prof, window / turns, measured)
                    rtts[name].append(got)
                    if name == "gateway":
                        rates.append(rate)
                        cores.append(used)
            elapsed = time.perf_counter() - started
            client = (cpu_seconds([me]) - bench_before[0]) / elapsed
            src = (cpu_seconds(source.processes()) - bench_before[1]) / elapsed
            summary = {k: _latency_summary([x for turn in v for x in turn]) for k, v in rtts.items()}
            pairs = [percentile(g, 99) - percentile(d, 99) for g, d in zip(*rtts.values(), strict=True)]
            added = round(median(pairs) * 1000, 3)
            rate, used = median(rates), sum(cores) / len(cores)
            # Below 90% of the profile's rate the client or the source (one Python process each) set
            # the pace: latencies then measure the bench, not the gateway.
            full = rate >= 0.9 / prof.period
            points.append(
                {
                    "consoles": level,
                    "gateway_cores": round(used, 3),
                    "client_cores": round(client, 3),
                    "source_cores": round(src, 3),
                    "ticks_per_console_per_s": round(rate, 3),
                    "full_rate": full,
                    "intended_ticks_per_console_per_s": round(1 / prof.period, 3),
                    "consoles_per_core": round(level * rate * prof.period / used) if used > 0 else None,
                    "gateway": summary["gateway"],
                    "direct": summary["direct"],
                    # None: the gateway's p99 was not above direct's in most turns (noise, not a cost).
                    "added_p99_ms": added if added > 0 else None,
                    "added_p99_per_turn_ms": [round(x * 1000, 3) for x in pairs],
                }
            )
            if used >= 0.95 or added > ADDED_P99_LIMIT_MS or not full:
                break
        for group in held.values():
            await asyncio.gather(*(s.close() for s in group), return_exceptions=True)
    within = [
        p
        for p in points
        if (p["added_p99_ms"] or 0) <= ADDED_P99_LIMIT_MS and p["consoles_per_core"] and p["full_rate"]
    ]
    best = within[-1] if within else None
    last = points[-1] if points else None
    return {
        "profile": prof.describe(),
        "window_seconds": window,
        "points": points,
        "consoles_per_core": best["consoles_per_core"] if best else None,
        "at_consoles": best["consoles"] if best else None,
        "stopped_by": _stop_reason(last),
    }


async def tls_throughput(workdir: Path, source: Source, loop: str, plan: Plan) -> dict[str, Any]:
    """The throughput scenarios again with TLS: on the upstream hop (`tls_upstream_*`) and on both hops
    (`tls_both_*`); websockify serving TLS is the comparison in both, direct and the forwarder carry
    the client's TLS end to end."""
    out: dict[str, Any] = {}
    started: list[System] = []
    try:
        shared: dict[str, System] = {"direct": TLSDirect(source)}
        shared["websockify"] = await start_websockify(workdir, source, tls=True)
        started.append(shared["websockify"])
        shared["forwarder"] = await start_forwarder(workdir, source, tls=True)
        started.append(shared["forwarder"])
        for hops, serve in (("tls_upstream", False), ("tls_both", True)):
            gateway = await start_gateway(workdir, source, loop, tls_upstream=True, tls_serve=serve)
            started.append(gateway)
            nginx = await start_nginx(workdir, source, tls_upstream=True, tls_serve=serve)
            started.append(nginx)
            systems = {"direct": shared["direct"], "websockify": shared["websockify"], "gateway": gateway}
            systems |= {"nginx": nginx, "forwarder": shared["forwarder"]}
            for name, total in (("64k", plan.stream_tls_64k), ("mix", plan.stream_tls_mix)):
                result = await throughput(systems, source, name, total, plan.rounds)
                out[f"{hops}_{name}"] = {**result, "tls": TLS_HOPS[hops]}
            gateway.stop()
            nginx.stop()
    finally:
        for system in started:
            system.stop()
    return out
