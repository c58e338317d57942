"""Results → target verdicts, a Markdown table and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SYSTEMS = ("direct", "websockify", "gateway")
LABELS = {
    "direct": "(a) direct, no relay",
    "websockify": "(b) websockify",
    "gateway": "(c) gateway",
    "forwarder": "zero-work TCP hop (reference)",
}


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it holds."""
    sc = data["scenarios"]
    out: list[dict[str, Any]] = []
    for name in ("throughput_64k", "throughput_mix"):
        r = sc[name]["results"]
        ratio = r["gateway"]["mb_per_s"] / r["direct"]["mb_per_s"]
        out.append(
            {
                "target": f"{name}: gateway >= 80% of direct",
                "value": round(ratio, 3),
                "limit": 0.8,
                "met": ratio >= 0.8,
            }
        )
        vs = r["gateway"]["mb_per_s"] / r["websockify"]["mb_per_s"]
        out.append(
            {
                "target": f"{name}: gateway above websockify",
                "value": round(vs, 3),
                "limit": 1.0,
                "met": vs > 1.0,
            }
        )
    added = sc["latency_many"]["added"]["gateway"]["p99_ms"]
    out.append(
        {
            "target": f"latency_many: added p99 <= 1 ms ({sc['latency_many']['sessions']} sessions)",
            "value": added,
            "limit": 1.0,
            "met": added <= 1.0,
        }
    )
    last = [p for p in sc["idle"]["gateway"]["points"] if "error" not in p][-1]
    out.append(
        {
            "target": f"idle: <= 64 KiB per session at {last['requested']} sessions",
            "value": last["kib_per_session"],
            "sessions_reached": last["sessions"],
            "limit": 64,
            "met": last["kib_per_session"] <= 64 and last["sessions"] >= last["requested"],
        }
    )
    overhead = sc["console_open"]["gateway_overhead_ms"]["p50_ms"]
    out.append(
        {
            "target": "console open overhead p50 <= 10 ms",
            "value": overhead,
            "limit": 10.0,
            "met": overhead <= 10,
        }
    )
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    sc = data["scenarios"]
    meta = data["meta"]
    cols = [*SYSTEMS, "forwarder"]
    lines = [
        f"Run {meta['started']} on {meta['cpus']} CPU(s), {meta['python']}, aiohttp {meta['aiohttp']}, "
        f"loop {meta['loop']}{' (quick)' if meta['quick'] else ''}; load average before/after "
        f"{meta['loadavg_before']} / {meta['loadavg_after']}.",
        "",
        "| scenario | " + " | ".join(LABELS[c] for c in cols) + " | gateway / direct |",
        "| --- | " + " | ".join("---:" for _ in cols) + " | ---: |",
    ]

    def row(label: str, values: dict[str, Any], ratio: float | None, digits: int = 1) -> None:
        cells = [_f(values.get(c), digits) for c in cols]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {_f(ratio, 2) if ratio is not None else ''} |"
        )

    for name, label in (("throughput_64k", "64 KiB messages"), ("throughput_mix", "VNC mix")):
        r = sc[name]["results"]
        row(
            f"throughput, {label}, MB/s",
            {k: v["mb_per_s"] for k, v in r.items()},
            r["gateway"]["mb_per_s"] / r["direct"]["mb_per_s"],
        )
        row(
            f"relay CPU per GB, {label}, core·s",
            {k: v["relay_core_seconds_per_gb"] for k, v in r.items() if k != "direct"},
            None,
            2,
        )
    for name in ("latency_one", "latency_many"):
        s = sc[name]
        label = f"{s['sessions']} session{'s' if s['sessions'] > 1 else ''}"
        if name == "latency_many":
            label += f" x {s['rate_per_session']:g}/s"
        for q in ("p50", "p99", "p999"):
            row(
                f"round trip {q.replace('p999', 'p99.9')}, {label}, ms",
                {k: v[f"{q}_ms"] for k, v in s["results"].items()},
                None,
                3,
            )
        for q in ("p50", "p99", "p999"):
            row(
                f"added {q.replace('p999', 'p99.9')} over direct, {label}, ms",
                {k: v[f"{q}_ms"] for k, v in s["added"].items()},
                None,
                3,
            )
    idle = sc["idle"]
    levels = sorted({p["requested"] for v in idle.values() for p in v["points"]})
    for level in levels:
        mem: dict[str, Any] = {}
        cpu: dict[str, Any] = {}
        reached: list[str] = []
        for key, v in idle.items():
            point = next((p for p in v["points"] if p["requested"] == level), None)
            if point is None:
                continue
            if "error" in point:
                reached.append(f"{key}: failed after {point['sessions']}")
                continue
            mem[key] = point["kib_per_session"]
            cpu[key] = point["cpu_percent"]
            if point["sessions"] != level:
                reached.append(f"{key}: {point['sessions']}")
        note = f" (reached {', '.join(reached)})" if reached else ""
        row(f"idle {level} sessions{note}: memory per session, KiB", mem, None)
        row(f"idle {level} sessions{note}: CPU, % of a core", cpu, None, 2)
    co = sc["console_open"]
    row(
        "console open (request → first RFB byte) p50, ms",
        {k: v["p50_ms"] for k, v in co["results"].items()},
        None,
        2,
    )
    row("console open p99, ms", {k: v["p99_ms"] for k, v in co["results"].items()}, None, 2)
    lines.append(
        f"| console open overhead (gateway open - cloud API time) p50 / p99, ms | | | "
        f"{co['gateway_overhead_ms']['p50_ms']:.2f} / {co['gateway_overhead_ms']['p99_ms']:.2f} | | |"
    )
    scal = sc["scaling"]
    for key, v in scal["results"].items():
        dist = f", sessions per worker {v['sessions_per_worker']}" if "sessions_per_worker" in v else ""
        lines.append(
            f"| scaling, {scal['sessions']} sessions, {key}{dist}: MB/s (relay cores) | | | "
            f"{v['mb_per_s']:.1f} ({v['relay_cores']:.2f}) | | |"
        )
    lines += ["", "| target | measured | limit | met |", "| --- | ---: | ---: | :---: |"]
    for t in data["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {t['limit']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = data["scenarios"]
    colors = {"direct": "#4c72b0", "websockify": "#dd8452", "gateway": "#55a868", "forwarder": "#999999"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(f"novnc-gateway relay benchmark ({data['meta']['started']}, {data['meta']['cpus']} CPUs)")

    ax = axes[0][0]
    keys = [k for k in (*SYSTEMS, "forwarder") if k in sc["throughput_64k"]["results"]]
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        vals = [sc[n]["results"][key]["mb_per_s"] for n in ("throughput_64k", "throughput_mix")]
        ax.bar([x + i * width for x in (0, 1)], vals, width, label=key, color=colors[key])
    ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], ["64 KiB messages", "VNC mix"])
    ax.set_title("single-session throughput (MB/s)")
    ax.legend(fontsize=8)

    for ax, name in ((axes[0][1], "latency_one"), (axes[0][2], "latency_many")):
        s = sc[name]
        keys = [k for k in (*SYSTEMS, "forwarder") if k in s["results"]]
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            vals = [s["results"][key][f"{q}_ms"] for q in ("p50", "p99", "p999")]
            ax.bar([x + i * width for x in range(3)], vals, width, label=key, color=colors[key])
        ax.set_xticks([x + 0.4 - width / 2 for x in range(3)], ["p50", "p99", "p99.9"])
        ax.set_title(f"round trip, {s['sessions']} session(s) (ms)")
        ax.legend(fontsize=8)

    ax = axes[1][0]
    for key, v in sc["idle"].items():
        pts = [p for p in v["points"] if "error" not in p]
        ax.plot(
            [p["sessions"] for p in pts],
            [p["kib_per_session"] for p in pts],
            "o-",
            label=key,
            color=colors[key],
        )
    ax.axhline(64, ls="--", color="red", lw=0.8, label="64 KiB target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("idle sessions: memory per session (KiB, log)")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    co = sc["console_open"]
    keys = list(co["results"])
    ax.bar(keys, [co["results"][k]["p50_ms"] for k in keys], color=[colors[k] for k in keys], label="p50")
    ax.bar(
        ["gateway overhead"],
        [co["gateway_overhead_ms"]["p50_ms"]],
        color="#8172b3",
        label="gateway - API time",
    )
    ax.set_title("console open p50 (ms)")
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[1][2]
    res = sc["scaling"]["results"]
    keys = list(res)
    ax.bar(keys, [res[k]["mb_per_s"] for k in keys], color=[colors.get(k, "#55a868") for k in keys])
    ax.set_title(f"scaling: {sc['scaling']['sessions']} sessions, aggregate MB/s")
    ax.tick_params(axis="x", labelsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
