"""`python -m bench.run [--quick] [--out bench/results]`: every scenario, every system, one run.

Writes latest.json (all figures), latest.md (the table and the target verdicts) and latest.png.
The servers run in processes of their own; this process is only the client. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import recording, report, scenarios
from bench.scenarios import Plan
from bench.source import raise_nofile, run_loop
from bench.systems import Source
from gateway.config import ConsoleSection

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run(plan: Plan, loop: str, workdir: Path) -> dict[str, Any]:
    # The gateway holds two descriptors per idle console; the client and the source one each.
    hard = raise_nofile(2 * max(plan.idle_levels) + 200)
    started = time.time()
    meta: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": plan.quick,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "loop": loop,
        "platform": platform.platform(),
        "nofile_hard_limit": hard,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "gateway_shim": "ClientSession() without connector: TCPConnector(limit=0), bench/gateway_launch.py",
    }
    sc: dict[str, Any] = {}
    source = Source(workdir, loop)
    await source.start()
    websockify = gateway = forwarder = nginx = None
    try:
        websockify = await scenarios.start_websockify(workdir, source)
        gateway = await scenarios.start_gateway(workdir, source, loop)
        forwarder = await scenarios.start_forwarder(workdir, source)
        nginx = await scenarios.start_nginx(workdir, source)
        three: dict[str, scenarios.System] = {"direct": source, "websockify": websockify, "gateway": gateway}
        four: dict[str, scenarios.System] = {**three, "nginx": nginx, "forwarder": forwarder}

        _log("throughput, 64 KiB messages")
        sc["throughput_64k"] = await scenarios.throughput(four, source, "64k", plan.stream_64k, plan.rounds)
        _log("throughput, VNC mix")
        sc["throughput_mix"] = await scenarios.throughput(four, source, "mix", plan.stream_mix, plan.rounds)
        _log("latency, one session")
        sc["latency_one"] = await scenarios.latency_one(four, plan.pings_one)
        _log(f"latency, {plan.latency_sessions} sessions")
        sc["latency_many"] = await scenarios.latency_many(
            four, plan.latency_sessions, plan.latency_rate, plan.latency_seconds, plan.latency_slices
        )
        _log("console open")
        sc["console_open"] = await scenarios.console_open(three, source, plan.opens)
        _log("consoles per core")
        sc["consoles_per_core"] = await scenarios.consoles_per_core(
            gateway, source, plan.console_levels, plan.console_window, scenarios.ConsoleProfile()
        )
        for system in (websockify, gateway, forwarder, nginx):
            system.stop()

        _log("throughput with TLS on the upstream hop, then on both hops")
        sc.update(await scenarios.tls_throughput(workdir, source, loop, plan))

        _log("scaling with worker processes")
        websockify = await scenarios.start_websockify(workdir, source)
        sc["scaling"] = await scenarios.scaling(
            workdir, source, {"direct": source, "websockify": websockify}, plan, loop
        )
        websockify.stop()

        _log("session recording")
        sc["recording"] = await recording.run(workdir, source, loop, plan.quick, _log)

        _log("idle sessions")

        async def fresh_source() -> Source:
            s = Source(workdir, loop)
            await s.start()
            return s

        levels = plan.idle_levels
        sc["idle"] = {
            "direct": await scenarios.idle(
                "direct", fresh_source, levels, plan.idle_window, plan.idle_settle
            ),
            "websockify": await scenarios.idle(
                "websockify",
                lambda: scenarios.start_websockify(workdir, source),
                plan.idle_websockify_levels,
                plan.idle_window,
                plan.idle_settle,
                forked=True,
            ),
            "gateway": await scenarios.idle(
                "gateway",
                lambda: scenarios.start_gateway(workdir, source, loop),
                levels,
                # A whole keep-alive interval: every idle socket's ping and pong falls in the window once.
                plan.idle_window if plan.quick else max(plan.idle_window, ConsoleSection().keepalive),
                plan.idle_settle,
                fd_per_session=2,
            ),
        }
    finally:
        for system in (websockify, gateway, forwarder, nginx):
            if system is not None:
                system.stop()
        source.stop()
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    meta["seconds"] = round(time.time() - started, 1)
    data: dict[str, Any] = {"meta": meta, "systems": list(report.SYSTEMS), "scenarios": sc}
    data["targets"] = report.targets(data)
    data["ratios"] = report.ratios(data)
    return data


def write(data: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "latest.md").write_text(report.markdown(data))
    report.chart(data, out / "latest.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds of each scenario (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for latest.{json,md,png}")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if _uvloop_available() else "asyncio",
        help="event loop of the gateway and of the bench's own processes (default: uvloop when installed)",
    )
    args = parser.parse_args(argv)
    plan = Plan.smoke() if args.quick else Plan.full()
    with tempfile.TemporaryDirectory(prefix="novnc-bench-") as tmp:
        holder: dict[str, Any] = {}

        async def go() -> None:
            holder["data"] = await run(plan, args.loop, Path(tmp))

        run_loop(go, args.loop)
    data = holder["data"]
    write(data, args.out)
    print(report.markdown(data))
    _log(f"wrote {args.out}/latest.{{json,md,png}} in {data['meta']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
