"""One contract for every recording store: the local directory and S3 (a real moto server on 127.0.0.1)
must behave the same, so what the recorder and the player rely on holds whichever is configured
(docs/recording.md, "Stores"). Retention is tested here too, on both.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.audit import AuditLog
from gateway.config import RecordingS3
from gateway.recording.format import Header, Keyring, RecordingWriter, verify
from gateway.recording.local import LocalStore
from gateway.recording.retention import delete_expired
from gateway.recording.s3 import S3Store
from gateway.recording.store import RecordingStore, StoreError
from tests.support.recordings import recording_header
from tests.support.s3_server import SECRET_KEY, S3Server

KEYS = Keyring([os.urandom(32)], [os.urandom(32)])
DAY = 86400.0


@dataclass
class Backend:
    store: RecordingStore
    put_stray: Callable[[], Awaitable[None]]  # something in the store's place that is not a recording
    stray_intact: Callable[[], Awaitable[bool]]
    take_down: Callable[[], Awaitable[None]]  # the store stops accepting writes


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = asyncio.run(S3Server(tmp_path_factory.mktemp("moto")).start())
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> AsyncIterator[Backend]:
    if request.param == "local":
        directory = tmp_path / "recordings"
        local = LocalStore(directory)

        async def put_stray() -> None:
            (directory / "lost+found").mkdir(parents=True)
            (directory / "notes.txt").write_text("not a recording")

        async def stray_intact() -> bool:
            return (directory / "lost+found").is_dir() and (directory / "notes.txt").exists()

        async def take_down() -> None:
            # A path under a regular file cannot be created or written, even by root (chmod would not
            # stop root): what a vanished or read-only mount looks like to the gateway.
            (tmp_path / "gone").write_text("")
            local.directory = tmp_path / "gone" / "recordings"

        yield Backend(local, put_stray, stray_intact, take_down)
        return
    # One server for the module, which take_down must not stop: a test that takes S3 down gets its own.
    server = s3_server
    bucket = f"rec-{uuid.uuid4().hex[:12]}"
    await server.create_bucket(bucket)
    # Through the config section, as the gateway makes it (gateway/app.py).
    s3 = S3Store.from_config(RecordingS3.model_validate(server.store_config(bucket)))
    own: list[S3Server] = []

    async def put_stray_s3() -> None:
        await server.put(bucket, "README", b"not a recording")
        await server.put(bucket, "recordings/README", b"not a recording")

    async def stray_intact_s3() -> bool:
        return {"README", "recordings/README"} <= set(await server.objects(bucket))

    async def take_down_s3() -> None:
        down = await S3Server(tmp_path / "moto-down").start()
        own.append(down)
        await down.create_bucket(bucket)
        s3.endpoint = down.endpoint
        await s3.close()  # the next call connects to the new endpoint...
        down.stop()  # ...which is gone

    try:
        yield Backend(s3, put_stray_s3, stray_intact_s3, take_down_s3)
    finally:
        await s3.close()
        for extra in own:
            extra.stop()


def _header(rid: str, start: float) -> Header:
    return recording_header(
        rid, start=start, user="alice", groups=("ops",), width=640, height=480, name="desk"
    )


async def _record(
    store: RecordingStore, rid: str, *, start: float | None = None, finish: bool = True
) -> list[bytes]:
    """A real recording through the writer into the store; returns the segments as stored."""
    writer = RecordingWriter(_header(rid, time.time() if start is None else start), KEYS)
    await store.begin(rid, writer.header_bytes, writer.header.meta())
    segments = []
    for n in range(3):
        writer.server(n * 1000 + 1, os.urandom(64) * 4)
        draft = writer.close(n * 1000 + 500) if n == 2 and finish else writer.cut(n * 1000 + 500)
        segments.append(await asyncio.to_thread(writer.build, draft))
        await store.put_segment(rid, n, segments[-1])
    if finish:
        await store.finish(rid, *writer.finish(), writer.final_meta())
    return segments


async def _verify(store: RecordingStore, rid: str) -> str:
    info = await store.info(rid)
    assert info is not None
    header = await store.read_header(rid)
    assert header is not None
    segments = [await store.read_segment(rid, n) for n in range(info.segments)]
    result = verify(KEYS, header, segments, await store.read_index(rid), await store.read_seal(rid))
    return result.summary()


async def test_a_recording_round_trips_and_verifies(backend: Backend) -> None:
    store = backend.store
    segments = await _record(store, "c1")
    assert [await store.read_segment("c1", n) for n in range(3)] == segments
    assert await _verify(store, "c1") == "intact: 3 segments, sealed"
    info = await store.info("c1")
    assert info is not None and info.finished and info.segments == 3
    assert info.size >= sum(map(len, segments))
    assert info.meta["user"] == "alice" and info.meta["duration_ms"] == 2500  # final meta replaced begin's
    assert [i.id for i in await store.list()] == ["c1"]


async def test_a_live_recording_shows_its_segments_but_no_seal(backend: Backend) -> None:
    store = backend.store
    await _record(store, "live", finish=False)
    info = await store.info("live")
    assert info is not None and not info.finished and info.segments == 3
    assert await store.read_seal("live") is None and await store.read_index("live") is None
    assert (await _verify(store, "live")).startswith("no seal")
    assert info.start is not None and abs(info.start - time.time()) < 60


async def test_absent_things_read_as_none(backend: Backend) -> None:
    store = backend.store
    assert await store.info("nope") is None
    assert await store.read_header("nope") is None
    assert await store.read_segment("nope", 0) is None
    assert await store.delete("nope") is False
    assert await store.list() == []


async def test_an_id_in_use_is_refused_and_ids_are_checked(backend: Backend) -> None:
    store = backend.store
    await store.begin("dup", b"h1", {"start": 1.0})
    with pytest.raises(StoreError):
        await store.begin("dup", b"h2", {"start": 2.0})
    assert await store.read_header("dup") == b"h1"
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(ValueError):
            await store.begin(bad, b"h", {})


async def test_a_segment_edited_in_the_store_is_detected(backend: Backend) -> None:
    store = backend.store
    segments = await _record(store, "tamper")
    edited = bytearray(segments[1])
    edited[len(edited) // 2] ^= 0x20
    await store.put_segment("tamper", 1, bytes(edited))
    assert (
        await _verify(store, "tamper")
        == "segment 1 was changed after it was written (its MAC does not match)"
    )


async def test_a_large_segment_is_stored_whole(backend: Backend) -> None:
    data = os.urandom(9 * 1024 * 1024)  # above S3's multipart threshold of common clients: one PutObject
    await backend.store.begin("big", b"h", {})
    await backend.store.put_segment("big", 0, data)
    assert await backend.store.read_segment("big", 0) == data


async def test_delete_removes_one_recording_and_nothing_else(backend: Backend) -> None:
    store = backend.store
    await backend.put_stray()
    await _record(store, "a")
    await _record(store, "b")
    assert await store.delete("a") is True
    assert await store.info("a") is None and await store.read_segment("a", 0) is None
    assert [i.id for i in await store.list()] == ["b"]  # the stray things are not listed
    assert await _verify(store, "b") == "intact: 3 segments, sealed"
    assert await backend.stray_intact()


async def test_a_store_that_is_down_raises_store_error(backend: Backend) -> None:
    store = backend.store
    await store.check_writable()
    await backend.take_down()
    with pytest.raises(StoreError) as caught:
        await store.check_writable()
    assert "failed" in str(caught.value) and SECRET_KEY not in str(caught.value)
    with pytest.raises(StoreError):
        await store.begin("down", b"h", {})
    with pytest.raises(StoreError):
        await store.put_segment("down", 0, b"segment")


# -- retention --------------------------------------------------------------------------------------


async def test_retention_deletes_what_expired_audited_and_nothing_else(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store
    now = time.time()
    await backend.put_stray()
    await _record(store, "old", start=now - 31 * DAY)
    await _record(store, "old-unfinished", start=now - 40 * DAY, finish=False)
    await _record(store, "recent", start=now - 29 * DAY)
    await _record(store, "today", start=now)
    await store.begin("undated", b"h", {"user": "x"})  # no start time: cannot be dated, so kept
    audit = AuditLog(str(tmp_path / "audit.log"))
    try:
        deleted = await delete_expired(store, audit, max_age=30 * DAY, now=now)
    finally:
        audit.close()
    assert sorted(deleted) == ["old", "old-unfinished"]
    assert sorted(i.id for i in await store.list()) == ["recent", "today", "undated"]
    assert await backend.stray_intact()
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert sorted(line["recording"] for line in lines) == ["old", "old-unfinished"]
    line = next(line for line in lines if line["recording"] == "old")
    assert line["event"] == "recording_deleted" and line["user"] is None
    assert line["target_user"] == "alice" and line["server_id"] == "srv-1" and line["cloud"] == "demo"
    assert "older than 30 days" in line["reason"]


async def test_retention_zero_keeps_everything(backend: Backend, tmp_path: Path) -> None:
    await _record(backend.store, "ancient", start=1.0)
    audit = AuditLog(str(tmp_path / "audit.log"))
    try:
        assert await delete_expired(backend.store, audit, max_age=0, now=time.time()) == []
    finally:
        audit.close()
    assert [i.id for i in await backend.store.list()] == ["ancient"]
