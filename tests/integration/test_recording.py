"""Session recording with real parts: a scripted console through the real gateway and the real websockify
to a real Xvnc running a program that echoes what is typed (tests/support/x_echo.py), recorded to the
local directory store and to a real S3-compatible server (moto, tests/support/s3_server.py).

Every recording is read back from its store and verified; its last segment alone (a synthetic handshake,
then its server messages: what a player does to seek) must show exactly the screen the whole recording
shows, which is the live client's last screen. The typed text is in the index when input is recorded and
nowhere when it is not; no console token is in any part of any recording. Failing stores: a required
recording with its store down refuses the console (4534, audited); a store failing mid-console closes a
required console with 4534 and what it took stays readable; an optional recording stops and the console
goes on."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.recording.format import SERVER, RecordingReader, Segment, verify
from gateway.recording.local import LocalStore
from gateway.recording.store import RecordingStore
from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.echo_console import echo_console_fixtures
from tests.support.gateway import ConsoleRefused, Operator, RunningGateway, start_gateway
from tests.support.polling import wait_for
from tests.support.recordings import KEYS, decoded_recordings, recording_config, recording_header, replay
from tests.support.rfb_client import RFBClient, RFBClientError
from tests.support.s3_server import S3Server
from tests.support.token_scan import SCANNER
from tests.support.vnc_servers import XVNC
from tests.support.x_echo import XEcho

pytestmark = pytest.mark.skipif(XVNC is None, reason="Xvnc (tigervnc-standalone-server) is not installed")

XVNC_ID = "5a5a5a5a-0000-4000-8000-00000000ec01"
ZRLE, TIGHT, RAW = 16, 7, 0
TYPED = "hello recorder"
BUCKET = "recordings"


session, echo, cloud = echo_console_fixtures(SimServer(id=XVNC_ID, name="rec-xvnc"), geometry="320x200")


@pytest.fixture
async def s3(tmp_path: Path) -> AsyncIterator[S3Server]:
    server = await S3Server(tmp_path / "s3").start()
    try:
        await server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store_section(
    request: Any, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, Any], S3Server | None]]:
    """The `[recording]` store keys for the store named by the test's parameter (and the S3 server)."""
    if request.param == "local":
        yield local(tmp_path), None
        return
    server = await S3Server(tmp_path / "s3").start()
    try:
        await server.create_bucket(BUCKET)
        yield {"store": "s3", "s3": server.store_config(BUCKET)}, server
    finally:
        server.stop()


def recorded(record: str, record_input: bool, **section: Any) -> Any:
    """Config tweak: the demo's control rule records (as given); the recording section with the run's keys."""

    def tweak(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-operators-control":
                rule.update(record=record, record_input=record_input)
        data["recording"] = recording_config(segment_seconds=1.0, **section)

    return tweak


def local(tmp_path: Path) -> dict[str, Any]:
    return {"store": "local", "directory": str(tmp_path / "recordings")}


async def opened(gateway: RunningGateway) -> tuple[Operator, RFBClient, dict[str, Any]]:
    """A console as a browser opens it: the hello first, then RFB asking for encodings a recording cannot
    keep (the gateway leaves it Raw)."""
    operator = Operator(gateway)
    await operator.login("demo")
    transport = await operator.open_console(XVNC_ID)
    hello = transport.notices[0]
    client = RFBClient(transport)
    await asyncio.wait_for(client.handshake((ZRLE, TIGHT, RAW)), 10)
    await client.full_update()
    return operator, client, hello


async def stored_segments(store: RecordingStore, rid: str) -> int:
    info = await store.info(rid)
    return info.segments if info is not None else 0


async def busy_until(client: RFBClient, done: Callable[[], object], what: str) -> None:
    """Keep the console's screen changing (a key the X program draws, then an incremental update, as a
    browser asks) until `done()` (true, or awaitable to true); a console the gateway closed meanwhile
    answers no more, which is fine."""

    async def check() -> bool:
        with contextlib.suppress(RFBClientError, ConnectionError, aiohttp.ClientError, TimeoutError):
            await client.key(ord("x"))
            await client.request_update(True)
            await client.next_update()
        result = done()
        return bool(await result if inspect.isawaitable(result) else result)

    await wait_for(check, 30, what)


async def read_back(store: RecordingStore, rid: str) -> tuple[Any, list[Segment]]:
    """The verdict on the stored recording and its segments, decoded (every part scanned for tokens)."""
    header, seal, index = (
        await store.read_header(rid),
        await store.read_seal(rid),
        await store.read_index(rid),
    )
    assert header is not None and seal is not None and index is not None
    reader = RecordingReader(KEYS, header)
    count = reader.seal(seal).segments
    raw = [await store.read_segment(rid, n) for n in range(count)]
    verdict = verify(KEYS, header, raw, index, seal)
    segments = [reader.segment(n, data) for n, data in enumerate(raw) if data is not None]
    for segment in segments:
        for record in segment.records:
            assert SCANNER.scan(record.data, f"recording {rid}"), "a console token in a recording"
    assert SCANNER.scan(reader.index(index).to_bytes(), f"recording {rid} index")
    return verdict, segments


def server_bytes(segments: list[Segment]) -> bytes:
    return b"".join(r.data for s in segments for r in s.records if r.kind == SERVER)


@pytest.mark.parametrize(
    ("store_section", "record_input"),
    [("local", True), ("local", False), ("s3", True)],
    indirect=["store_section"],
)
async def test_a_recorded_console_reads_back_intact_seekable_and_with_typed_text_only_when_asked(
    cloud: DemoCloud,
    tmp_path: Path,
    echo: XEcho,
    store_section: tuple[dict[str, Any], S3Server | None],
    record_input: bool,
) -> None:
    section, s3 = store_section
    store = section["store"]
    gateway = await start_gateway(cloud, tmp_path, recorded("required", record_input, **section))
    operator, client, hello = await opened(gateway)
    rid = hello["console_id"]
    store_ = gateway.gw.recordings
    assert store_ is not None and store_.name == store
    try:
        # The page learns it is recorded from the hello, before any RFB byte.
        assert hello["recording"] == {"required": True, "input": record_input}
        started = await gateway.wait_for_audit("recording_started", recording=rid)
        assert (started["record"], started["record_input"], started["store"]) == (
            "required",
            record_input,
            store,
        )
        await client.type_text(TYPED)
        await wait_for(lambda: echo.typed.endswith(TYPED), 10, "the typed text at the X program")

        async def three_segments() -> bool:
            return await stored_segments(store_, rid) >= 3

        await busy_until(client, three_segments, "three recorded segments")
        assert (await client.full_update()).rects
        live_screen = bytes(client.proto.framebuffer)  # the live client's last screen
        await client.close()
        closed = await gateway.wait_for_audit("console_closed", console_id=rid)
        assert closed["recording"] == rid

        verdict, segments = await read_back(store_, rid)
        assert verdict.ok, verdict.summary()
        header = verdict.header
        assert (header.width, header.height, header.server_name, header.user) == (
            320,
            200,
            "rec-xvnc",
            "demo",
        )
        assert len(segments) >= 4
        first = segments[0].screen
        assert bytes(replay(first, server_bytes(segments)).framebuffer) == live_screen
        # Seeking: each segment alone (a fresh decoder, a synthetic handshake) ends on the screen the
        # recording shows at that point, although all but its keyframe are incremental updates.
        for k in range(1, len(segments) - 1):
            alone = replay(segments[k].screen, server_bytes(segments[k : k + 1]))
            so_far = replay(first, server_bytes(segments[: k + 1]))
            assert alone.framebuffer == so_far.framebuffer, f"segment {k} does not start at a keyframe"
        index = verdict.index
        if record_input:
            assert index.find(TYPED), index.typed
        else:
            assert index.typed is None and not index.find(TYPED)
            assert all(r.kind != 2 for s in segments for r in s.records)  # no INPUT record
            assert sum(index.inputs) >= len(TYPED)  # but the activity is on the timeline
        if s3 is None:  # the suite-wide token scan (tests/conftest.py) opens this recording too
            parts = [where for where, _ in decoded_recordings(tmp_path)]
            assert f"recording {rid} index" in parts and f"recording {rid} segment 1" in parts
        else:
            stored = await s3.objects(BUCKET)
            assert any(key.endswith(f"{rid}/seal") for key in stored)
            for key, data in stored.items():
                assert SCANNER.scan(data, f"s3 object {key}")
    finally:
        await operator.close()
        await gateway.stop()


async def test_required_recording_with_the_store_down_refuses_the_console(
    cloud: DemoCloud, tmp_path: Path, s3: S3Server
) -> None:
    s3.stop()  # the bucket's server is gone: nothing can be written
    gateway = await start_gateway(
        cloud, tmp_path, recorded("required", False, store="s3", s3=s3.store_config(BUCKET))
    )
    operator = Operator(gateway)
    try:
        await operator.login("demo")
        with pytest.raises(ConsoleRefused) as refused:
            await operator.open_console(XVNC_ID)
        assert refused.value.code == 4534
        assert (
            refused.value.reason
            == "This console must be recorded and the recording store is not accepting recordings"
        )
        failed = await gateway.wait_for_audit("recording_failed", server_name="rec-xvnc")
        assert (failed["record"], failed["store"]) == ("required", "s3") and "recording" not in failed
        console = await gateway.wait_for_audit("console_failed", failure="recording")
        assert console["close_code"] == 4534
        assert not [e for e in gateway.audit_events() if e["event"] == "console_opened"]
    finally:
        await operator.close()
        await gateway.stop()


async def _blocked(gateway: RunningGateway, directory: Path, rid: str) -> tuple[RecordingStore, int]:
    """Once the console's recording started, make its next segments impossible to store (their names taken
    by directories); returns the store and how many segments it had stored before."""
    store = gateway.gw.recordings
    assert store is not None
    await gateway.wait_for_audit("recording_started", recording=rid)
    stored = await stored_segments(store, rid)
    for number in range(stored + 1, stored + 40):
        (directory / rid / f"seg-{number:08d}" / "taken").mkdir(parents=True)
    return store, stored


async def test_a_store_failing_mid_console_closes_a_required_console_and_keeps_what_it_took(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho
) -> None:
    gateway = await start_gateway(cloud, tmp_path, recorded("required", False, **local(tmp_path)))
    operator, client, hello = await opened(gateway)
    rid = hello["console_id"]
    try:
        store, before = await _blocked(gateway, tmp_path / "recordings", rid)
        closed_by_gateway = partial(gateway.audited, "console_closed", console_id=rid)
        await busy_until(client, closed_by_gateway, "the console closed by the failing recording")
        closed = await gateway.wait_for_audit("console_closed", console_id=rid)
        assert (closed["close_code"], closed["closed_by"]) == (4534, "recording")
        with contextlib.suppress(RFBClientError):
            await client.wait_closed()
        assert client.transport.close_code == 4534  # type: ignore[attr-defined]
        failed = await gateway.wait_for_audit("recording_failed", recording=rid)
        assert "could not store a segment" in failed["reason"]
        # What the store took stays readable, and verifies up to where it failed.
        header = await store.read_header(rid)
        assert header is not None
        reader = RecordingReader(KEYS, header)
        for number in range(before + 1):
            data = await store.read_segment(rid, number)
            assert data is not None
            reader.segment(number, data)
    finally:
        await operator.close()
        await gateway.stop()


async def test_an_optional_recording_stops_on_a_failing_store_and_the_console_goes_on(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho
) -> None:
    gateway = await start_gateway(cloud, tmp_path, recorded("optional", False, **local(tmp_path)))
    operator, client, hello = await opened(gateway)
    rid = hello["console_id"]
    try:
        assert hello["recording"] == {"required": False, "input": False}
        await _blocked(gateway, tmp_path / "recordings", rid)
        failed = partial(gateway.audited, "recording_failed")
        await busy_until(client, failed, "the recording to fail")
        await client.type_text("still here")
        await wait_for(lambda: echo.typed.endswith("still here"), 10, "typing after the recording failed")
        assert not [e for e in gateway.audit_events() if e["event"] == "console_closed"]
    finally:
        await client.close()
        await operator.close()
        await gateway.stop()


async def test_the_gateway_deletes_expired_recordings_when_it_starts_and_keeps_the_others(
    cloud: DemoCloud, tmp_path: Path
) -> None:
    """Retention is the gateway's periodic work (gateway/app.py): a run at start-up, audited."""
    store = LocalStore(tmp_path / "recordings")
    now = time.time()
    for rid, age in (("expired1", 3 * 86400), ("recent1", 3600)):
        header = recording_header(
            rid, start=now - age, server_id=XVNC_ID, server_name="rec-xvnc", name="rec-xvnc", encodings=(0,)
        )
        await store.begin(rid, header.to_bytes(), header.meta())
    gateway = await start_gateway(cloud, tmp_path, recorded("off", False, retention="2d", **local(tmp_path)))
    try:
        deleted = await gateway.wait_for_audit("recording_deleted", recording="expired1")
        assert deleted["target_user"] == "demo" and "older than 2 days" in deleted["reason"]
        assert await store.info("expired1") is None
        assert await store.info("recent1") is not None
        assert [e["recording"] for e in gateway.audit_events() if e["event"] == "recording_deleted"] == [
            "expired1"
        ]
    finally:
        await gateway.stop()
