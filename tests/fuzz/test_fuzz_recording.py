"""The recording reader against hostile recordings (docs/recording.md, "Integrity").

Properties: whatever bytes arrive as a header, segment, index, seal or packed file, the reader raises
nothing but RecordingError (and `verify` nothing at all); a segment whose MAC is valid but whose records
are garbage (what only a key holder could make) is refused as malformed, never crashes; an edited byte of
a valid segment is always caught; and any sequence of events comes back from the reader exactly as fed.
"""

from __future__ import annotations

import json
import os

from hypothesis import given
from hypothesis import strategies as st

from gateway.recording.format import (
    INPUT,
    MARKER,
    SERVER,
    Header,
    Keyring,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    Screen,
    SegmentDraft,
    unpack,
    verify,
)
from gateway.recording.index import Index
from tests.fuzz import tried

KEYS = Keyring([os.urandom(32)], [os.urandom(32)])
PLAIN_KEYS = Keyring([os.urandom(32)])
HEADER = Header(
    id="fuzz",
    start=0.0,
    user="u",
    groups=(),
    server_id="s",
    server_name="n",
    cloud="c",
    permission="view",
    rfb_version="RFB 003.008",
    width=8,
    height=8,
    pixel_format=bytes(16),
    name="d",
    encodings=(0,),
    record_input=True,
)


def _writer(keys: Keyring = KEYS) -> RecordingWriter:
    return RecordingWriter(HEADER, keys)


def _valid() -> tuple[bytes, list[bytes], bytes, bytes]:
    w = _writer()
    w.server(5, b"\0\0\0\1" + bytes(32))
    w.client(6, b"\x04\x01\0\0\0\0\0\x61")
    first = w.build(w.cut(10))
    w.marker(11, "closed", code=1000)
    last = w.build(w.close(12))
    index, seal = w.finish()
    return w.header_bytes, [first, last], index, seal


HEADER_BYTES, SEGMENTS, INDEX, SEAL = _valid()


@given(st.binary(max_size=400), st.sampled_from(["header", "segment", "index", "seal", "packed"]))
def test_arbitrary_bytes_raise_only_recording_error(data: bytes, part: str) -> None:
    tried(f"recording: arbitrary {part}")
    try:
        if part == "header":
            RecordingReader(KEYS, data)
        elif part == "packed":
            unpack(data)
        else:
            reader = RecordingReader(KEYS, HEADER_BYTES)
            if part == "segment":
                reader.segment(0, data)
            elif part == "index":
                reader.index(data)
            else:
                reader.seal(data)
    except RecordingError as exc:
        assert exc.problem.message


@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=300)), max_size=4),
    st.one_of(st.none(), st.binary(max_size=200)),
    st.one_of(st.none(), st.binary(max_size=200)),
)
def test_verify_never_raises(segments: list[bytes | None], index: bytes | None, seal: bytes | None) -> None:
    tried("recording: verify of garbage")
    result = verify(KEYS, HEADER_BYTES, segments, index, seal)
    assert not result.ok and result.problems


# Mostly record-shaped bytes (a kind byte, small varints), so the decoder gets past the first record.
_RECORD = st.tuples(st.integers(0, 5), st.binary(max_size=3), st.binary(max_size=40)).map(
    lambda r: bytes([r[0]]) + r[1] + bytes([len(r[2]) % 200]) + r[2]
)


@given(
    st.lists(_RECORD, max_size=8).map(b"".join) | st.binary(max_size=300), st.integers(0, 10), st.booleans()
)
def test_signed_garbage_records_are_malformed_not_a_crash(raw: bytes, count: int, encrypted: bool) -> None:
    """Records no writer would make, in a segment signed with a configured key: only a key holder can
    do this, and still the reader only says "malformed"."""
    tried("recording: signed garbage records")
    keys = KEYS if encrypted else PLAIN_KEYS
    w = _writer(keys)
    data = w.build(SegmentDraft(0, 0, 1, count, (raw,), Screen(8, 8, bytes(16), "d")))
    try:
        segment = RecordingReader(keys, w.header_bytes).segment(0, data)
    except RecordingError as exc:
        assert exc.problem.kind == "malformed" and exc.problem.segment == 0
    else:
        assert len(segment.records) == count - 1  # the screen record is not among them


@given(st.integers(0, len(SEGMENTS[0]) - 1), st.integers(1, 255))
def test_any_edited_byte_of_a_segment_is_caught(position: int, flip: int) -> None:
    tried("recording: one edited byte")
    edited = bytearray(SEGMENTS[0])
    edited[position] ^= flip
    result = verify(KEYS, HEADER_BYTES, [bytes(edited), SEGMENTS[1]], INDEX, SEAL)
    assert not result.ok
    assert result.problems[0].segment == 0 and result.problems[0].kind in ("edited", "unknown_key")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
_INDEX_KEYS = ["v", "duration", "segments", "bytes_out", "inputs", "markers", "typed"]


@given(st.dictionaries(st.sampled_from(_INDEX_KEYS), _JSON, max_size=7), st.booleans())
def test_an_index_of_any_shape_is_refused_with_value_error(doc: dict[str, object], v1: bool) -> None:
    tried("recording: index shapes")
    if v1:
        doc["v"] = 1
    try:
        Index.from_bytes(json.dumps(doc).encode())
    except ValueError as exc:
        assert str(exc).startswith("index")


_EVENT = st.tuples(
    st.sampled_from([SERVER, INPUT, MARKER]), st.integers(0, 3000), st.binary(min_size=0, max_size=60)
)


@given(st.lists(_EVENT, max_size=40), st.lists(st.integers(0, 40), max_size=4))
def test_every_event_comes_back_as_fed(events: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    tried("recording: round trip")
    w = _writer()
    segments, fed, t = [], [], 0
    for i, (kind, dt, data) in enumerate(events):
        t += dt
        if i in cuts:
            segments.append(w.build(w.cut(t)))
        if kind == SERVER:
            w.server(t, data)
            fed.append((SERVER, t, data))
        elif kind == INPUT:
            w.client(t, data)
            fed.append((INPUT, t, data))
        else:
            w.marker(t, "notice", text=data.hex())
            fed.append(
                (
                    MARKER,
                    t,
                    json.dumps({"kind": "notice", "text": data.hex()}, separators=(",", ":")).encode(),
                )
            )
    segments.append(w.build(w.close(t)))
    index, seal = w.finish()
    result = verify(KEYS, w.header_bytes, segments, index, seal)
    assert result.ok, result.summary()
    reader = RecordingReader(KEYS, w.header_bytes)
    got = [tuple(r) for n, data in enumerate(segments) for r in reader.segment(n, data).records]
    assert got == fed
