"""The recordings API through the real gateway: who may list, play, search and download which recording,
typed text only with typed_text, refusal that looks like absence, integrity verdicts, and the audit trail.

Recordings are written with the real format (RecordingWriter) into the gateway's real local store; the
console path that records a real Xvnc is exercised by tests/browser/test_player_browser.py.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.passwords import hash_password
from gateway.recording.format import INPUT, RecordingWriter, unpack, verify
from gateway.recording.local import LocalStore
from gateway.web.recordings import FEED_SCREEN
from tests.support.gateway import Operator, RunningGateway, demo_stack
from tests.support.recordings import KEYS, recording_config, recording_header

PIXEL_FORMAT = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
TYPED = "hunter2"
PASSWORD = "pw-for-tests"


def tweak(directory: Path) -> Any:
    def apply(data: dict[str, Any]) -> None:
        users = data["auth"]["local"]["users"]
        for name, groups in (
            ("auditor", ["auditors"]),
            ("sec-lead", ["security"]),
            ("outsider", ["auditors-x"]),
        ):
            users.append({"name": name, "password_hash": hash_password(PASSWORD), "groups": groups})
        data["policy"]["reviewers"] = [
            {"name": "audit-prod", "groups": ["auditors"], "tags": ["env=prod"]},
            {"name": "security", "groups": ["security"], "typed_text": True},
            {"name": "elsewhere", "groups": ["auditors-x"], "clouds": ["other-cloud"]},
        ]
        data["recording"] = recording_config(directory=str(directory))

    return apply


def key_event(keysym: int, down: bool) -> bytes:
    return struct.pack(">BBxxI", 4, int(down), keysym)


def raw_update(colour: int) -> bytes:
    """A FramebufferUpdate with one 4x4 Raw rectangle of one colour."""
    pixels = struct.pack("<I", colour) * 16
    return struct.pack(">BxHHHHHi", 0, 1, 0, 0, 4, 4, 0) + pixels


async def write_recording(
    store: LocalStore, rid: str, *, finish: bool = True, tags: tuple[str, ...] = ("env=prod",)
) -> None:
    """Three segments of screen updates; "hunter2" typed in the second; sealed unless `finish` is False."""
    header = recording_header(
        rid,
        start=time.time() - 60,
        groups=("operators",),
        width=64,
        height=48,
        pixel_format=PIXEL_FORMAT,
        record_input=True,
        project_id="proj",
        region="r1",
        tags=tags,
    )
    writer = RecordingWriter(header, KEYS, segment_seconds=1.0)
    await store.begin(rid, writer.header_bytes, header.meta())
    writer.marker(0, "opened")
    for segment in range(3):
        base = segment * 2000
        writer.server(base + 10, raw_update(0x0000FF << (8 * segment)))
        if segment == 1:
            for i, char in enumerate(TYPED):
                writer.client(base + 100 + 20 * i, key_event(ord(char), True))
                writer.client(base + 110 + 20 * i, key_event(ord(char), False))
        writer.server(base + 900, raw_update(0x00FF00))
        draft = writer.cut(base + 1999) if segment < 2 or not finish else writer.close(base + 1999)
        await store.put_segment(rid, draft.number, writer.build(draft))
    if finish:
        index, seal = writer.finish()
        await store.finish(rid, index, seal, meta=writer.final_meta())


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with demo_stack(tmp_path, tweak(tmp_path / "recordings")) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "recordings")


@contextlib.asynccontextmanager
async def signed_in(gateway: RunningGateway, user: str) -> AsyncIterator[Operator]:
    """`user` signed in for the length of the block (the demo's own users' passwords are their names)."""
    operator = Operator(gateway)
    try:
        await operator.login(user, PASSWORD if user not in ("demo", "viewer", "admin") else user)
        yield operator
    finally:
        await operator.close()


def parse_feed(body: bytes) -> list[tuple[int, int, bytes]]:
    records, at = [], 0
    while at < len(body):
        kind, t, length = struct.unpack_from(">BII", body, at)
        records.append((kind, t, body[at + 9 : at + 9 + length]))
        at += 9 + length
    return records


async def test_someone_without_a_reviewer_entry_gets_nothing_that_says_a_recording_exists(
    gateway: RunningGateway, store: LocalStore
) -> None:
    await write_recording(store, "rec-one")
    for user in ("demo", "admin", "outsider"):  # the recorded user, an admin, a reviewer of another cloud
        async with signed_in(gateway, user) as who:
            assert (await who.get("/api/recordings"))[1]["recordings"] == []
            missing = await who.get("/api/recordings/no-such-recording")
            for path in ("", "/segments/0", "/download"):
                status, body = await who.get(f"/api/recordings/rec-one{path}")
                assert (status, body) == missing, (user, path)  # the same answer as for nothing at all
            assert missing[0] == 404
            if user != "outsider":
                assert (await who.get("/recordings"))[0] == 404
                assert (await who.get("/recordings/rec-one"))[0] == 404
    assert not [
        e for e in gateway.audit_events() if e["event"] in ("recording_played", "recording_downloaded")
    ]


async def test_a_reviewer_plays_but_reads_no_typed_text_without_typed_text(
    gateway: RunningGateway, store: LocalStore
) -> None:
    await write_recording(store, "rec-one")
    async with signed_in(gateway, "auditor") as auditor:
        status, listing = await auditor.get("/api/recordings")
        assert status == 200 and [r["id"] for r in listing["recordings"]] == ["rec-one"]
        assert listing["recordings"][0]["duration"] == 5999 and listing["recordings"][0]["sealed"]
        status, meta = await auditor.get("/api/recordings/rec-one")
        assert status == 200
        assert meta["typed_text"] == "hidden" and meta["typed"] is None
        assert meta["download"] is None  # the file holds the keystrokes
        assert meta["integrity"]["status"] == "verified"
        assert [s["start"] for s in meta["segments"]] == [0, 1999, 3999]
        assert TYPED not in str(meta)
        assert (await auditor.get("/api/recordings/rec-one/download"))[0] == 404
        # Typed-text search never searches what the caller may not read.
        status, found = await auditor.post("/api/recordings/search", {"text": TYPED})
        assert status == 200 and found["recordings"] == []
        # Typed text never travels in an address (proxy logs, browser history): GET refuses it.
        status, refused = await auditor.get("/api/recordings", params={"text": TYPED})
        assert status == 400 and "POST" in refused["error"]
        # The player's feed: the screen first, then server messages and markers; never the input.
        async with auditor.http.get(f"{gateway.url}/api/recordings/rec-one/segments/1") as response:
            assert response.status == 200
            records = parse_feed(await response.read())
        assert records[0][0] == FEED_SCREEN and struct.unpack(">HH", records[0][2][:4]) == (64, 48)
        assert {kind for kind, _, _ in records[1:]} == {1}
        assert all(key_event(ord(TYPED[0]), True) not in data for _, _, data in records)
    played = await gateway.wait_for_audit("recording_played", user="auditor")
    assert played["recording"] == "rec-one" and played["target_user"] == "demo"
    assert played["reviewers"] == ["audit-prod"] and played["typed_text"] is False
    # One line for the viewing, not one per request.
    assert len([e for e in gateway.audit_events() if e["event"] == "recording_played"]) == 1
    searched = [e for e in gateway.audit_events() if e["event"] == "recording_searched"]
    assert [e["filters"] for e in searched] == [[], ["text"]]
    assert TYPED not in gateway.audit_path.read_text()


async def test_typed_text_reviewers_read_search_and_download(
    gateway: RunningGateway, store: LocalStore
) -> None:
    await write_recording(store, "rec-one")
    await write_recording(store, "rec-two", tags=("env=dev",))  # not for audit-prod; security sees all
    async with signed_in(gateway, "sec-lead") as lead:
        status, meta = await lead.get("/api/recordings/rec-one")
        assert meta["typed_text"] == "shown"
        assert [(r["t"], r["text"]) for r in meta["typed"]] == [(2100, TYPED)]
        status, found = await lead.post("/api/recordings/search", {"text": "HUNTER", "server": "web"})
        assert status == 200 and sorted(r["id"] for r in found["recordings"]) == ["rec-one", "rec-two"]
        assert found["recordings"][0]["hits"] == [2100]
        async with lead.http.get(f"{gateway.url}/api/recordings/rec-one/download") as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"] == 'attachment; filename="rec-one.nvgr"'
            data = await response.read()
        packed = unpack(data)
        assert packed.complete and verify(KEYS, packed.header, packed.segments, packed.index, packed.seal).ok
    downloaded = await gateway.wait_for_audit("recording_downloaded", user="sec-lead")
    assert downloaded["size"] == len(data) and downloaded["reviewers"] == ["security"]
    async with signed_in(gateway, "auditor") as auditor:
        assert [r["id"] for r in (await auditor.get("/api/recordings"))[1]["recordings"]] == ["rec-one"]
        assert (await auditor.get("/api/recordings/rec-two"))[0] == 404


async def test_a_tampered_segment_is_named_and_refused_and_a_cut_recording_is_truncated(
    gateway: RunningGateway, store: LocalStore, tmp_path: Path
) -> None:
    await write_recording(store, "rec-one")
    await write_recording(store, "rec-cut", finish=False)
    segment = tmp_path / "recordings" / "rec-one" / "seg-00000001"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    async with signed_in(gateway, "auditor") as auditor:
        status, meta = await auditor.get("/api/recordings/rec-one")
        assert status == 200
        assert meta["integrity"]["status"] == "tampered" and meta["integrity"]["segment"] == 1
        assert (await auditor.get("/api/recordings/rec-one/segments/0"))[0] == 200
        status, refused = await auditor.get("/api/recordings/rec-one/segments/1")
        assert status == 409 and refused["code"] == "tampered" and refused["segment"] == 1
        status, meta = await auditor.get("/api/recordings/rec-cut")
        assert meta["integrity"]["status"] == "truncated"
        assert [s["number"] for s in meta["segments"]] == [0, 1, 2]  # rebuilt from the segments


async def test_inputs_are_never_in_the_feed_even_for_typed_text_reviewers(
    gateway: RunningGateway, store: LocalStore
) -> None:
    await write_recording(store, "rec-one")
    async with signed_in(gateway, "sec-lead") as lead:
        async with lead.http.get(f"{gateway.url}/api/recordings/rec-one/segments/1") as response:
            records = parse_feed(await response.read())
        assert INPUT not in {kind for kind, _, _ in records}


async def test_a_store_that_cannot_be_read_answers_503_naming_it(
    gateway: RunningGateway, store: LocalStore, tmp_path: Path
) -> None:
    await write_recording(store, "rec-one")
    (tmp_path / "recordings").rename(tmp_path / "moved")
    (tmp_path / "recordings").write_text("not a directory")
    async with signed_in(gateway, "auditor") as auditor:
        status, body = await auditor.get("/api/recordings")
        assert (status, body["code"]) == (503, "store")
        assert "recording store" in body["error"] and "Not a directory" in body["error"]
