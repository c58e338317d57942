"""The benchmark harness still works: a --quick run end to end, and its byte protocol.

Not a performance test: no figure is compared with a target here; only that every scenario ran
every system and that the three output files were written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.protocol import (
    CLIENT_HANDSHAKE,
    PONG_SIZE,
    SERVER_STEPS,
    Profile,
    SourceParser,
    ping,
    pong_id,
    profile,
    stream_command,
)
from tests.support.vnc_servers import XVNC

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("throughput_64k", "throughput_mix", "latency_one", "latency_many", "console_open")
SYSTEMS = ("direct", "websockify", "gateway")
# The same streams with TLS upstream and on both hops; nginx and the forwarder beside every relay.
STREAMS = (
    "throughput_64k",
    "throughput_mix",
    "tls_upstream_64k",
    "tls_upstream_mix",
    "tls_both_64k",
    "tls_both_mix",
)
YARDSTICKS = ("nginx", "forwarder")


def test_profiles_are_deterministic_and_exact() -> None:
    mix = profile("mix", 3 << 20)
    assert mix.total == 3 << 20
    assert mix == profile.__wrapped__("mix", 3 << 20)  # the same sizes on both sides, every run
    assert min(mix.sizes) >= 1 and max(mix.sizes) <= 512 * 1024
    assert len(set(mix.sizes)) > 10  # a mix, not one size
    assert profile("64k", 1 << 20).sizes == (65536,) * 16


def test_source_parser_answers_pings_and_commands_across_chunk_boundaries() -> None:
    stream = CLIENT_HANDSHAKE + ping(7) + stream_command("64k", 1 << 20) + ping(0xFFFFFFFF)
    parser = SourceParser()
    out: list[Profile | bytes] = []
    for i in range(len(stream)):  # one byte at a time: the worst split websockify could produce
        out += parser.feed(stream[i : i + 1])
    # Each handshake step answered after the client's step before it, as a real VNC server does.
    assert out[:3] == list(SERVER_STEPS[1:])
    out = out[3:]
    assert len(out) == 3
    assert isinstance(out[0], bytes) and len(out[0]) == PONG_SIZE and pong_id(out[0]) == 7
    assert out[1] == profile("64k", 1 << 20)
    assert isinstance(out[2], bytes) and pong_id(out[2]) == 0xFFFFFFFF


def test_source_parser_rejects_a_foreign_stream() -> None:
    with pytest.raises(ValueError):
        SourceParser().feed(b"RFB 003.003\n\x01\x01")


@pytest.mark.slow
def test_quick_run_measures_every_scenario_for_every_system(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output.decode(errors="replace")[-4000:]

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["meta"]["quick"] is True
    for name in SCENARIOS:
        results = data["scenarios"][name]["results"]
        for system in SYSTEMS:
            assert system in results, (name, system)
    for name in STREAMS:
        for system in (*SYSTEMS, *YARDSTICKS):
            assert data["scenarios"][name]["results"][system]["mb_per_s"] > 0, (name, system)
        assert name in data["ratios"]
    assert data["scenarios"]["tls_both_mix"]["tls"]["gateway"].startswith("serves HTTPS")
    for added in data["scenarios"]["latency_many"]["added"].values():
        # A difference of percentiles from different moments is left out where it is noise: never < 0.
        assert all(added[q] is None or added[q] > 0 for q in ("p50_ms", "p99_ms", "p999_ms")), added
    cpc = data["scenarios"]["consoles_per_core"]
    # The ramp may stop after its first level on a loaded machine (it says why); it always measures both.
    assert [p["consoles"] for p in cpc["points"]] in ([5], [5, 10]), cpc
    assert all(p["gateway"]["n"] > 0 and p["direct"]["n"] > 0 for p in cpc["points"])
    assert len(cpc["points"]) == 2 or "over 5 ms" in cpc["stopped_by"] or "rate" in cpc["stopped_by"]
    for system in SYSTEMS:
        points = data["scenarios"]["idle"][system]["points"]
        assert points and all(p["sessions"] == p["requested"] for p in points), (system, points)
    scaling = data["scenarios"]["scaling"]["results"]
    assert {"direct", "websockify", "gateway_1w", "gateway_2w"} <= set(scaling)
    assert sum(scaling["gateway_2w"]["sessions_per_worker"]) == data["scenarios"]["scaling"]["sessions"]
    assert data["scenarios"]["console_open"]["gateway_api_ms"]["p50_ms"] > 0
    assert {t["target"].split(":")[0] for t in data["targets"]} >= {
        "throughput_64k",
        "latency_many",
        "idle",
        "tls_upstream_64k",
        "tls_upstream_mix",
    }
    assert any(t["target"].startswith("consoles per core") for t in data["targets"])
    _recording_measured(data)
    assert "| target |" in (tmp_path / "latest.md").read_text()
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _recording_measured(data: dict[str, Any]) -> None:
    """bench/recording.py: recorded and plain gateways streamed, every Xvnc workload recorded and compared,
    the long recording sought in Chromium, the targets stated."""
    rec = data["scenarios"]["recording"]
    for name in ("64k", "mix"):
        results = rec["throughput"][name]["results"]
        assert results["gateway"]["mb_per_s"] > 0 and results["gateway_recorded"]["sealed_mb_per_s"] > 0
    assert rec["throughput"]["stored_per_streamed"] > 0
    if XVNC is not None and shutil.which("xterm") and shutil.which("chromium"):
        workloads = rec["xvnc"]["results"]
        assert set(workloads) == {"idle", "typing", "log", "pager"}
        for measured in workloads.values():
            sizes = measured["bytes"]
            assert sizes["segments"] >= 1 and sizes["stored_segments"] > 0, measured
            # websockify writes every byte it relays escaped: its record is larger than the stream.
            assert sizes["websockify_record_recorded"] > sizes["wire_recorded"] > 0, measured
        assert rec["xvnc"]["seek"]["seek_median_s"] > 0
    names = {t["target"].split(":")[0] for t in data["targets"]}
    assert {"recording_64k", "recording_mix", "recording_seek"} <= names
