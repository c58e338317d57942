"""Session recording's numbers (docs/recording.md "Numbers"): what a recorded console costs.

1. Bytes per hour on a real Xvnc for four workloads (an idle shell, typing, scrolling log output, paging
   through a file), each for `seconds` through the real gateway in headless Chromium's real noVNC. Two
   consoles watch the same screen at once, one recorded (screen and input) and one not, and for each
   workload the bench compares the bytes each browser received (the recorded one's encodings are
   restricted to stateless ones: that is the wire cost of seeking), the stored recording (header,
   segments, index, seal) and websockify's `--record` file of each session (the novncproxy in front of
   Xvnc is a real websockify run with `--record`).
2. Relay throughput and CPU per GB with recording on against off: two gateways taking turns in the same
   run on the bench source's streams sent as valid FramebufferUpdates (so the recorder frames them).
3. Time to seek to the middle of a one-hour recording in Chromium's player: the hour is made with the
   recording writer from the workloads' real recordings, one after another, time-shifted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench import scenarios
from bench.client import new_http, open_session
from bench.protocol import FRAMED, Profile, profile
from bench.source import LOOPBACK
from bench.systems import Gateway, Source

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

Log = Callable[[str], None]

XTERM = shutil.which("xterm")
XVNC = shutil.which("Xvnc")
CHROMIUM = shutil.which("chromium")
SCREEN = "1024x768"
TERMINAL = "170x58+0+0"  # xterm's default 6x13 font: the whole 1024x768 screen
RECORDED_ID = "7ec0c0de-0000-4000-8000-0000000000a1"
PLAIN_ID = "7ec0c0de-0000-4000-8000-0000000000b2"
HOUR = 3600.0
MB = 1e6
WORKLOADS = {
    "idle": "idle shell",
    "typing": "typing at a shell, 5 keys/s",
    "log": "scrolling log output, 20 lines/s",
    "pager": "paging through a file, a full screen a second",
}
TYPING_RATE = 5.0  # keys a second: a steady typist
PAGE_EVERY = 1.0  # seconds between pages
LOG_RATE = 20.0  # lines a second
COMMANDS = (
    "uptime",
    "ls -l /etc/apt",
    "df -h /",
    "echo the quick brown fox jumps over the lazy dog",
    "cat /etc/hostname",
    "id",
    "date -u",
    "ps -o pid,comm",
)
FIRST_FRAME = 0.5  # seconds after connecting that count as the first full frame
THROUGHPUT_TARGET = 0.9  # recording on: at least 90% of the throughput with recording off
# Counts the binary WebSocket payload a page receives: the RFB stream the gateway sent it.
_COUNT_BYTES = """(() => {
    const Native = window.WebSocket;
    window.__benchBytes = 0;
    window.WebSocket = class extends Native {
        constructor(...args) {
            super(...args);
            this.addEventListener("message", (event) => {
                if (event.data instanceof ArrayBuffer) window.__benchBytes += event.data.byteLength;
            });
        }
    };
})();"""
_LOG_PROGRAM = """
import random, sys, time
rate = float(sys.argv[1])
rng = random.Random(12)
paths = ("/api/v1/orders", "/api/v1/items", "/healthz", "/static/app.js", "/login", "/api/v1/search")
started = time.monotonic()
n = 0
while True:
    n += 1
    print(
        time.strftime("%b %d %H:%M:%S"), "web-01 app[4121]: INFO", rng.choice(("GET", "POST", "PUT")),
        f"{rng.choice(paths)}/{rng.randrange(10**6)} status={rng.choice((200, 200, 200, 201, 304, 404))}",
        f"bytes={rng.randrange(200, 90000)} duration_ms={rng.randrange(1, 900)}",
        f"id={rng.getrandbits(64):016x}",
        flush=True,
    )
    time.sleep(max(0.0, started + n / rate - time.monotonic()))
"""


@dataclass(frozen=True)
class RecordingPlan:
    """How long each part runs: `full()` for `make bench`, `smoke()` for `--quick`."""

    quick: bool
    seconds: float  # each workload; also the bench gateways' recording.segment_seconds
    stream_bytes: int  # throughput, per round
    rounds: int
    long_seconds: int  # the long recording to seek in (an hour)
    seeks: int  # cold seeks to its middle, each on a fresh page

    @classmethod
    def full(cls) -> RecordingPlan:
        return cls(quick=False, seconds=30.0, stream_bytes=32 << 20, rounds=3, long_seconds=3600, seeks=3)

    @classmethod
    def smoke(cls) -> RecordingPlan:
        return cls(quick=True, seconds=2.0, stream_bytes=1 << 20, rounds=1, long_seconds=60, seeks=1)


def new_keys() -> tuple[str, str]:
    """An HMAC key and an encryption key: the bench records as a deployment that encrypts at rest does."""
    from gateway.auth.cookie import generate_key

    return generate_key(), generate_key()


def recording_config(directory: Path, segment_seconds: float, keys: tuple[str, str]) -> dict[str, Any]:
    """The `[recording]` section of a bench gateway: the local store, signed and encrypted (AES-GCM)."""
    return {
        "default": "off",
        "store": "local",
        "directory": str(directory),
        "segment_seconds": segment_seconds,
        "hmac_keys": [keys[0]],
        "encryption_keys": [keys[1]],
    }


def per_hour(total: int, once: int, seconds: float, *, keyframed: bool) -> float:
    """MB an hour of a workload costs, from `total` bytes over `seconds`. A recorded stream starts every
    segment (`seconds` long here) with a full frame, so its hour is `total` scaled; otherwise `once`
    bytes (an unrecorded stream's first full frame; a recording's header, metadata and seal) come once
    an hour and only the rest recurs."""
    if keyframed:
        return total * HOUR / seconds / MB
    return (once + (total - once) * HOUR / seconds) / MB


async def run(workdir: Path, source: Source, loop: str, quick: bool, log: Log) -> dict[str, Any]:
    """Every recording figure; the Xvnc part is skipped (and says so) where its programs are missing."""
    plan = RecordingPlan.smoke() if quick else RecordingPlan.full()
    out: dict[str, Any] = {
        "plan": {"seconds": plan.seconds, "stream_bytes": plan.stream_bytes},
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    log("recording: relay throughput with recording on and off")
    out["throughput"] = await relay_throughput(workdir, source, loop, plan)
    missing = [n for n, path in (("Xvnc", XVNC), ("xterm", XTERM), ("chromium", CHROMIUM)) if not path]
    if missing:
        out["xvnc"] = {"skipped": f"not installed: {', '.join(missing)} (scripts/setup.sh --test)"}
    else:
        out["xvnc"] = await xvnc_workloads(workdir, source, loop, plan, log)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


# -- relay throughput, recording on against off ---------------------------------------------------


async def relay_throughput(workdir: Path, source: Source, loop: str, plan: RecordingPlan) -> dict[str, Any]:
    """Two gateways, one recording every console (required), taking turns round by round on the same
    stream. Each round is a console of its own: opened, streamed, closed and, when recorded, sealed.

    `mb_per_s` is the relay's rate (the client's last byte): the recorder only appends on that path and
    compresses behind it, in a worker thread. `sealed_mb_per_s` runs until the recording is sealed: the
    rate a recorded console can keep up. The recording gateway's `max_pending` is raised above one round,
    so a round that outruns the compressor is measured rather than failed (in service it would fail the
    recording once that far behind). CPU per GB is over the whole round: relay, compression, store."""
    store = workdir / "recording-throughput"

    def recorded(config: dict[str, Any]) -> None:
        section = recording_config(store, 30.0, new_keys())
        config["recording"] = section | {
            "default": "required",
            "max_pending": max(64 << 20, 4 * plan.stream_bytes),
        }

    off = Gateway(workdir, source, loop=loop)
    on = Gateway(workdir, source, loop=loop, tweak=recorded)
    systems: dict[str, Gateway] = {"gateway": off, "gateway_recorded": on}
    out: dict[str, Any] = {"rounds": plan.rounds, "bytes_per_round": plan.stream_bytes}
    try:
        for system in systems.values():
            await system.start()
        async with new_http() as http:
            for name in ("64k", "mix"):
                prof = profile(name + FRAMED, plan.stream_bytes)
                rates: dict[str, list[float]] = {k: [] for k in systems}
                sealed: list[float] = []
                cpu = dict.fromkeys(systems, 0.0)
                for _ in range(plan.rounds):
                    for key, system in systems.items():
                        rate, until_sealed, spent = await _round(
                            http, system, source, prof, store if system is on else None
                        )
                        rates[key].append(rate)
                        cpu[key] += spent
                        if until_sealed is not None:
                            sealed.append(until_sealed)
                gigabytes = prof.total * plan.rounds / 1e9
                result = {
                    key: {
                        "mb_per_s": round(scenarios.median(v), 1),
                        "rounds_mb_per_s": [round(x, 1) for x in v],
                        "relay_core_seconds_per_gb": round(cpu[key] / gigabytes, 3),
                    }
                    for key, v in rates.items()
                }
                result["gateway_recorded"]["sealed_mb_per_s"] = round(scenarios.median(sealed), 1)
                plain, rec_rate = result["gateway"]["mb_per_s"], result["gateway_recorded"]["mb_per_s"]
                out[name] = {
                    "profile": prof.name,
                    "messages_per_round": len(prof.sizes),
                    "results": result,
                    "recorded_per_plain": round(rec_rate / plain, 3) if plain else None,
                }
    finally:
        for system in systems.values():
            system.stop()
    raw = 2 * plan.rounds * plan.stream_bytes
    stored = sum(p.stat().st_size for p in store.rglob("seg-*"))
    out["stored_per_streamed"] = round(stored / raw, 4)
    return out


async def _round(
    http: aiohttp.ClientSession, system: Gateway, source: Source, prof: Profile, store: Path | None
) -> tuple[float, float | None, float]:
    """One console on `system` streams `prof` and closes; with `store` (recorded), until its recording
    is sealed there. (MB/s to the last byte, MB/s until sealed or None, the relay's CPU seconds.)"""
    from tests.support.polling import wait_for

    before = _listing(store) if store is not None else set()
    meter = scenarios.CPUMeter(system, source)
    session = await open_session(http, system.target())
    cpu = meter.sample()[0]
    started = time.perf_counter()
    seconds = await session.stream(prof)
    await session.close()
    until_sealed = None
    if store is not None:
        (recording,) = await wait_for(lambda: _listing(store) - before, 30, "the round's recording")
        await wait_for((recording / "seal").exists, 300, "the round's recording sealed")
        until_sealed = prof.total / (time.perf_counter() - started) / MB
    return prof.total / seconds / MB, until_sealed, meter.sample()[0] - cpu


# -- the screen side: Xvnc and the programs on it ---------------------------------------------------


def _pager_file(workdir: Path) -> Path:
    """Real text to page through: the standard library's asyncio sources, a few thousand lines."""
    path = workdir / "pager.txt"
    if not path.exists():
        sources = sorted(Path(asyncio.__file__).parent.glob("*.py"))
        path.write_text("".join(p.read_text() for p in sources))
    return path


def _program(workload: str, workdir: Path) -> list[str]:
    if workload == "log":
        return [sys.executable, "-u", "-c", _LOG_PROGRAM, str(LOG_RATE)]
    if workload == "pager":
        return ["less", "-S", str(_pager_file(workdir))]
    return ["bash", "--norc", "--noprofile"]


@contextlib.contextmanager
def _xterm(display: str, workload: str, workdir: Path) -> Iterator[Path]:
    """xterm filling the screen, running the workload's program; yields a file that exists once it runs."""
    assert XTERM is not None
    ready = workdir / f"xterm-{workload}.ready"
    ready.unlink(missing_ok=True)
    shell = ["sh", "-c", 'touch "$0"; exec "$@"', str(ready), *_program(workload, workdir)]
    env = {**os.environ, "DISPLAY": display, "PS1": "bench@web-01:~$ ", "HOME": str(workdir), "LANG": "C"}
    proc = subprocess.Popen(  # noqa: S603 - a fixed program
        [XTERM, "-geometry", TERMINAL, "-e", *shell],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield ready
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- 1. bytes per hour ------------------------------------------------------------------------------


async def _act(workload: str, page: Page, until: float) -> None:
    """What the operator does on the recorded console until `until` (loop time): keys at a steady pace."""
    loop = asyncio.get_running_loop()
    if workload == "typing":
        text = "\n".join(COMMANDS * 40) + "\n"
        period, keys = 1.0 / TYPING_RATE, iter(text)
    elif workload == "pager":
        period, keys = PAGE_EVERY, iter(" " * 100_000)
    else:
        return
    due = loop.time() + period
    while due < until:
        await asyncio.sleep(max(0.0, due - loop.time()))
        key = next(keys)
        await page.keyboard.press({"\n": "Enter", " ": "Space"}.get(key, key))
        due += period


async def _received(page: Page) -> int:
    return int(await page.evaluate("window.__benchBytes"))


def _listing(directory: Path) -> set[Path]:
    return set(directory.iterdir()) if directory.exists() else set()


async def xvnc_workloads(
    workdir: Path, source: Source, loop: str, plan: RecordingPlan, log: Log
) -> dict[str, Any]:
    """Each workload on one Xvnc, watched at once by a recorded and an unrecorded console in Chromium."""
    from gateway.sim.demo import DemoCloud
    from gateway.sim.ecs_api import SimServer
    from tests.support.browser import chromium, new_page, sign_in
    from tests.support.polling import wait_for
    from tests.support.vnc_servers import xvnc_session

    workdir = workdir / "recording-xvnc"
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "recordings"
    ws_record = workdir / "websockify-record"
    ws_record.mkdir()
    keys = new_keys()
    servers = (SimServer(id=RECORDED_ID, name="recorded"), SimServer(id=PLAIN_ID, name="plain"))
    results: dict[str, Any] = {}
    with xvnc_session(workdir / "xvnc.log", desktop="web-01", geometry=SCREEN) as xvnc:
        cloud = DemoCloud(workdir / "cloud", servers=servers, proxy_record=ws_record / "session")
        for server in servers:
            cloud.rfb_addr[server.id] = (xvnc.host, xvnc.port)
        await cloud.start()

        def tweak(config: dict[str, Any]) -> None:
            config["clouds"] = [{**cloud.cloud_config(), "name": "bench"}]
            config["upstream"] = {"allowed_hosts": [LOOPBACK], "ca_file": str(cloud.ca_file)}
            rule = {"users": ["bench"], "permission": "control"}
            recorded = {"name": "recorded", "server_ids": [RECORDED_ID], "record": "required"}
            config["policy"] = {
                "rules": [
                    {**rule, **recorded, "record_input": True},
                    {**rule, "name": "plain", "server_ids": [PLAIN_ID], "record": "off"},
                ],
                "reviewers": [{"name": "bench", "users": ["bench"], "typed_text": True}],
            }
            config["recording"] = recording_config(store, plan.seconds, keys)

        gateway = Gateway(workdir, source, loop=loop, tweak=tweak)
        try:
            await gateway.start()
            async with chromium() as browser:
                context, page, _ = await new_page(browser)
                await context.add_init_script(_COUNT_BYTES)
                await sign_in(page, gateway.origin, "bench", "bench")
                await page.close()
                for workload, label in WORKLOADS.items():
                    log(f"recording: {label}, {plan.seconds:g} s")
                    with _xterm(xvnc.display, workload, workdir) as ready:
                        await wait_for(ready.exists, 20, f"xterm running the {workload} workload")
                        results[workload] = await _workload(
                            workload, context, gateway.origin, store, ws_record, plan.seconds
                        )
                log(f"recording: a {plan.long_seconds} s recording from those, and seeks to its middle")
                recordings = {k: v["recording"] for k, v in results.items()}
                long = await _long_recording(store, keys, recordings, plan.long_seconds)
                long |= await _seeks(context, gateway.origin, plan.seeks, long["duration_ms"] // 2)
                await context.close()
        finally:
            gateway.stop()
            await cloud.stop()
    return {
        "screen": SCREEN,
        "seconds": plan.seconds,
        "segment_seconds": plan.seconds,
        "results": results,
        "seek": long,
    }


# -- 3. seeking in an hour --------------------------------------------------------------------------

LONG_ID = "bench-long"
# What the long recording is made of, in turn, each part one of the workloads' recordings: a quarter of
# the time typing, a quarter log output, three eighths idle, an eighth paging through a file.
LONG_MIX = ("typing", "log", "idle", "typing", "idle", "pager", "idle", "log")


async def _long_recording(
    store_dir: Path, secrets: tuple[str, str], recordings: dict[str, str], seconds: int
) -> dict[str, Any]:
    """A sealed recording `seconds` long in the gateway's store, written with the recording writer from
    the workloads' real recordings one after another (LONG_MIX), time-shifted segment for segment (so
    each starts at its keyframe as the original did), input and typed text included."""
    import dataclasses

    from gateway.recording.format import INPUT, SERVER, Keyring, RecordingReader, RecordingWriter
    from gateway.recording.local import LocalStore

    keys = Keyring.from_secrets([secrets[0]], [secrets[1]])
    store = LocalStore(store_dir)
    parts: dict[str, list[Any]] = {}  # workload -> its segments
    header = None
    for workload, rid in recordings.items():
        info = await store.info(rid)
        header_bytes = await store.read_header(rid)
        assert info is not None and header_bytes is not None, rid
        reader = RecordingReader(keys, header_bytes)
        header = header or reader.header
        parts[workload] = []
        for number in range(info.segments):
            data = await store.read_segment(rid, number)
            assert data is not None, (rid, number)
            parts[workload].append(reader.segment(number, data))
    assert header is not None
    header = dataclasses.replace(header, id=LONG_ID, start=time.time() - seconds)
    writer = RecordingWriter(header, keys)  # cut where the originals were cut
    await store.begin(LONG_ID, writer.header_bytes, header.meta())
    writer.marker(0, "opened")
    t = turn = 0
    while t < seconds * 1000:
        for segment in parts[LONG_MIX[turn % len(LONG_MIX)]]:
            for record in segment.records:
                if record.kind in (SERVER, INPUT):
                    feed = writer.server if record.kind == SERVER else writer.client
                    feed(t + record.t - segment.start, record.data)
            t += max(1, segment.end - segment.start)
            draft = writer.cut(t)
            await store.put_segment(LONG_ID, draft.number, await asyncio.to_thread(writer.build, draft))
        turn += 1
    writer.marker(t, "closed", code=1000)
    draft = writer.close(t)
    await store.put_segment(LONG_ID, draft.number, await asyncio.to_thread(writer.build, draft))
    index, seal = writer.finish()
    await store.finish(LONG_ID, index, seal, writer.final_meta())
    info = await store.info(LONG_ID)
    assert info is not None
    return {"recording": LONG_ID, "duration_ms": t, "segments": info.segments, "stored_bytes": info.size}


async def _seeks(context: BrowserContext, origin: str, count: int, target_ms: int) -> dict[str, Any]:
    """Cold seeks to `target_ms`, each on a fresh player page (segments are cached per page), timed in
    the browser from the call to the frame on the canvas; the page's opening is timed apart (it verifies
    the whole recording once)."""
    from tests.support.player import open_player, seek_seconds

    loop = asyncio.get_running_loop()
    opens, seeks = [], []
    for _ in range(count):
        page = await context.new_page()
        started = loop.time()
        await open_player(page, origin, LONG_ID)
        opens.append(loop.time() - started)
        seeks.append(await seek_seconds(page, target_ms))
        await page.close()
    return {
        "target_ms": target_ms,
        "seek_s": [round(x, 3) for x in seeks],
        "seek_median_s": round(scenarios.median(seeks), 3),
        "open_median_s": round(scenarios.median(opens), 3),
    }


async def _open(context: BrowserContext, origin: str, server_id: str) -> Page:
    from tests.support.polling import wait_for

    page = await context.new_page()
    await page.goto(f"{origin}/console/bench/{server_id}")
    status = page.get_by_test_id("console-status")

    async def connected() -> bool:
        return await status.get_attribute("data-state") == "connected"

    await wait_for(connected, 20, f"console {server_id} connected")
    return page


async def _workload(
    workload: str, context: BrowserContext, origin: str, store: Path, ws_record: Path, seconds: float
) -> dict[str, Any]:
    """One workload: open the recorded and the unrecorded console, act, close, measure every stream."""
    from tests.support.polling import wait_for

    loop = asyncio.get_running_loop()
    before, ws_before = _listing(store), _listing(ws_record)

    async def new_record(seen: set[Path]) -> Path:
        (path,) = await wait_for(lambda: _listing(ws_record) - seen, 10, "websockify's record file")
        return path

    recorded = await _open(context, origin, RECORDED_ID)
    opened = {"recorded": loop.time()}
    ws_files = {"recorded": await new_record(ws_before)}
    plain = await _open(context, origin, PLAIN_ID)
    opened["plain"] = loop.time()
    ws_files["plain"] = await new_record(ws_before | {ws_files["recorded"]})
    await recorded.bring_to_front()
    # The unrecorded console's first full frame, which an hour has once (a cut-off, not a wait).
    await asyncio.sleep(FIRST_FRAME)
    first_frame = await _received(plain)
    # Closed just short of one segment: the recording holds one, with its keyframe, as each of an hour's.
    end = opened["recorded"] + seconds - 1.0
    await _act(workload, recorded, end)
    await asyncio.sleep(max(0.0, end - loop.time()))
    closed = loop.time()
    wire = {"recorded": await _received(recorded), "plain": await _received(plain)}
    await recorded.close()
    await plain.close()
    (recording,) = await wait_for(lambda: _listing(store) - before, 10, "the recording's directory")
    await wait_for((recording / "seal").exists, 60, "the recording sealed")
    for path in ws_files.values():
        await wait_for(lambda p=path: _ended(p), 10, "websockify's record file closed")
    parts = _parts(recording)
    stored = sum(parts.values())
    growing = sum(v for k, v in parts.items() if k.startswith("seg-") or k == "index")
    websockify = {k: p.stat().st_size for k, p in ws_files.items()}
    # The recorded console ran as long as its recording (which began a little before its page said it
    # was connected); the unrecorded one from its page's connection.
    lasted = {"recorded": json.loads((recording / "meta.json").read_bytes())["duration_ms"] / 1000}
    lasted["plain"] = closed - opened["plain"]
    hour = {
        "wire_recorded": per_hour(wire["recorded"], 0, lasted["recorded"], keyframed=True),
        "wire_plain": per_hour(wire["plain"], first_frame, lasted["plain"], keyframed=False),
        # Segments and index grow with time; header, listing metadata and seal are once a recording.
        "stored": per_hour(stored, stored - growing, lasted["recorded"], keyframed=False),
        "websockify_record_recorded": per_hour(websockify["recorded"], 0, lasted["recorded"], keyframed=True),
    }
    # websockify writes each frame escaped, at the same growth for the first frame as for the rest.
    hour["websockify_record_plain"] = hour["wire_plain"] * websockify["plain"] / max(1, wire["plain"])
    return {
        "seconds": round(lasted["recorded"], 2),
        "recording": recording.name,
        "bytes": {
            "wire_recorded": wire["recorded"],
            "wire_plain": wire["plain"],
            "first_frame_plain": first_frame,
            "stored": stored,
            "stored_segments": sum(v for k, v in parts.items() if k.startswith("seg-")),
            "stored_index": parts.get("index", 0),
            "segments": sum(1 for k in parts if k.startswith("seg-")),
            "websockify_record_recorded": websockify["recorded"],
            "websockify_record_plain": websockify["plain"],
        },
        "mb_per_hour": {k: round(v, 3) for k, v in hour.items()},
    }


def _ended(path: Path) -> bool:
    """websockify closes a session's record with `'EOF'];`."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 16))
        return f.read().endswith(b"'EOF'];\n")


def _parts(recording: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in recording.iterdir() if not p.name.startswith(".")}


# -- report ---------------------------------------------------------------------------------------


def targets(rec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 12's two targets: throughput with recording on >= 90% of off; seek in an hour < 1 s."""
    if not rec:
        return []
    out = []
    for name in ("64k", "mix"):
        ratio = rec["throughput"][name]["recorded_per_plain"]
        out.append(
            {
                "target": f"recording_{name}: throughput recorded >= {THROUGHPUT_TARGET:.0%} of not recorded",
                "value": ratio,
                "limit": THROUGHPUT_TARGET,
                "met": ratio is not None and ratio >= THROUGHPUT_TARGET,
            }
        )
    seek = rec["xvnc"].get("seek")
    length = f"{seek['duration_ms'] / 60000:.0f}-minute" if seek else "one-hour"
    out.append(
        {
            "target": f"recording_seek: to the middle of a {length} recording < 1 s (Chromium)",
            "value": seek["seek_median_s"] if seek else rec["xvnc"].get("skipped"),
            "limit": 1.0,
            "met": bool(seek) and seek["seek_median_s"] < 1.0,
        }
    )
    return out


def markdown(rec: dict[str, Any] | None) -> list[str]:
    """The recording tables for latest.md."""
    if not rec:
        return []
    lines = ["", 'Recording (bench/recording.py, docs/recording.md "Numbers"):', ""]
    lines += [
        "| recording: throughput | not recorded MB/s | recorded MB/s | recorded / not |"
        " recorded, until sealed MB/s | CPU per GB, not recorded / recorded, core·s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("64k", "mix"):
        t = rec["throughput"][name]
        off, on = t["results"]["gateway"], t["results"]["gateway_recorded"]
        lines.append(
            f"| {t['profile']} | {off['mb_per_s']} | {on['mb_per_s']} | {t['recorded_per_plain']} | "
            f"{on['sealed_mb_per_s']} | "
            f"{off['relay_core_seconds_per_gb']} / {on['relay_core_seconds_per_gb']} |"
        )
    xvnc = rec["xvnc"]
    if "skipped" in xvnc:
        return [*lines, "", f"Xvnc workloads skipped: {xvnc['skipped']}"]
    lines += [
        "",
        f"| MB per hour, {xvnc['screen']} xterm on Xvnc | to the browser, recorded | to the browser, not"
        " recorded | stored recording | websockify --record, recorded | websockify --record, not recorded |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workload, label in WORKLOADS.items():
        h = xvnc["results"][workload]["mb_per_hour"]
        cells = (
            "wire_recorded",
            "wire_plain",
            "stored",
            "websockify_record_recorded",
            "websockify_record_plain",
        )
        lines.append(f"| {label} | " + " | ".join(f"{h[c]:,.1f}" for c in cells) + " |")
    seek = xvnc["seek"]
    lines += [
        "",
        f"Seek: a {seek['duration_ms'] / 60000:.0f}-minute recording ({seek['segments']} segments, "
        f"{seek['stored_bytes'] / MB:.1f} MB stored) opens in {seek['open_median_s']} s (the whole"
        f" recording verified); a cold seek to its middle takes {seek['seek_median_s']} s"
        f" (median of {seek['seek_s']}).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.recording [--quick]`: only the recording part (`make bench` runs it with the rest)."""
    import argparse
    import tempfile

    from bench.source import run_loop

    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds of each part (smoke test)")
    parser.add_argument("--out", type=Path, help="also write the figures there as JSON")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    holder: dict[str, Any] = {}

    def log(text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="novnc-bench-") as tmp:

        async def go() -> None:
            source = Source(Path(tmp), args.loop)
            await source.start()
            try:
                holder["data"] = await run(Path(tmp), source, args.loop, args.quick, log)
            finally:
                source.stop()

        run_loop(go, args.loop)
    data = holder["data"]
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    print("\n".join(markdown(data)))
    for t in targets(data):
        print(f"- {t['target']}: {t['value']} ({'met' if t['met'] else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
