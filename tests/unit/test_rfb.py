"""The client-message filter: the handshake as the server leads it, ClientInit always shared,
byte-exact forwarding, view-only drops, chunking independence."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rfb import (
    COPY_SAFE_ENCODINGS,
    RECORDABLE_ENCODINGS,
    ClientMessageFilter,
    FilterResult,
    RFBProtocolError,
    ServerMessageFilter,
)

# --- message builders, laid out as noVNC's RFB.messages writes them -------------------------

HANDSHAKE_38_NONE = b"RFB 003.008\n" + b"\x01" + b"\x01"
V38, V37, V33 = b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"
OK = bytes(4)  # SecurityResult: OK
CHALLENGE = bytes(range(100, 116))
RESPONSE = bytes(range(16))
# The server's side of a 3.8 handshake offering None, sent ahead (the filter waits for the client).
SERVER_38_NONE = V38 + b"\x01\x01" + OK


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def server_led(*, view_only: bool, **kwargs: int) -> ClientMessageFilter:
    """A filter that has seen the server's side of a 3.8 handshake offering None."""
    filt = ClientMessageFilter(view_only=view_only, **kwargs)  # type: ignore[arg-type]
    assert filt.feed_server(SERVER_38_NONE)
    return filt


def set_pixel_format(bpp: int = 32, depth: int = 24) -> bytes:
    return struct.pack(">B3xBBBBHHHBBB3x", 0, bpp, depth, 0, 1, 255, 255, 255, 0, 8, 16)


def set_encodings(*encodings: int) -> bytes:
    return struct.pack(">BxH", 2, len(encodings)) + b"".join(struct.pack(">i", e) for e in encodings)


def fbur(incremental: int = 1, x: int = 0, y: int = 0, w: int = 1024, h: int = 768) -> bytes:
    return struct.pack(">BBHHHH", 3, incremental, x, y, w, h)


def key_event(down: int = 1, keysym: int = 0x61) -> bytes:
    return struct.pack(">BBxxI", 4, down, keysym)


def pointer(mask: int = 1, x: int = 10, y: int = 20) -> bytes:
    return struct.pack(">BBHH", 5, mask & 0x7F, x, y)


def ext_pointer(mask: int = 0x100, x: int = 10, y: int = 20) -> bytes:
    return struct.pack(">BBHHB", 5, (mask & 0x7F) | 0x80, x, y, (mask >> 7) & 0xFF)


def cut_text(data: bytes = b"hello", extended: bool = False) -> bytes:
    length = -len(data) if extended else len(data)
    return struct.pack(">B3xi", 6, length) + data


def continuous_updates(enable: int = 1) -> bytes:
    return struct.pack(">BBHHHH", 150, enable, 0, 0, 800, 600)


def fence(flags: int = 0x80000000, payload: bytes = b"") -> bytes:
    return struct.pack(">B3xIB", 248, flags, len(payload)) + payload


def xvp(op: int = 2) -> bytes:  # 2 = reboot, 3 = reset, 4 = shutdown
    return struct.pack(">BxBB", 250, 1, op)


def set_desktop_size(w: int = 800, h: int = 600, screens: int = 1) -> bytes:
    head = struct.pack(">BxHHBx", 251, w, h, screens)
    return head + b"".join(struct.pack(">IHHHHI", i, 0, 0, w, h, 0) for i in range(screens))


def qemu_key(down: int = 1, keysym: int = 0x61, keycode: int = 30) -> bytes:
    return struct.pack(">BBHII", 255, 0, down, keysym, keycode)


def qemu_audio(op: int = 0) -> bytes:
    if op == 2:
        return struct.pack(">BBHBBI", 255, 1, 2, 3, 2, 44100)
    return struct.pack(">BBH", 255, 1, op)


ALLOWED = {
    "SetPixelFormat": set_pixel_format(),
    "SetEncodings": set_encodings(7, 16, 0, -223, -224),
    "FramebufferUpdateRequest": fbur(),
    "EnableContinuousUpdates": continuous_updates(),
    "ClientFence": fence(payload=b"\x01\x02\x03"),
}
DROPPED = {
    "KeyEvent": key_event(),
    "PointerEvent": pointer(),
    "ClientCutText": cut_text(b"secret clipboard"),
    "ClientCutText-extended": cut_text(b"\x00\x00\x00\x01zzzz", extended=True),
    "XVP": xvp(),
    "SetDesktopSize": set_desktop_size(screens=2),
    "QEMUExtendedKeyEvent": qemu_key(),
    "QEMUAudio": qemu_audio(0),
    "QEMUAudio-format": qemu_audio(2),
}
INPUT_KINDS = {"KeyEvent", "PointerEvent", "ClientCutText", "ClientCutText-extended", "QEMUExtendedKeyEvent"}


def run(filt: ClientMessageFilter, chunks: list[bytes]) -> tuple[bytes, int, int]:
    out, dropped, inputs = [], 0, 0
    for chunk in chunks:
        res = filt.feed(chunk)
        out.append(res.forward)
        dropped += res.dropped
        inputs += res.input_events
    return b"".join(out), dropped, inputs


def splits(data: bytes) -> list[list[bytes]]:
    """Every two-piece split, plus byte by byte."""
    ways = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    ways.append([data[i : i + 1] for i in range(len(data))])
    return ways


Turns = list[tuple[str, bytes]]


def converse(filt: ClientMessageFilter, turns: Turns, *, bytewise: bool = False) -> bytes:
    """Play a conversation in order: ("s", bytes) to feed_server, ("c", bytes) to feed, each turn
    whole or one byte at a time. Returns what went upstream."""
    out = bytearray()
    for side, data in turns:
        for piece in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
            if side == "s":
                filt.feed_server(piece)
            else:
                out += filt.feed(piece).forward
    return bytes(out)


def client_side(turns: Turns) -> bytes:
    return b"".join(data for side, data in turns if side == "c")


# --- handshake ---------------------------------------------------------------------------


# Each ends with a ClientInit asking for exclusive access (0): upstream it must say shared (1).
CONVERSATIONS: dict[str, Turns] = {
    "3.8 None": [("s", V38), ("c", V38), ("s", b"\x01\x01"), ("c", b"\x01"), ("s", OK), ("c", b"\x00")],
    "3.8 VncAuth": [
        ("s", V38),
        ("c", V38),
        ("s", b"\x02\x01\x02"),
        ("c", b"\x02"),
        ("s", CHALLENGE),
        ("c", RESPONSE),
        ("s", OK),
        ("c", b"\x00"),
    ],
    "3.7 None": [("s", V37), ("c", V37), ("s", b"\x01\x01"), ("c", b"\x01"), ("c", b"\x00")],
    "3.7 VncAuth": [
        ("s", V37),
        ("c", V37),
        ("s", b"\x01\x02"),
        ("c", b"\x02"),
        ("s", CHALLENGE),
        ("c", RESPONSE),
        ("s", OK),
        ("c", b"\x00"),
    ],
    # 3.3: the server picks the security type; a 3.8 server follows a 3.3 client down.
    "3.3 None": [("s", V38), ("c", V33), ("s", u32(1)), ("c", b"\x00")],
    "3.3 VncAuth": [
        ("s", V33),
        ("c", V33),
        ("s", u32(2) + CHALLENGE),
        ("c", RESPONSE),
        ("s", OK),
        ("c", b"\x00"),
    ],
    "3.3 server, 3.8 client": [("s", V33), ("c", V38), ("s", u32(1)), ("c", b"\x00")],
    "3.889 (Apple)": [
        ("s", b"RFB 003.889\n"),
        ("c", b"RFB 003.889\n"),
        ("s", b"\x01\x01"),
        ("c", b"\x01"),
        ("s", OK),
        ("c", b"\x00"),
    ],
}


@pytest.mark.parametrize("view_only", [True, False])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_handshake_follows_the_server_and_clientinit_goes_shared(name: str, view_only: bool) -> None:
    turns = CONVERSATIONS[name]
    sent = client_side(turns)
    later = fbur() + key_event() + fbur(0)
    after = fbur() + fbur(0) if view_only else later
    for how in ("turns", "byte by byte", "server ahead"):
        filt = ClientMessageFilter(view_only=view_only)
        if how == "server ahead":  # a server may send its whole side at once; the filter waits
            filt.feed_server(b"".join(data for side, data in turns if side == "s"))
            out = converse(filt, [("c", sent + later)])
        else:
            out = converse(filt, [*turns, ("c", later)], bytewise=how == "byte by byte")
        assert out == sent[:-1] + b"\x01" + after, how
        assert not filt.passthrough, how  # past the handshake and parsing messages, not given up
        assert filt.feed_server(b"RFB 003.008\n") is False  # the server's bytes no longer matter


def test_exclusive_access_only_for_control_and_only_with_the_option() -> None:
    turns = CONVERSATIONS["3.8 None"]
    for view_only, allow_exclusive, flag in ((True, True, 1), (False, False, 1), (False, True, 0)):
        filt = ClientMessageFilter(view_only=view_only, allow_exclusive=allow_exclusive)
        assert converse(filt, turns)[-1] == flag, (view_only, allow_exclusive)


def test_the_server_side_is_followed_only_while_it_matters() -> None:
    filt = ClientMessageFilter(view_only=True)
    assert filt.feed_server(V38) is True
    filt.feed(V38)
    assert filt.feed_server(b"\x01\x01") is True
    filt.feed(b"\x01")
    assert filt.feed_server(OK) is False  # what the server says from here on changes nothing
    assert filt.feed(b"\x00").forward == b"\x01"


@pytest.mark.parametrize("allow_exclusive", [False, True])
@pytest.mark.parametrize("view_only", [True, False])
@pytest.mark.parametrize(
    "turns",
    [
        [("s", V33), ("c", V33 + b"\x00")],  # ClientInit before the server picked the security type
        [("c", V38 + b"\x01\x01")],  # before the server said anything
    ],
    ids=["3.3 before the security type", "before the server's version"],
)
def test_a_client_that_speaks_out_of_turn_is_refused(
    turns: Turns, view_only: bool, allow_exclusive: bool
) -> None:
    filt = ClientMessageFilter(view_only=view_only, allow_exclusive=allow_exclusive)
    with pytest.raises(RFBProtocolError, match="before the console server answered"):
        converse(filt, turns)


@pytest.mark.parametrize(
    "turns",
    [
        [("s", V38), ("c", V33), ("s", u32(0) + u32(4) + b"nope")],
        [("s", V38), ("c", V38), ("s", b"\x00" + u32(4) + b"nope")],
        [
            ("s", V38),
            ("c", V38),
            ("s", b"\x01\x02"),
            ("c", b"\x02"),
            ("s", CHALLENGE),
            ("c", RESPONSE),
            ("s", u32(1) + u32(4) + b"nope"),
        ],
        [
            ("s", V37),
            ("c", V37),
            ("s", b"\x01\x02"),
            ("c", b"\x02"),
            ("s", CHALLENGE),
            ("c", RESPONSE),
            ("s", u32(1)),
        ],
    ],
    ids=["3.3 refused", "3.8 no security types", "3.8 authentication failed", "3.7 authentication failed"],
)
def test_a_server_refusal_ends_the_client_side(turns: Turns) -> None:
    for view_only in (True, False):
        filt = ClientMessageFilter(view_only=view_only)
        assert converse(filt, turns, bytewise=True) == client_side(turns)
        assert filt.feed_server(b"") is False
        with pytest.raises(RFBProtocolError, match="refused"):
            filt.feed(b"\x00")


@pytest.mark.parametrize(
    "turns",
    [
        [("s", V38), ("c", V33), ("s", u32(19))],  # 3.3: the server picks VeNCrypt
        [("s", V38), ("c", V38), ("s", b"\x02\x01\x10"), ("c", b"\x10")],  # the client picks Tight
        [("s", V38), ("c", V38), ("s", b"\x01\x02"), ("c", b"\x01")],  # None was not offered
        [("s", V38), ("c", V38 + b"\x01"), ("s", b"\x01\x02")],  # picked early, then not offered
        [("s", b"HTTP/1.1 400 Bad\r\n"), ("c", V38)],  # not a VNC server
        [("s", V38), ("c", b"GET / HTTP/1.1\r\n")],
        [("s", V38), ("c", b"RFB 004.000\n")],
        [("s", V38), ("c", b"RFB 003.002\n")],
    ],
    ids=["3.3 VeNCrypt", "Tight", "not offered", "not offered, late", "server garbage", "HTTP", "4.0", "3.2"],
)
def test_a_handshake_that_cannot_be_followed_is_refused_unless_exclusive_is_allowed(turns: Turns) -> None:
    later = b"\x00" + key_event() + b"\xff\xfe anything"
    for view_only in (True, False):
        with pytest.raises(RFBProtocolError):
            converse(ClientMessageFilter(view_only=view_only), [*turns, ("c", later)])
        with pytest.raises(RFBProtocolError):  # the option changes nothing for view-only
            converse(ClientMessageFilter(view_only=True, allow_exclusive=True), [*turns, ("c", later)])
    control = ClientMessageFilter(view_only=False, allow_exclusive=True)  # nothing to enforce
    assert converse(control, [*turns, ("c", later)]) == client_side(turns) + later
    assert control.passthrough
    res = control.feed(later)
    assert res.forward is later and res.input_events == 1


def test_a_server_running_ahead_is_no_longer_followed() -> None:
    filt = ClientMessageFilter(view_only=True)
    assert filt.feed_server(V38 + bytes(8192)) is False
    # From 3.7 on the client's side needs nothing more from the server: still found, still shared.
    assert converse(filt, [("c", V38 + b"\x01" + b"\x00" + fbur())]) == V38 + b"\x01\x01" + fbur()
    filt = ClientMessageFilter(view_only=False)
    assert filt.feed_server(V38 + bytes(8192)) is False
    with pytest.raises(RFBProtocolError, match="could not be followed"):  # 3.3: it would
        filt.feed(V33 + b"\x00")


# --- every message type, every split -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allowed_message_survives_any_split(name: str) -> None:
    msg = ALLOWED[name]
    stream = HANDSHAKE_38_NONE + fbur() + msg + key_event() + msg + fbur(0)
    expected = HANDSHAKE_38_NONE + fbur() + msg + msg + fbur(0)
    for chunks in splits(stream):
        filt = server_led(view_only=True)
        out, dropped, inputs = run(filt, chunks)
        assert out == expected
        assert (dropped, inputs) == (1, 0)  # the dropped key is not activity
        assert filt.dropped_by_type == {"KeyEvent": 1}
        assert filt.buffered == 0


@pytest.mark.parametrize("name", sorted(DROPPED))
def test_dropped_message_never_leaks_under_any_split(name: str) -> None:
    msg = DROPPED[name]
    stream = HANDSHAKE_38_NONE + fbur() + msg + fbur(0) + msg + msg + set_pixel_format()
    expected = HANDSHAKE_38_NONE + fbur() + fbur(0) + set_pixel_format()
    kind = name.split("-")[0]
    for chunks in splits(stream):
        filt = server_led(view_only=True)
        out, dropped, inputs = run(filt, chunks)
        assert out == expected
        assert dropped == 3
        assert filt.dropped_by_type == {kind: 3}
        assert inputs == 0  # dropped input never counts as activity (the idle timer runs on)


@pytest.mark.parametrize("name", sorted(ALLOWED | DROPPED))
def test_control_mode_forwards_every_byte_and_counts_input(name: str) -> None:
    msg = (ALLOWED | DROPPED)[name]
    stream = HANDSHAKE_38_NONE + msg + fbur() + msg
    for chunks in splits(stream):
        filt = server_led(view_only=False)
        out, dropped, inputs = run(filt, chunks)
        assert out == stream
        assert dropped == 0
        assert inputs == (2 if name in INPUT_KINDS else 0)
        assert not filt.passthrough


def test_control_mode_forwards_the_same_object() -> None:
    filt = server_led(view_only=False)
    filt.feed(HANDSHAKE_38_NONE)
    data = fbur() + pointer() + key_event()
    res = filt.feed(data)
    assert res.forward is data
    assert res.input_events == 2
    half = cut_text(b"x" * 100)
    assert filt.feed(half[:50]).forward == half[:50]  # nothing held back, even mid-message


def test_view_only_whole_allowed_chunk_is_not_copied() -> None:
    filt = server_led(view_only=True)
    filt.feed(HANDSHAKE_38_NONE)
    data = set_encodings(0, 7) + fbur() + fbur(0)
    assert filt.feed(data).forward is data


def test_empty_chunk() -> None:
    filt = server_led(view_only=True)
    assert filt.feed(b"") == FilterResult(b"", 0, 0)


def test_view_only_drops_power_operations() -> None:
    filt = server_led(view_only=True)
    stream = HANDSHAKE_38_NONE + xvp(2) + xvp(3) + xvp(4)
    assert filt.feed(stream).forward == HANDSHAKE_38_NONE
    assert filt.dropped_by_type == {"XVP": 3}


# --- the ExtendedMouseButtons pointer event ------------------------------------------------


def test_extended_pointer_is_seven_bytes_once_announced() -> None:
    for view_only in (True, False):
        filt = server_led(view_only=view_only)
        announce = set_encodings(0, -316)
        res = filt.feed(HANDSHAKE_38_NONE + announce + ext_pointer() + fbur() + pointer() + fbur(0))
        assert res.input_events == (0 if view_only else 2)  # dropped input is not activity
        if view_only:
            assert res.forward == HANDSHAKE_38_NONE + announce + fbur() + fbur(0)
        assert not filt.passthrough


def test_marker_bit_without_announcement_is_a_six_byte_event() -> None:
    filt = server_led(view_only=True)
    six = struct.pack(">BBHH", 5, 0x81, 1, 2)
    res = filt.feed(HANDSHAKE_38_NONE + set_encodings(0) + six + fbur())
    assert res.forward == HANDSHAKE_38_NONE + set_encodings(0) + fbur()


# --- malformed streams and bounds --------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"\x01" + bytes(20),  # type 1 does not exist client-side
        b"\x07" + bytes(10),
        b"\xfc" + bytes(10),  # 252: not something noVNC sends
        b"\xff\x05" + bytes(10),  # unknown QEMU subtype
        b"\xff\x01\x00\x09",  # unknown QEMU audio op
        set_pixel_format(bpp=24),
        struct.pack(">B3xIB", 248, 0, 65) + bytes(65),  # fence payload above 64
    ],
)
def test_malformed_message_raises_in_view_only(bad: bytes) -> None:
    filt = server_led(view_only=True)
    filt.feed(HANDSHAKE_38_NONE + fbur())
    with pytest.raises(RFBProtocolError):
        filt.feed(bad)
    with pytest.raises(RFBProtocolError):  # the stream stays failed
        filt.feed(fbur())


@pytest.mark.parametrize("bad", [b"\x01" + bytes(20), b"\xfc" + bytes(10), set_pixel_format(bpp=24)])
def test_unknown_message_in_control_mode_passes_the_rest_through(bad: bytes) -> None:
    filt = server_led(view_only=False)
    filt.feed(HANDSHAKE_38_NONE)
    data = fbur() + bad + key_event()
    res = filt.feed(data)
    assert res.forward is data and filt.passthrough
    assert res.input_events == 1  # activity from the unparsable point on
    nxt = fbur()
    assert filt.feed(nxt) == FilterResult(nxt, 0, 1)


def test_oversized_allowed_message_raises_before_its_body_arrives() -> None:
    filt = server_led(view_only=True, max_buffer=1024)
    filt.feed(HANDSHAKE_38_NONE)
    with pytest.raises(RFBProtocolError):
        filt.feed(struct.pack(">BxH", 2, 300))  # 4 + 1200 bytes announced


def test_oversized_clipboard_raises_in_view_only() -> None:
    filt = server_led(view_only=True, max_cut_text=1000)
    filt.feed(HANDSHAKE_38_NONE)
    with pytest.raises(RFBProtocolError):
        filt.feed(struct.pack(">B3xi", 6, -1001))


def test_dropped_bodies_stream_past_without_buffering() -> None:
    filt = server_led(view_only=True, max_buffer=1024)
    filt.feed(HANDSHAKE_38_NONE)
    body = b"c" * 200_000
    msg = cut_text(body)
    for i in range(0, len(msg), 4096):
        res = filt.feed(msg[i : i + 4096])
        assert res.forward == b""
        assert filt.buffered < 8
    assert filt.feed(fbur()).forward == fbur()


def test_control_mode_oversized_set_encodings_switches_to_passthrough() -> None:
    filt = server_led(view_only=False, max_buffer=1024)
    filt.feed(HANDSHAKE_38_NONE)
    data = set_encodings(*range(400))
    assert filt.feed(data).forward is data
    assert filt.passthrough


def test_partial_allowed_message_is_held_then_released_whole() -> None:
    filt = server_led(view_only=True)
    filt.feed(HANDSHAKE_38_NONE)
    msg = set_encodings(*range(50))
    assert filt.feed(msg[:100]).forward == b""
    assert filt.buffered == 100
    assert filt.feed(msg[100:]).forward == msg
    assert filt.buffered == 0


# --- property: output does not depend on chunking ---------------------------------------------

_u16 = st.integers(0, 0xFFFF)
_message = st.one_of(
    st.builds(set_pixel_format, bpp=st.sampled_from([8, 16, 32])),
    st.builds(lambda encs: set_encodings(*encs), st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20)),
    st.builds(fbur, st.integers(0, 1), _u16, _u16, _u16, _u16),
    st.builds(key_event, st.integers(0, 1), st.integers(0, 2**32 - 1)),
    st.builds(pointer, st.integers(0, 0x7F), _u16, _u16),
    st.builds(cut_text, st.binary(max_size=300), st.booleans()),
    st.builds(continuous_updates, st.integers(0, 1)),
    st.builds(fence, st.integers(0, 2**32 - 1), st.binary(max_size=64)),
    st.builds(xvp, st.integers(0, 255)),
    st.builds(set_desktop_size, _u16, _u16, st.integers(0, 4)),
    st.builds(qemu_key, st.integers(0, 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(qemu_audio, st.sampled_from([0, 1, 2])),
)
_ALLOWED_TYPES = {0, 2, 3, 150, 248}
_INPUT_TYPES = {4, 5, 6}


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(_message, max_size=25), data=st.data())
def test_random_streams_in_random_chunks(messages: list[bytes], data: st.DataObject) -> None:
    stream = HANDSHAKE_38_NONE + b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]

    expected_view = HANDSHAKE_38_NONE + b"".join(m for m in messages if m[0] in _ALLOWED_TYPES)
    n_input = sum(1 for m in messages if m[0] in _INPUT_TYPES or (m[0] == 255 and m[1] == 0))
    n_dropped = sum(1 for m in messages if m[0] not in _ALLOWED_TYPES)

    view = server_led(view_only=True)
    out, dropped, inputs = run(view, chunks)
    assert out == expected_view
    assert (dropped, inputs) == (n_dropped, 0)
    assert view.buffered == 0

    control = server_led(view_only=False)
    out, dropped, inputs = run(control, chunks)
    assert out == stream
    assert (dropped, inputs) == (0, n_input)
    assert not control.passthrough


# --- clipboard policy ---------------------------------------------------------------------------------

ZRLE, TIGHT, HEXTILE, RAW, COPYRECT = 16, 7, 5, 0, 1
EXT_CLIPBOARD, CURSOR, DESKTOP_SIZE, LAST_RECT = -1063131698, -239, -223, -224


def after_init(filt: ClientMessageFilter) -> None:
    assert filt.feed(HANDSHAKE_38_NONE).forward == HANDSHAKE_38_NONE


def test_denied_paste_drops_client_cut_text_and_counts_its_length() -> None:
    filt = server_led(view_only=False, paste=False)
    after_init(filt)
    stream = key_event() + cut_text(b"secret!") + cut_text(b"zz", extended=True) + pointer()
    result = filt.feed(stream)
    assert result.forward == key_event() + pointer()
    assert (filt.paste_denied, filt.paste_denied_bytes) == (2, 9)
    assert result.input_events == 2  # the key and the pointer; a denied paste is no activity


def test_a_paste_cap_passes_short_pastes_and_drops_long_ones_in_any_chunking() -> None:
    stream = cut_text(b"short") + key_event() + cut_text(b"x" * 100) + key_event(0)
    for step in (1, 3, len(stream)):
        filt = server_led(view_only=False, paste_max=10)
        after_init(filt)
        out = b"".join(filt.feed(stream[i : i + step]).forward for i in range(0, len(stream), step))
        assert out == cut_text(b"short") + key_event() + key_event(0)
        assert (filt.paste_denied, filt.paste_denied_bytes) == (1, 100)


def test_a_copy_restriction_rewrites_set_encodings_to_ones_the_gateway_can_frame() -> None:
    filt = server_led(view_only=False, copy_out=False)
    after_init(filt)
    sent = set_encodings(TIGHT, ZRLE, HEXTILE, RAW, EXT_CLIPBOARD, CURSOR)
    out = filt.feed(sent).forward
    assert len(out) == len(sent)
    kept = struct.unpack_from(">6i", out, 4)
    assert set(kept) <= COPY_SAFE_ENCODINGS
    assert kept == (RAW, ZRLE, RAW, RAW, RAW, CURSOR)  # refused ones become Raw, which every server has
    # Without a restriction the list is forwarded as it came.
    plain = server_led(view_only=False)
    after_init(plain)
    assert plain.feed(sent).forward == sent


PIXEL_FORMAT_32 = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0]) + bytes(3)
SERVER_INIT = struct.pack(">HH16sI", 64, 48, PIXEL_FORMAT_32, 4) + b"test"


def rect(x: int, y: int, w: int, h: int, encoding: int, body: bytes) -> bytes:
    return struct.pack(">HHHHi", x, y, w, h, encoding) + body


def update(*rects: bytes) -> bytes:
    return struct.pack(">BxH", 0, len(rects)) + b"".join(rects)


def server_cut(text: bytes, extended: bool = False) -> bytes:
    return struct.pack(">B3xi", 3, -len(text) if extended else len(text)) + text


def test_denied_copy_drops_server_cut_text_in_any_chunking_and_passes_the_rest() -> None:
    messages = (
        SERVER_INIT
        + update(rect(0, 0, 2, 2, RAW, bytes(16)), rect(0, 0, 4, 4, ZRLE, u32(3) + b"abc"))
        + server_cut(b"copied secret")
        + bytes([2])  # Bell
        + update(rect(1, 1, 2, 2, COPYRECT, bytes(4)), rect(0, 0, 8, 2, CURSOR, bytes(8 * 2 * 4 + 2)))
        + server_cut(b"ext", extended=True)
        + struct.pack(">B3xIB", 248, 0, 2)
        + b"ff"
        + update(rect(0, 0, 64, 48, DESKTOP_SIZE, b""))
    )
    expected = messages.replace(server_cut(b"copied secret"), b"")
    expected = expected.replace(server_cut(b"ext", extended=True), b"")
    for step in (1, 5, 64, len(messages)):
        client = server_led(view_only=False, copy_out=False)
        server = ServerMessageFilter(client, copy_max=0)
        assert server.feed(SERVER_38_NONE) == SERVER_38_NONE  # the handshake passes as it comes
        after_init(client)
        out = b"".join(server.feed(messages[i : i + step]) for i in range(0, len(messages), step))
        assert out == expected, step
        assert (server.copy_denied, server.copy_denied_bytes) == (2, 16)


def test_a_copy_cap_passes_short_copies() -> None:
    client = server_led(view_only=False, copy_out=False)
    server = ServerMessageFilter(client, copy_max=5)
    server.feed(SERVER_38_NONE)
    after_init(client)
    stream = SERVER_INIT + server_cut(b"ok") + server_cut(b"far too long")
    assert server.feed(stream) == SERVER_INIT + server_cut(b"ok")
    assert (server.copy_denied, server.copy_denied_bytes) == (1, 12)


def test_a_server_message_the_gateway_cannot_frame_is_refused_rather_than_passed() -> None:
    client = server_led(view_only=False, copy_out=False)
    server = ServerMessageFilter(client, copy_max=0)
    server.feed(SERVER_38_NONE)
    after_init(client)
    server.feed(SERVER_INIT)
    with pytest.raises(RFBProtocolError, match="encoding 7"):
        server.feed(update(rect(0, 0, 2, 2, TIGHT, bytes(20))))


# --- recording: stateless encodings, framing the server's stream, input for the recorder ----------------

H264, CONTINUOUS_UPDATES, DESKTOP_NAME = 50, -313, -307


def test_recording_rewrites_set_encodings_to_stateless_framable_ones() -> None:
    """Every server message must be a place a player can start decoding: no ZRLE (one zlib stream for the
    whole connection), no Tight, Hextile or H.264; whatever the copy policy says."""
    sent = set_encodings(TIGHT, ZRLE, HEXTILE, H264, COPYRECT, RAW, CURSOR, CONTINUOUS_UPDATES)
    for extra in ({}, {"copy_out": False}):
        filt = server_led(view_only=False, record=True, **extra)
        after_init(filt)
        out = filt.feed(sent).forward
        kept = struct.unpack_from(">8i", out, 4)
        assert kept == (RAW, RAW, RAW, RAW, COPYRECT, RAW, CURSOR, CONTINUOUS_UPDATES)
        assert set(kept) <= RECORDABLE_ENCODINGS and ZRLE not in RECORDABLE_ENCODINGS
        assert filt.framable == RECORDABLE_ENCODINGS and filt.in_messages


def test_recorded_input_is_what_the_console_received_and_only_when_asked() -> None:
    stream = (
        set_pixel_format(16, 16)
        + set_encodings(RAW)
        + fbur()
        + key_event()
        + pointer()
        + cut_text(b"pasted")
        + qemu_key()
        + fbur(0)
    )
    for step in (1, 7, len(stream)):
        filt = server_led(view_only=False, record=True, record_input=True)
        after_init(filt)
        assert filt.pixel_format is None
        for i in range(0, len(stream), step):
            filt.feed(stream[i : i + step])
        assert filt.input_log == [key_event(), pointer(), cut_text(b"pasted"), qemu_key()], step
        assert filt.pixel_format == set_pixel_format(16, 16)[4:20]
    screen_only = server_led(view_only=False, record=True)
    after_init(screen_only)
    screen_only.feed(stream)
    assert screen_only.input_log is None
    view = server_led(view_only=True, record=True, record_input=True)  # view-only input never reaches it
    after_init(view)
    assert view.feed(stream).forward == set_pixel_format(16, 16) + set_encodings(RAW) + fbur() + fbur(0)
    assert view.input_log == []


def _recorded_server(step: int) -> tuple[ClientMessageFilter, ServerMessageFilter]:
    client = server_led(view_only=False, record=True)
    server = ServerMessageFilter(client, copy_max=None)
    assert server.feed(SERVER_38_NONE) == SERVER_38_NONE
    after_init(client)
    assert server.boundaries == []  # the handshake's end is not a message boundary: ServerInit is next
    return client, server


def test_a_recorded_stream_passes_whole_and_reports_every_message_boundary_in_any_chunking() -> None:
    messages = [
        update(rect(0, 0, 2, 2, RAW, bytes(16)), rect(1, 1, 2, 2, COPYRECT, bytes(4))),
        server_cut(b"copied text"),  # copying out allowed: recorded and forwarded
        bytes([2]),  # Bell
        update(),
        update(rect(0, 0, 8, 2, CURSOR, bytes(8 * 2 * 4 + 2)), rect(0, 0, 0, 0, LAST_RECT, b"")),
        struct.pack(">B3xIB", 248, 0, 2) + b"ff",
    ]
    stream = SERVER_INIT + b"".join(messages)
    starts, offset = {len(SERVER_INIT)}, len(SERVER_INIT)
    for message in messages:
        offset += len(message)
        starts.add(offset)
    for step in (1, 2, 5, 13, 64, len(stream)):
        _client, server = _recorded_server(step)
        forwarded = b""
        for at in range(0, len(stream), step):
            out, done = server.feed(stream[at : at + step]), len(forwarded)
            forwarded += out
            assert server.boundaries == sorted(s - done for s in starts if done <= s <= len(forwarded))
        assert forwarded == stream  # ServerInit is held until it is whole, the rest passes as it comes
        assert server.server_init == SERVER_INIT


def test_a_recorded_stream_keeps_the_framebuffer_size_and_name_current() -> None:
    _client, server = _recorded_server(0)
    server.feed(SERVER_INIT)
    assert (server.width, server.height, server.name) == (64, 48, b"test")
    server.feed(update(rect(0, 0, 100, 50, DESKTOP_SIZE, b"")))
    assert (server.width, server.height) == (100, 50)
    server.feed(update(rect(0, 0, 0, 0, DESKTOP_NAME, u32(6) + b"web-01")))
    assert server.name == b"web-01"
    with pytest.raises(RFBProtocolError, match="encoding 16"):  # ZRLE was never offered for recording
        server.feed(update(rect(0, 0, 4, 4, ZRLE, u32(3) + b"abc")))
