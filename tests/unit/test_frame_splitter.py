"""FrameSplitter: the sans-IO half of the relay's downstream pass-through (gateway/consoles/frames.py)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consoles.frames import FrameError, FrameSplitter


def frame(payload: bytes, opcode: int = 0x2, fin: bool = True, rsv: int = 0, masked: bool = False) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack(">BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack(">BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack(">BBQ", first, mask_bit | 127, n)
    return head + (b"\x00\x00\x00\x00" if masked else b"") + payload


def feed(splitter: FrameSplitter, data: bytes) -> list[tuple[int, bool, int, bytes]]:
    """The frames of one feed, each as (opcode, fin, length, its bytes)."""
    chunk, frames = splitter.feed(data)
    return [
        (op, fin, n, chunk[start:end] if pieces is None else b"".join(bytes(p) for p in pieces))
        for op, fin, n, pieces, start, end in frames
    ]


STREAM = [
    frame(b""),
    frame(b"RFB 003.008\n"),
    frame(b"\x09" * 125, opcode=0x9),  # a ping between data frames
    frame(os.urandom(200)),
    frame(os.urandom(70_000)),  # 64-bit length
    frame(b"first", fin=False),
    frame(b"\x00\x01", opcode=0xA),  # control frames may sit inside a fragmented message
    frame(b"second", opcode=0x0, fin=False),
    frame(b"last", opcode=0x0),
    frame(b"text", opcode=0x1),
]


@given(st.lists(st.integers(min_value=1, max_value=70_000), max_size=40))
def test_any_chunking_yields_the_same_whole_frames(cuts: list[int]) -> None:
    data = b"".join(STREAM)
    splitter = FrameSplitter(1 << 20)
    out = []
    pos = 0
    for cut in cuts:
        out += feed(splitter, data[pos : pos + cut])
        pos += cut
        if pos >= len(data):
            break
    out += feed(splitter, data[pos:]) if pos < len(data) else []
    frames = out
    assert [f[3] for f in frames] == STREAM  # byte-identical, header included, in order
    assert [(f[0], f[1]) for f in frames][5:9] == [(0x2, False), (0xA, True), (0x0, False), (0x0, True)]
    assert not splitter.in_fragmented_message


def test_frames_are_offsets_into_the_chunk_or_uncopied_pieces() -> None:
    chunk = frame(b"a" * 1000) + frame(b"b" * 10)
    data, frames = FrameSplitter(0).feed(chunk)
    assert data is chunk
    assert [(f[3], f[4], f[5]) for f in frames] == [(None, 0, 1004), (None, 1004, 1016)]
    s = FrameSplitter(0)
    assert s.feed(chunk[:500])[1] == []
    _data, (straddled, second) = s.feed(chunk[500:])
    assert all(isinstance(p, memoryview) for p in straddled[3])
    assert b"".join(bytes(p) for p in straddled[3]) == chunk[:1004]
    assert second[3] is None


def test_fragmentation_state_is_tracked() -> None:
    s = FrameSplitter(0)
    s.feed(frame(b"a", fin=False))
    assert s.in_fragmented_message
    s.feed(frame(b"b", opcode=0x0))
    assert not s.in_fragmented_message


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (frame(b"x", masked=True), "masked"),
        (frame(b"x", rsv=0x40), "reserved"),
        (frame(b"x", opcode=0x3), "opcode"),
        (frame(b"x" * 126, opcode=0x9), "control"),
        (frame(b"x", opcode=0x8, fin=False), "control"),
        (frame(b"x", opcode=0x0), "continuation"),
        (frame(b"x", fin=False) + frame(b"y"), "inside a fragmented"),
        (frame(b"x" * 1025), "larger"),
        (frame(b"x" * 600, fin=False) + frame(b"y" * 600, opcode=0x0), "larger"),
        (b"\x82\x7f" + b"\xff" * 8, "range"),
    ],
)
def test_invalid_streams_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        FrameSplitter(1024).feed(data)


def test_an_over_long_frame_is_refused_from_its_header_before_its_payload_arrives() -> None:
    header = frame(b"x" * 5000)[:4]
    with pytest.raises(FrameError):
        FrameSplitter(4096).feed(header)
