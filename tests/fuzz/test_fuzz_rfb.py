"""The view-only filter against hostile client streams.

Properties: it never raises anything but RFBProtocolError; what it forwards is a handshake whose
ClientInit says "shared" followed by whole messages of the allowed kinds only (checked by an independent
parser below), so no key, pointer, clipboard, power or resize byte ever passes; it never holds more than
`max_buffer` bytes whatever length a message claims; and valid streams come out exactly as expected under
any chunking. The server's side of the handshake is fed first (`feed_server`), as the relay does.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from gateway.rfb import ClientMessageFilter, RFBProtocolError
from tests.fuzz import tried

HANDSHAKE = b"RFB 003.008\n\x01\x01"
# The server's side: version, security types [None, VncAuth], then (VNC auth only) the challenge, then OK.
SERVER = b"RFB 003.008\n\x02\x01\x02"
SERVER_NONE = SERVER + b"\0\0\0\0"
SERVER_VNC_AUTH = SERVER + bytes(range(16)) + b"\0\0\0\0"
MAX_BUFFER = 4096


def _view_only(**kwargs: int) -> ClientMessageFilter:
    filt = ClientMessageFilter(view_only=True, max_buffer=MAX_BUFFER, **kwargs)  # type: ignore[arg-type]
    filt.feed_server(SERVER_NONE)
    return filt


def _allowed_only(stream: bytes, server: bytes = SERVER_NONE) -> bool:
    """Independent reader of a view-only output stream, given what the server said: handshake with a
    shared ClientInit, then only pixel-format, encodings, update-request, continuous-updates and fence
    messages, each complete."""
    if not stream:
        return True
    if not stream.startswith(b"RFB 003."):
        return False
    pos = 12
    minor = int(stream[8:11])
    if server.startswith(b"RFB 003.") and server[8:11].isdigit():
        minor = min(minor, int(server[8:11]))  # the lower of the two versions is spoken
    if minor < 7:  # 3.3: the server chose; VNC auth means a 16-byte response first
        pos += 16 if server[12:16] == b"\0\0\0\x02" else 0
    else:
        if len(stream) < pos + 1:
            return True
        sec = stream[pos]
        pos += 1
        if sec == 2:
            pos += 16
        elif sec != 1:
            return False
    if pos < len(stream) and stream[pos] != 1:
        return False  # ClientInit must say "shared"
    pos += 1
    while pos < len(stream):
        kind = stream[pos]
        if kind == 0:
            size = 20
        elif kind == 2:
            count = struct.unpack_from(">H", stream, pos + 2)[0]
            size = 4 + 4 * count
        elif kind in (3, 150):
            size = 10
        elif kind == 248:
            size = 9 + stream[pos + 8]
        else:
            return False  # key 4, pointer 5, cut text 6, xvp 250, resize 251, qemu 255, anything else
        if pos + size > len(stream):
            return False  # the filter forwards whole messages only
        pos += size
    return True


def _msg_allowed() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from([8, 16, 32]).map(
            lambda bpp: struct.pack(">B3xBBBBHHHBBB3x", 0, bpp, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        ),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40).map(
            lambda encs: struct.pack(">BxH", 2, len(encs)) + b"".join(struct.pack(">i", e) for e in encs)
        ),
        st.tuples(st.integers(0, 1), st.integers(0, 65535), st.integers(0, 65535)).map(
            lambda t: struct.pack(">BBHHHH", 3, t[0], t[1], t[2], 800, 600)
        ),
        st.integers(0, 1).map(lambda e: struct.pack(">BBHHHH", 150, e, 0, 0, 800, 600)),
        st.binary(max_size=64).map(lambda p: struct.pack(">B3xIB", 248, 0x80000000, len(p)) + p),
    )


def _msg_dropped() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.integers(0, 2**32 - 1).map(lambda k: struct.pack(">BBxxI", 4, 1, k)),
        st.tuples(st.integers(0, 127), st.integers(0, 65535)).map(
            lambda t: struct.pack(">BBHH", 5, t[0], t[1], t[1])
        ),
        st.binary(max_size=300).map(lambda d: struct.pack(">B3xi", 6, len(d)) + d),
        st.binary(max_size=300).map(lambda d: struct.pack(">B3xi", 6, -len(d)) + d),
        st.integers(2, 4).map(lambda op: struct.pack(">BxBB", 250, 1, op)),
        st.integers(0, 3).map(lambda n: struct.pack(">BxHHBx", 251, 800, 600, n) + b"\0" * (16 * n)),
        st.just(struct.pack(">BBHII", 255, 0, 1, 0x61, 30)),
        st.sampled_from([0, 1]).map(lambda op: struct.pack(">BBH", 255, 1, op)),
    )


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@given(
    st.lists(st.tuples(st.booleans(), st.data()), max_size=30),
    st.lists(st.integers(0, 10_000), max_size=20),
    st.data(),
    st.integers(0, 255),
)
def test_valid_streams_forward_exactly_the_allowed_messages(
    plan: list[tuple[bool, st.DataObject]], cuts: list[int], data: st.DataObject, shared: int
) -> None:
    tried("rfb: valid streams, random chunking")
    messages = [(ok, data.draw(_msg_allowed() if ok else _msg_dropped())) for ok, _ in plan]
    stream = HANDSHAKE[:-1] + bytes([shared]) + b"".join(m for _, m in messages)
    expected = HANDSHAKE + b"".join(m for ok, m in messages if ok)  # ClientInit goes as 1 whatever it said
    filt = _view_only()
    out, dropped = bytearray(), 0
    for piece in _chunked(stream, cuts):
        result = filt.feed(piece)
        out += result.forward
        dropped += result.dropped
        assert filt.buffered <= MAX_BUFFER
    assert bytes(out) == expected
    assert dropped == sum(1 for ok, _ in messages if not ok)
    assert filt.buffered == 0


_TYPES = [0, 2, 3, 4, 5, 6, 150, 248, 250, 251, 255]
# Mostly chunks that start like a real message, so the parser gets past the first byte.
_CHUNKS = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from(_TYPES), st.binary(max_size=120)).map(lambda t: bytes([t[0]]) + t[1]),
)


@given(st.lists(_CHUNKS, max_size=40), st.booleans())
def test_arbitrary_bytes_after_the_handshake_never_let_input_through(
    chunks: list[bytes], vnc_auth: bool
) -> None:
    tried("rfb: arbitrary bytes")
    filt = ClientMessageFilter(view_only=True, max_buffer=MAX_BUFFER)
    filt.feed_server(SERVER_VNC_AUTH if vnc_auth else SERVER_NONE)
    head = b"RFB 003.008\n" + (b"\x02" + b"\0" * 16 if vnc_auth else b"\x01") + b"\x01"
    out = bytearray(filt.feed(head).forward)
    failed = False
    for chunk in chunks:
        try:
            out += filt.feed(chunk).forward
        except RFBProtocolError:
            failed = True
            break
        assert filt.buffered <= MAX_BUFFER
    assert _allowed_only(bytes(out))
    if failed:
        try:
            filt.feed(b"\x04")
        except RFBProtocolError:
            pass
        else:
            raise AssertionError("a failed stream accepted more input")


_SERVER_SIDES = st.one_of(
    st.sampled_from(
        [
            SERVER_NONE,
            SERVER_VNC_AUTH,
            b"RFB 003.003\n\0\0\0\x01",
            b"RFB 003.003\n\0\0\0\x02" + bytes(16) + b"\0\0\0\0",
            b"RFB 003.007\n\x01\x01",
            b"RFB 003.008\n\x00\0\0\0\x04nope",
        ]
    ),
    st.binary(max_size=64),
)


def _as_sent_except_clientinit(out: bytes, sent: bytes) -> bool:
    """`out` is a prefix of `sent`, but for at most one byte the filter set to 1 (ClientInit)."""
    if len(out) > len(sent):
        return False
    changed = [i for i, (a, b) in enumerate(zip(out, sent, strict=False)) if a != b]
    return len(changed) <= 1 and all(out[i] == 1 for i in changed)


@given(_SERVER_SIDES, st.binary(max_size=64), st.lists(st.binary(max_size=64), max_size=10))
def test_arbitrary_handshakes_never_crash_any_mode(server: bytes, first: bytes, rest: list[bytes]) -> None:
    """View-only forwards only what the oracle allows; control forwards what came, but for ClientInit;
    control allowed exclusive access forwards what came, untouched."""
    tried("rfb: arbitrary handshakes")
    for view_only, allow_exclusive in ((True, False), (False, False), (False, True)):
        filt = ClientMessageFilter(
            view_only=view_only, allow_exclusive=allow_exclusive, max_buffer=MAX_BUFFER
        )
        filt.feed_server(server)
        out, sent = bytearray(), bytearray()
        try:
            for chunk in [first, *rest]:
                sent += chunk
                out += filt.feed(chunk).forward
        except RFBProtocolError:
            pass
        if view_only:
            assert _allowed_only(bytes(out), server)
        elif allow_exclusive:
            assert bytes(sent).startswith(bytes(out))
        else:
            assert _as_sent_except_clientinit(bytes(out), bytes(sent))


@given(st.integers(MAX_BUFFER + 1, 2**31 - 1), st.integers(256, 65536), st.sampled_from([6, 2]))
def test_claimed_lengths_never_make_it_buffer(claimed: int, chunk: int, kind: int) -> None:
    """A message claiming gigabytes is streamed past (dropped kinds) or refused (allowed kinds) early."""
    tried("rfb: huge claimed lengths")
    filt = _view_only(max_cut_text=1 << 20)
    filt.feed(HANDSHAKE)
    if kind == 6:
        header = struct.pack(">B3xi", 6, claimed)
    else:
        header = struct.pack(">BxH", 2, min(claimed // 4, 65535))
    try:
        filt.feed(header)
        sent = 0
        while sent < min(claimed, 1 << 18):
            assert not filt.feed(b"\x04" * chunk).forward
            assert filt.buffered <= MAX_BUFFER
            sent += chunk
    except RFBProtocolError:
        return
