"""The recording format: what goes in comes out, and any change, cut or wrong key is detected and named."""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import tracemalloc

import pytest
import zstandard

from gateway.recording.format import (
    INPUT,
    MARKER,
    SERVER,
    Header,
    Keyring,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    pack,
    unpack,
    verify,
)

PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
HMAC_OLD, HMAC_NEW, ENC_OLD, ENC_NEW = (os.urandom(32) for _ in range(4))


def _header(record_input: bool = True, rid: str = "c0ffee") -> Header:
    return Header(
        id=rid,
        start=1_700_000_000.5,
        user="alice",
        groups=("ops", "dba"),
        server_id="srv-1",
        server_name="web-1",
        cloud="demo",
        permission="control",
        rfb_version="RFB 003.008",
        width=1024,
        height=768,
        pixel_format=PIXEL_FORMAT,
        name="web-1 desktop",
        encodings=(0, 1, -223, -224),
        record_input=record_input,
        project_id="p1",
        region="eu-1",
        tags=("env=prod",),
    )


def _key(keysym: int, down: bool = True) -> bytes:
    return struct.pack(">BBxxI", 4, int(down), keysym)


def _update(n: int) -> bytes:
    """A FramebufferUpdate with one Raw rectangle: what the gateway records for the screen."""
    return struct.pack(">BxHHHHHi", 0, 1, 0, 0, 4, 1, 0) + bytes([n % 256]) * 16


class Recorded:
    """A recording made through the writer: 3 segments, markers, typed 'ls' + Return."""

    def __init__(self, keys: Keyring, record_input: bool = True) -> None:
        w = RecordingWriter(_header(record_input), keys, segment_seconds=1.0)
        self.writer = w
        self.segments: list[bytes] = []
        w.marker(0, "opened", permission="control")
        t = 0
        for i in range(30):
            t = 100 * i
            if w.due(t):
                self.segments.append(w.build(w.cut(t)))
            w.server(t, _update(i))
            if i == 12:
                w.screen(width=800, height=600)
                w.marker(t, "resized", width=800, height=600)
            if i in (20, 21, 22):
                w.client(t, _key((ord("l"), ord("s"), 0xFF0D)[i - 20]))
                w.client(t + 5, _key((ord("l"), ord("s"), 0xFF0D)[i - 20], down=False))
        w.marker(t + 50, "closed", code=1000)
        self.segments.append(w.build(w.close(t + 60)))
        self.index, self.seal = w.finish()
        self.header = w.header_bytes


@pytest.fixture
def keys() -> Keyring:
    return Keyring([HMAC_NEW, HMAC_OLD], [ENC_NEW, ENC_OLD])


@pytest.fixture
def rec(keys: Keyring) -> Recorded:
    return Recorded(keys)


def test_round_trip_gives_back_every_record_in_order(keys: Keyring, rec: Recorded) -> None:
    result = verify(keys, rec.header, rec.segments, rec.index, rec.seal)
    assert result.ok, result.summary()
    assert len(rec.segments) == 3 == result.segments
    reader = RecordingReader(keys, rec.header)
    assert reader.header == _header()
    records = [r for n, data in enumerate(rec.segments) for r in reader.segment(n, data).records]
    servers = [r for r in records if r.kind == SERVER]
    assert [r.data for r in servers] == [_update(i) for i in range(30)]
    assert [r.t for r in servers] == [100 * i for i in range(30)]
    assert [r.data[:1] for r in records if r.kind == INPUT] == [b"\x04"] * 6
    markers = [(r.t, r.marker()) for r in records if r.kind == MARKER]
    assert markers[0] == (0, {"kind": "opened", "permission": "control"})
    assert markers[-1] == (2950, {"kind": "closed", "code": 1000})
    assert all(a.t <= b.t for a, b in itertools.pairwise(records))


def test_each_segment_starts_with_the_screen_current_then(keys: Keyring, rec: Recorded) -> None:
    reader = RecordingReader(keys, rec.header)
    screens = [reader.segment(n, data).screen for n, data in enumerate(rec.segments)]
    assert (screens[0].width, screens[0].height, screens[0].name) == (1024, 768, "web-1 desktop")
    assert screens[0].pixel_format == PIXEL_FORMAT
    assert (screens[2].width, screens[2].height) == (800, 600)  # resized at 1.2 s, in segment 1


def test_segments_open_alone_in_any_order_for_a_seek(keys: Keyring, rec: Recorded) -> None:
    reader = RecordingReader(keys, rec.header)
    last = reader.segment(2, rec.segments[2])
    assert last.start == 2000 and last.records[0].t == 2000
    assert reader.segment(0, rec.segments[0]).end == 1000


def test_encrypted_segments_hide_the_screen_and_plain_ones_do_not(keys: Keyring) -> None:
    secret = hashlib.sha512(b"TOP-SECRET-PIXELS").digest()  # incompressible: zstd stores it as it is
    plain_keys = Keyring([HMAC_NEW])
    for ring, visible in ((keys, False), (plain_keys, True)):
        w = RecordingWriter(_header(), ring)
        w.server(1, secret)
        data = w.build(w.close(2))
        assert (secret in data) is visible


def test_one_flipped_byte_anywhere_in_a_segment_is_detected_and_named(keys: Keyring, rec: Recorded) -> None:
    data = rec.segments[1]
    for position in [*range(0, 120), *range(120, len(data), max(1, len(data) // 97))]:
        edited = bytearray(data)
        edited[position] ^= 0x01
        segments = [rec.segments[0], bytes(edited), rec.segments[2]]
        result = verify(keys, rec.header, segments, rec.index, rec.seal)
        assert not result.ok
        named = [(p.kind, p.segment) for p in result.problems]
        # The MAC key's id (bytes 66-73) edited: indistinguishable from a key that is not configured.
        kind = "unknown_key" if 66 <= position < 74 else "edited"
        assert (kind, 1) in named, (position, named)
        assert result.problems[0].segment == 1, (position, result.summary())


def test_a_recording_without_its_seal_is_truncated(keys: Keyring, rec: Recorded) -> None:
    result = verify(keys, rec.header, rec.segments[:2], None, None)
    assert not result.ok and not result.sealed
    assert [p.kind for p in result.problems] == ["truncated"]
    assert result.segments == 2  # what is there still verifies (a live recording plays up to now)


def test_dropped_trailing_segments_are_detected_even_with_the_seal(keys: Keyring, rec: Recorded) -> None:
    result = verify(keys, rec.header, rec.segments[:2], rec.index, rec.seal)
    assert "truncated" in [p.kind for p in result.problems]


def test_a_missing_middle_segment_is_named(keys: Keyring, rec: Recorded) -> None:
    result = verify(keys, rec.header, [rec.segments[0], None, rec.segments[2]], rec.index, rec.seal)
    assert ("missing", 1) in [(p.kind, p.segment) for p in result.problems]
    assert ("chain", 2) in [(p.kind, p.segment) for p in result.problems] or result.segments == 2


def test_swapped_segments_and_a_foreign_segment_break_the_chain(keys: Keyring, rec: Recorded) -> None:
    swapped = verify(
        keys, rec.header, [rec.segments[1], rec.segments[0], rec.segments[2]], rec.index, rec.seal
    )
    assert {p.kind for p in swapped.problems} == {"chain"}
    other = Recorded(keys)  # the same header and events: only the chain tells them apart
    mixed = verify(
        keys, rec.header, [rec.segments[0], other.segments[1], rec.segments[2]], rec.index, rec.seal
    )
    assert ("chain", 1) in [(p.kind, p.segment) for p in mixed.problems]


def test_a_segment_from_another_recording_id_does_not_verify(keys: Keyring, rec: Recorded) -> None:
    w = RecordingWriter(_header(rid="other"), keys)
    w.server(1, b"x")
    foreign = w.build(w.close(2))
    with pytest.raises(RecordingError) as caught:
        RecordingReader(keys, rec.header).segment(0, foreign)
    assert caught.value.problem.kind == "edited"


def test_edited_header_index_and_seal_are_each_named(keys: Keyring, rec: Recorded) -> None:
    header = rec.header.replace(b'"user":"alice"', b'"user":"mallory"')
    assert "edited" in [p.kind for p in verify(keys, header, rec.segments, rec.index, rec.seal).problems]
    index = bytearray(rec.index)
    index[-1] ^= 1
    assert [p.kind for p in verify(keys, rec.header, rec.segments, bytes(index), rec.seal).problems] == [
        "index"
    ]
    seal = bytearray(rec.seal)
    seal[12] ^= 1
    assert [p.kind for p in verify(keys, rec.header, rec.segments, rec.index, bytes(seal)).problems] == [
        "bad_mac"
    ]


def test_an_unknown_key_is_named_not_crashed_on(rec: Recorded) -> None:
    stranger = Keyring([os.urandom(32)], [ENC_NEW])
    result = verify(stranger, rec.header, rec.segments, rec.index, rec.seal)
    assert {p.kind for p in result.problems} == {"unknown_key"}
    assert "not configured" in result.summary()
    # The right MAC key but not the encryption key: named as well.
    no_enc = Keyring([HMAC_NEW])
    with pytest.raises(RecordingError) as caught:
        RecordingReader(no_enc, rec.header).segment(0, rec.segments[0])
    assert caught.value.problem.kind == "unknown_key" and "encrypted" in str(caught.value)


def test_rotation_old_keys_still_verify_and_decrypt_new_keys_sign(rec: Recorded) -> None:
    """rec was made with HMAC_NEW/ENC_NEW first. Rotate again: a newer key first, the others kept."""
    newest_mac, newest_enc = os.urandom(32), os.urandom(32)
    rotated = Keyring([newest_mac, HMAC_NEW, HMAC_OLD], [newest_enc, ENC_NEW, ENC_OLD])
    assert verify(rotated, rec.header, rec.segments, rec.index, rec.seal).ok
    fresh = Recorded(rotated)
    assert verify(
        Keyring([newest_mac], [newest_enc]), fresh.header, fresh.segments, fresh.index, fresh.seal
    ).ok
    # ...and the dropped keys no longer do: a keyring without the new keys cannot read what they made.
    assert not verify(
        Keyring([HMAC_NEW], [ENC_NEW]), fresh.header, fresh.segments, fresh.index, fresh.seal
    ).ok


def test_typed_text_and_histogram_in_the_index(keys: Keyring, rec: Recorded) -> None:
    index = verify(keys, rec.header, rec.segments, rec.index, rec.seal).index
    assert index is not None and index.typed is not None
    assert [(run.t, run.text) for run in index.typed] == [(2000, "ls\n")]
    assert index.find("LS") == [2000]
    assert index.bytes_out == [10 * len(_update(0))] * 3
    assert index.inputs == [0, 0, 6]
    assert [m["kind"] for _, m in index.markers] == ["opened", "resized", "closed"]
    assert index.duration == 2960


def test_without_input_recording_keys_are_counted_but_neither_stored_nor_indexed(keys: Keyring) -> None:
    rec = Recorded(keys, record_input=False)
    result = verify(keys, rec.header, rec.segments, rec.index, rec.seal)
    assert result.ok and result.index is not None
    assert result.index.typed is None and result.index.inputs == [0, 0, 6]
    reader = RecordingReader(keys, rec.header)
    kinds = {r.kind for n, data in enumerate(rec.segments) for r in reader.segment(n, data).records}
    assert INPUT not in kinds


def test_index_offsets_point_at_the_segments_in_the_packed_file(keys: Keyring, rec: Recorded) -> None:
    packed = b"".join(pack(rec.header, rec.segments, rec.index, rec.seal))
    index = verify(keys, rec.header, rec.segments, rec.index, rec.seal).index
    assert index is not None
    for entry, data in zip(index.segments, rec.segments, strict=True):
        assert packed[entry.offset : entry.offset + entry.size] == data
    assert [(e.start, e.end, e.width) for e in index.segments] == [(0, 1000, 1024), (1000, 2000, 1024),
                                                                   (2000, 2960, 800)]  # fmt: skip
    assert index.segment_at(1500) == index.segments[1] and index.segment_at(9999) == index.segments[2]
    parts = unpack(packed)
    assert parts.complete and parts.segments == rec.segments and parts.seal == rec.seal
    cut = unpack(packed[: index.segments[2].offset + 10])
    assert not cut.complete and cut.segments == rec.segments[:2] and cut.seal is None


def test_a_sealed_index_checks_a_single_segment_opened_out_of_order(keys: Keyring, rec: Recorded) -> None:
    reader = RecordingReader(keys, rec.header)
    reader.index(rec.index, reader.seal(rec.seal))
    other = Recorded(keys)
    with pytest.raises(RecordingError) as caught:
        reader.segment(2, other.segments[2])  # validly signed, same id and number: only the index knows
    assert caught.value.problem.kind == "chain"
    assert reader.segment(2, rec.segments[2]).number == 2


def test_segments_compress_on_their_own(keys: Keyring) -> None:
    """Each segment decompresses without the ones before it (a zstd frame per segment), and a screen that
    repeats itself costs far less than its raw size."""
    w = RecordingWriter(_header(), Keyring([HMAC_NEW]))
    frame = _update(7) * 4096
    for t in range(10):
        w.server(t, frame)
    data = w.build(w.close(10))
    assert len(data) < len(frame)
    body = data[98:-32]  # after the fixed 98-byte segment header, before the MAC
    assert zstandard.ZstdDecompressor().decompress(body).count(frame) == 10


def test_a_signed_segment_that_decompresses_past_its_stated_size_is_refused() -> None:
    """Only a key holder can sign a body, and even then a frame larger than the authenticated raw length
    is refused (before decompressing when the frame says so, by the decoder when it lies): hostile input
    never makes the reader allocate more than the header promised."""
    ring = Keyring([HMAC_NEW])
    w = RecordingWriter(_header(), ring)
    w.server(1, _update(1))
    honest = w.build(w.close(2))
    raw_len = struct.unpack_from(">I", honest, 30)[0]
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))  # 64 MiB of zeros, a few KiB
    lying = bytearray(bomb)
    assert lying[4] == 0x80  # frame header: a 4-byte content size after the window byte
    lying[6:10] = raw_len.to_bytes(4, "little")
    assert zstandard.frame_content_size(bytes(lying)) == raw_len
    rid_label = b"novnc-gateway recording segment\x00" + b"c0ffee"
    for body in (bomb, bytes(lying)):
        fixed = honest[:94] + len(body).to_bytes(4, "big")
        stored = fixed + body
        stored += ring.sign(rid_label, stored)
        reader = RecordingReader(ring, w.header_bytes)
        tracemalloc.start()
        try:
            with pytest.raises(RecordingError) as caught:
                reader.segment(0, stored)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert caught.value.problem.kind == "malformed"
        assert peak < 1 << 20  # nowhere near the 64 MiB the frame holds


def test_large_messages_are_recorded_as_they_were_when_fed(keys: Keyring) -> None:
    """Large server messages are kept by reference until the segment is built: a caller's buffer reused
    after `server` (a bytearray) must not change what was recorded, and big and small records keep their
    order and sizes."""
    w = RecordingWriter(_header(), keys)
    big, reused = _update(1) * 2048, bytearray(_update(2) * 2048)
    fed = [big, b"\x02", bytes(reused), _update(3), big]
    w.server(1, big)
    w.server(2, b"\x02")
    w.server(3, reused)
    reused[:] = bytes(len(reused))
    w.server(4, _update(3))
    w.server(5, big)
    assert w.buffered > 3 * len(big)
    data = w.build(w.close(6))
    records = RecordingReader(keys, w.header_bytes).segment(0, data).records
    assert [r.data for r in records] == fed and [r.t for r in records] == [1, 2, 3, 4, 5]


def test_writer_misuse_raises(keys: Keyring) -> None:
    w = RecordingWriter(_header(), keys)
    first = w.cut(10)
    second = w.close(20)
    with pytest.raises(RuntimeError):
        w.build(second)  # out of order
    with pytest.raises(RuntimeError):
        w.finish()  # segments not built
    w.build(first)
    w.build(second)
    with pytest.raises(RuntimeError):
        w.server(30, b"late")
    index, seal = w.finish()
    assert [p.kind for p in verify(keys, w.header_bytes, [], index, seal).problems] == ["truncated"]


def test_final_meta_carries_the_close_code_and_size(keys: Keyring, rec: Recorded) -> None:
    meta = rec.writer.final_meta()
    assert meta["close_code"] == 1000 and meta["duration_ms"] == 2960
    assert meta["bytes"] == sum(map(len, rec.segments)) and meta["segments"] == 3
    assert meta["start"] == 1_700_000_000.5 and meta["tags"] == ["env=prod"] and meta["user"] == "alice"
