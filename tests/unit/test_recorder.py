"""The recorder edge (gateway/recording/recorder.py) driven through the real relay core and RFB filters with
a scripted RFB stream and a fake clock, writing to a real local store; every recording is read back and
verified with the real reader. Store trouble is real too: a directory that cannot be created, a segment
name taken by a directory, a store that does not answer until released."""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.auth.cookie import generate_key
from gateway.consoles.relay_core import RelayCore, ToBrowser, ToUpstream
from gateway.recording.format import INPUT, MARKER, SERVER, Keyring, RecordingReader, verify
from gateway.recording.local import LocalStore
from gateway.recording.recorder import Recorder, RecordingResult, RecordingSettings
from gateway.recording.store import RecordingStore
from gateway.rfb import ClientMessageFilter, ServerMessageFilter, full_update_request

KEYS = Keyring.from_secrets([generate_key()], [generate_key()])
T0 = 500.0
GREETING = b"RFB 003.008\n" + b"\x01\x01" + bytes(4)
HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
PIXEL_FORMAT = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0]) + bytes(3)
SERVER_INIT = struct.pack(">HH16sI", 16, 8, PIXEL_FORMAT, 5) + b"web-1"
SET_PIXEL_FORMAT = b"\x00" + bytes(3) + PIXEL_FORMAT
SET_ENCODINGS = struct.pack(">BxHiii", 2, 3, 16, 7, 0)  # ZRLE, Tight, Raw: only Raw may stay
WHO = {
    "id": "c0ns0le-1",
    "user": "alice",
    "groups": ("ops",),
    "server_id": "srv-1",
    "server_name": "web-1",
    "cloud": "demo",
    "permission": "control",
    "project_id": "p1",
    "region": "r1",
    "tags": ("env=prod",),
}


def update(w: int, h: int, fill: int = 0) -> bytes:
    return struct.pack(">BxHHHHHi", 0, 1, 0, 0, w, h, 0) + bytes([fill]) * (w * h * 4)


def key(keysym: int, down: int) -> bytes:
    return struct.pack(">BBxxI", 4, down, keysym)


class Console:
    """One recorded console: the filters, the core and the recorder, on a clock the test moves."""

    def __init__(self, store: RecordingStore, *, record_input: bool, max_pending: int = 1 << 24) -> None:
        self.now = T0
        self.client = ClientMessageFilter(view_only=False, record=True, record_input=record_input)
        frame = ServerMessageFilter(self.client, copy_max=None)
        self.started: list[bool] = []
        self.failures: list[str] = []
        settings = RecordingSettings(
            KEYS, segment_seconds=1.0, segment_bytes=64 * 1024, max_pending=max_pending
        )
        self.recorder = Recorder(
            store,
            settings,
            WHO,
            record_input=record_input,
            client=self.client,
            frame=frame,
            on_started=lambda: self.started.append(True),
            on_failure=self.failures.append,
            clock=lambda: self.now,
        )
        self.core = RelayCore(
            self.client,
            idle_timeout=None,
            idle_warning=None,
            max_duration=None,
            server_filter=frame,
            recording=self.recorder,
        )
        self.upstream: list[bytes] = []  # what the console server received

    def server(self, data: bytes) -> None:
        for command in self.core.upstream_bytes(data, self.now):
            if type(command) is ToUpstream:
                self.upstream.append(command.data)
            else:
                assert type(command) is ToBrowser

    def browser(self, data: bytes) -> None:
        for command in self.core.browser_bytes(data, self.now):
            assert type(command) is ToUpstream
            self.upstream.append(command.data)

    def tick(self) -> None:
        for command in self.core.tick(self.now):
            if type(command) is ToUpstream:
                self.upstream.append(command.data)

    async def open(self) -> None:
        self.recorder.start()
        self.core.start(self.now)
        self.server(GREETING)
        self.browser(HANDSHAKE)
        self.server(SERVER_INIT)
        self.browser(SET_PIXEL_FORMAT + SET_ENCODINGS)

    async def close(self) -> RecordingResult:
        return await self.recorder.close(self.now, code=1000, reason="", closed_by="browser")


async def typing_session(console: Console) -> None:
    """Two seconds: a screen, "hi" typed, a quiet second that the clock cuts, a resize."""
    await console.open()
    console.server(update(16, 8, 1))
    console.now += 0.25
    for keysym in (0x68, 0x69):  # h, i
        console.browser(key(keysym, 1) + key(keysym, 0))
    console.now += 0.75
    console.tick()  # the segment is a second old: a keyframe is asked for, and it is cut here
    console.server(update(16, 8, 2))  # the keyframe's answer, first in the new segment
    console.now += 0.5
    console.server(struct.pack(">BxHHHHHi", 0, 1, 0, 0, 32, 8, -223))  # DesktopSize: now 32x8
    console.now += 0.25


async def read_back(store: RecordingStore, rid: str) -> tuple[Any, list[Any]]:
    """The verdict on the whole recording (as many segments as its seal names), and the segments stored."""
    header, seal = await store.read_header(rid), await store.read_seal(rid)
    assert header is not None and seal is not None
    reader = RecordingReader(KEYS, header)
    segments = [await store.read_segment(rid, n) for n in range(reader.seal(seal).segments)]
    result = verify(KEYS, header, segments, await store.read_index(rid), seal)
    return result, [reader.segment(n, data) for n, data in enumerate(segments) if data is not None]


def kinds(segment: Any, kind: int) -> list[bytes]:
    return [record.data for record in segment.records if record.kind == kind]


def markers(segments: list[Any]) -> list[Mapping[str, Any]]:
    return [record.marker() for s in segments for record in s.records if record.kind == MARKER]


async def test_a_recorded_console_reads_back_intact_with_a_keyframe_at_each_segment_start(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "rec")
    console = Console(store, record_input=True)
    await typing_session(console)
    result = await console.close()
    assert result == RecordingResult(started=True, segments=2, sealed=True, failure=None)
    assert console.started == [True] and console.failures == []
    # The browser's encodings were cut to Raw; the keyframe request went upstream between its messages.
    assert console.upstream == [
        HANDSHAKE,
        SET_PIXEL_FORMAT + struct.pack(">BxHiii", 2, 3, 0, 0, 0),
        key(0x68, 1) + key(0x68, 0),
        key(0x69, 1) + key(0x69, 0),
        full_update_request(16, 8),
    ]
    verdict, segments = await read_back(store, "c0ns0le-1")
    assert verdict.ok, verdict.summary()
    header = verdict.header
    assert (header.width, header.height, header.name, header.pixel_format) == (16, 8, "web-1", PIXEL_FORMAT)
    assert (header.user, header.server_name, header.tags, header.record_input) == (
        "alice",
        "web-1",
        ("env=prod",),
        True,
    )
    assert [kinds(s, SERVER) for s in segments] == [
        [update(16, 8, 1)],
        [update(16, 8, 2), struct.pack(">BxHHHHHi", 0, 1, 0, 0, 32, 8, -223)],
    ]
    assert kinds(segments[0], INPUT) == [key(0x68, 1), key(0x68, 0), key(0x69, 1), key(0x69, 0)]
    assert (segments[1].start, segments[1].screen.width) == (1000, 16)
    assert [m["kind"] for m in markers(segments)] == ["opened", "resized", "closed"]
    assert verdict.index.find("hi") == [250]
    assert sum(verdict.index.inputs) == 4


async def test_without_record_input_the_input_is_counted_but_never_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "rec")
    console = Console(store, record_input=False)
    await typing_session(console)
    await console.close()
    verdict, segments = await read_back(store, "c0ns0le-1")
    assert verdict.ok, verdict.summary()
    assert not verdict.header.record_input
    assert all(kinds(s, INPUT) == [] for s in segments)
    assert verdict.index.typed is None and verdict.index.find("hi") == []
    assert sum(verdict.index.inputs) == 4  # the activity timeline still shows that someone typed
    raw = b"".join([await store.read_segment("c0ns0le-1", n) or b"" for n in range(2)])
    assert key(0x68, 1) not in raw


async def test_a_store_that_cannot_start_the_recording_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    console = Console(LocalStore(tmp_path / "file" / "rec"), record_input=False)
    await console.open()
    console.server(update(16, 8, 1))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if console.failures:
            break
    assert len(console.failures) == 1 and "could not start" in console.failures[0]
    console.server(update(16, 8, 1))  # the console goes on (the caller decides); nothing is recorded
    result = await console.close()
    assert result.started is False and result.segments == 0 and result.failure == console.failures[0]
    assert console.started == []


async def test_a_store_failing_mid_console_keeps_what_it_took_and_seals_where_it_ended(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "rec")
    console = Console(store, record_input=False)
    await console.open()
    console.server(update(16, 8, 1))
    await asyncio.sleep(0.05)
    assert console.started == [True]
    (tmp_path / "rec" / "c0ns0le-1" / "seg-00000001" / "taken").mkdir(parents=True)  # segment 1 cannot be
    for fill in (2, 3, 4):
        console.now += 1.0
        console.tick()
        console.server(update(16, 8, fill))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if console.failures:
            break
    assert len(console.failures) == 1 and "could not store a segment" in console.failures[0]
    result = await console.close()
    assert result.started and result.sealed and result.segments >= 1
    shutil.rmtree(tmp_path / "rec" / "c0ns0le-1" / "seg-00000001")
    verdict, segments = await read_back(store, "c0ns0le-1")
    assert [(p.kind, p.segment) for p in verdict.problems] == [("missing", 1)]  # the others verify
    assert kinds(segments[0], SERVER) == [update(16, 8, 1)]
    assert markers(segments)[-1]["kind"] == "failed"


class Held(LocalStore):
    """A local store whose segment writes wait until released: a store too slow for the console."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.gate = asyncio.Event()

    async def put_segment(self, rid: str, number: int, data: bytes) -> None:
        await self.gate.wait()
        await super().put_segment(rid, number, data)


async def test_a_slow_store_never_slows_the_console_and_a_backlog_past_the_bound_ends_the_recording(
    tmp_path: Path,
) -> None:
    store = Held(tmp_path / "rec")
    console = Console(store, record_input=False, max_pending=200_000)
    await console.open()
    for fill in range(1, 6):  # 5 segments of a 64 KiB update each: more than 200 000 bytes waiting
        console.server(update(128, 128, fill))
        console.now += 1.0
        console.tick()
    await asyncio.sleep(0)
    assert len(console.failures) == 1 and "fell behind" in console.failures[0]
    console.server(update(128, 128, 9))  # after the failure nothing more is recorded
    store.gate.set()
    result = await console.close()
    assert result.sealed and result.failure == console.failures[0]
    verdict, segments = await read_back(store, "c0ns0le-1")
    assert verdict.ok, verdict.summary()  # everything recorded up to the failure, sealed
    assert markers(segments)[-1]["kind"] == "failed"
    assert update(128, 128, 9) not in [d for s in segments for d in kinds(s, SERVER)]
