"""The demo console's rendering, pixel packing and the sans-IO RFB server protocol."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gateway.sim.rfb_server import (
    ClientReady,
    CutTextReceived,
    EncodingsSet,
    KeyPressed,
    PixelFormatSet,
    ProtocolError,
    RFBServerProtocol,
    UpdateRequested,
)
from gateway.sim.screen import (
    BACKGROUND,
    COLOUR_BARS,
    TITLE_HEIGHT,
    DemoScreen,
    PixelFormat,
    apply_key,
    pack_pixels,
    render,
)
from tests.support.rfb_client import ClientPixelFormat, RFBClientProtocol

XK_RETURN, XK_BACKSPACE, XK_SHIFT_L = 0xFF0D, 0xFF08, 0xFFE1


# ------------------------------------------------------------------------------------ text and keys


def test_printable_keys_append_and_control_keys_edit() -> None:
    typed = ""
    for keysym in (ord("h"), ord("i"), XK_SHIFT_L, XK_RETURN, 0xE9, 0x010020AC, ord("x"), XK_BACKSPACE):
        typed = apply_key(typed, keysym)
    assert typed == "hi\né€"


def test_backspace_on_empty_text_is_harmless() -> None:
    assert apply_key("", XK_BACKSPACE) == ""


def test_typed_text_is_bounded_keeping_the_newest() -> None:
    typed = apply_key("a" * 4096, ord("b"))
    assert len(typed) == 4096 and typed.endswith("ab")


def test_a_burst_of_keys_is_rendered_once() -> None:
    screen = DemoScreen(name="web-01", server_id="id-1")
    assert [screen.key(k, True) for k in (ord("a"), ord("b"), XK_SHIFT_L)] == [True, True, False]
    assert screen.refresh() is not None and screen.version == 1
    assert screen.refresh() is None
    assert screen.image == render(screen.title, "ab", 800, 600)


# ----------------------------------------------------------------------------------------- rendering


def test_render_shows_a_title_bar_colour_bars_and_a_dark_console() -> None:
    image = render("web-01 (id-1) — novnc-gateway demo", "", 800, 600)
    assert image.size == (800, 600)
    assert image.getpixel((400, 500)) == BACKGROUND
    assert image.getpixel((400, 2)) != BACKGROUND  # title bar
    bar_colours = {image.getpixel((x, TITLE_HEIGHT // 2)) for x in range(700, 800)}
    assert set(COLOUR_BARS) <= bar_colours
    assert len(image.getcolors(maxcolors=100_000) or []) > 10  # real text, antialiased


def test_title_names_the_server_so_different_servers_look_different() -> None:
    a = render("web-01 (id-1) — novnc-gateway demo", "", 800, 600)
    b = render("db-02 (id-2) — novnc-gateway demo", "", 800, 600)
    assert any(
        a.getpixel((x, y)) != b.getpixel((x, y)) for x in range(0, 400, 2) for y in range(TITLE_HEIGHT)
    )


def test_typing_changes_only_a_small_region_below_the_title() -> None:
    screen = DemoScreen(name="web-01", server_id="id-1")
    before = screen.image
    rect = screen.type_key(ord("h"), True)
    assert rect is not None
    x, y, w, h = rect
    assert y >= TITLE_HEIGHT and w * h < 800 * 600 // 20
    assert screen.typed == "h" and screen.image is not before  # replaced, not mutated
    assert before.getpixel((x + w // 2, y + h // 2)) == render(screen.title, "", 800, 600).getpixel(
        (x + w // 2, y + h // 2)
    )


def test_key_up_and_unprintable_keys_change_nothing() -> None:
    screen = DemoScreen(name="web-01", server_id="id-1")
    assert screen.type_key(ord("h"), False) is None
    assert screen.type_key(XK_SHIFT_L, True) is None
    assert screen.version == 0


def test_long_input_scrolls_instead_of_overflowing() -> None:
    screen = DemoScreen(name="n", server_id="i", width=200, height=120)
    for _ in range(30):
        screen.type_key(XK_RETURN, True)
    before = screen.image
    rect = screen.type_key(ord("z"), True)
    assert rect is not None and rect[1] + rect[3] <= 120  # the new last line is on screen
    assert screen.image.size == (200, 120)
    assert before.getpixel((0, 0)) == screen.image.getpixel((0, 0))


# ------------------------------------------------------------------------------------ pixel formats

RGB565_LE = PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)
RGB565_BE = PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)
BGR233 = PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6)
RGBX_BE = PixelFormat(32, 24, True, True, 255, 255, 255, 24, 16, 8)


def _reference_pack(image: Image.Image, pf: PixelFormat) -> bytes:
    """Per-pixel, straight from RFC 6143 §7.4: the obviously-correct slow version."""
    out = bytearray()
    order = "big" if pf.big_endian else "little"
    raw = image.tobytes()
    for i in range(0, len(raw), 3):
        r, g, b = raw[i : i + 3]
        v = 0
        for c, cmax, shift in (
            (r, pf.red_max, pf.red_shift),
            (g, pf.green_max, pf.green_shift),
            (b, pf.blue_max, pf.blue_shift),
        ):
            v |= ((c * cmax + 127) // 255) << shift
        out += v.to_bytes(pf.bytes_per_pixel, order)
    return bytes(out)


@pytest.mark.parametrize("pf", [PixelFormat(), RGB565_LE, RGB565_BE, BGR233, RGBX_BE])
def test_pure_colours_pack_to_the_field_maxima(pf: PixelFormat) -> None:
    image = Image.new("RGB", (3, 1))
    image.putdata([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    data = pack_pixels(image, pf)
    n = pf.bytes_per_pixel
    order = "big" if pf.big_endian else "little"
    values = [int.from_bytes(data[i * n : (i + 1) * n], order) for i in range(3)]
    assert values == [
        pf.red_max << pf.red_shift,
        pf.green_max << pf.green_shift,
        pf.blue_max << pf.blue_shift,
    ]


def test_default_format_is_little_endian_bgrx() -> None:
    image = Image.new("RGB", (1, 1), (1, 2, 3))
    assert pack_pixels(image, PixelFormat()) == bytes([3, 2, 1, 0])


_formats = st.sampled_from(
    [
        PixelFormat(),
        RGB565_LE,
        RGB565_BE,
        BGR233,
        RGBX_BE,
        PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16),
        PixelFormat(16, 15, True, True, 31, 31, 31, 10, 5, 0),
    ]
)


@settings(max_examples=60, deadline=None)
@given(pf=_formats, w=st.integers(1, 7), h=st.integers(1, 5), seed=st.binary(min_size=105, max_size=105))
def test_pack_pixels_matches_the_per_pixel_definition(pf: PixelFormat, w: int, h: int, seed: bytes) -> None:
    image = Image.frombytes("RGB", (w, h), seed[: w * h * 3])
    assert pack_pixels(image, pf) == _reference_pack(image, pf)


@pytest.mark.parametrize(
    ("pf", "message"),
    [
        (PixelFormat(24, 24), "bits-per-pixel"),
        (PixelFormat(true_colour=False), "colour-map"),
        (PixelFormat(16, 16, False, True, 31, 63, 31, 11, 6, 0), "overlap"),
        (PixelFormat(16, 16, False, True, 30, 63, 31, 11, 5, 0), r"2\^n-1"),
        (PixelFormat(16, 16, False, True, 255, 63, 31, 11, 5, 0), "does not fit"),
    ],
)
def test_unsupported_pixel_formats_are_refused(pf: PixelFormat, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pf.validate()


def test_pixel_format_wire_round_trip() -> None:
    assert PixelFormat.from_bytes(RGB565_BE.to_bytes()) == RGB565_BE
    assert len(RGB565_BE.to_bytes()) == 16


# ------------------------------------------------------------------------- sans-IO server protocol


def _pair(version: tuple[int, int] = (3, 8)) -> tuple[RFBServerProtocol, RFBClientProtocol, list[object]]:
    """Run a server protocol against the test client protocol in memory until ServerInit."""
    server = RFBServerProtocol(width=64, height=32, name="demo")
    client = RFBClientProtocol(version=version)
    events: list[object] = []
    for _ in range(10):
        client_events = client.receive_data(server.data_to_send())
        events += server.receive_data(client.data_to_send())
        if client_events:
            break
    return server, client, events


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
def test_handshake_with_each_supported_client_version(version: tuple[int, int]) -> None:
    server, client, events = _pair(version)
    assert events == [ClientReady(version=version, shared=True)]
    assert client.server_init is not None
    assert (client.server_init.width, client.server_init.height, client.server_init.name) == (64, 32, "demo")
    assert client.server_init.pixel_format.bits_per_pixel == 32
    assert server.state == "normal"


def test_unknown_minor_versions_follow_the_rfc() -> None:
    for wire, expected in ((b"RFB 003.005\n", (3, 3)), (b"RFB 003.889\n", (3, 8))):
        server = RFBServerProtocol(width=8, height=8, name="x")
        server.data_to_send()
        server.receive_data(wire)
        assert server.version == expected


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\n", b"RFB 004.000\n", b"RFB 003.00x\n", b"\x16\x03\x01"]
)
def test_non_rfb_greetings_are_protocol_errors(garbage: bytes) -> None:
    server = RFBServerProtocol(width=8, height=8, name="x")
    with pytest.raises(ProtocolError):
        server.receive_data(garbage)
    with pytest.raises(ProtocolError):
        server.receive_data(b"more")  # stays failed


def test_other_security_type_is_refused_with_a_reason_in_3_8() -> None:
    server = RFBServerProtocol(width=8, height=8, name="x")
    server.data_to_send()
    server.receive_data(b"RFB 003.008\n")
    assert server.data_to_send() == bytes([1, 1])
    with pytest.raises(ProtocolError):
        server.receive_data(bytes([2]))
    result = server.data_to_send()
    assert struct.unpack_from(">I", result)[0] == 1 and b"security" in result


def test_messages_split_at_every_byte_boundary_parse_the_same() -> None:
    server, client, _ = _pair()
    client.set_encodings([0, -223])
    client.set_pixel_format(ClientPixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0))
    client.request_update(False)
    client.key_event(ord("q"), True)
    client.cut_text(b"clipboard")
    client.request_update(True, (1, 2, 3, 4))
    stream = client.data_to_send()
    events: list[object] = []
    for i in range(len(stream)):
        events += server.receive_data(stream[i : i + 1])
    assert events == [
        EncodingsSet((0, -223)),
        PixelFormatSet(RGB565_BE),
        UpdateRequested(False, (0, 0, 64, 32)),
        KeyPressed(True, ord("q")),
        CutTextReceived(9),
        UpdateRequested(True, (1, 2, 3, 4)),
    ]


def test_qemu_extended_key_event_is_a_key_event() -> None:
    server, _, _ = _pair()
    msg = struct.pack(">BBHII", 255, 0, 1, ord("a"), 0x1E)
    assert server.receive_data(msg) == [KeyPressed(True, ord("a"), 0x1E)]


@pytest.mark.parametrize(
    "message",
    [
        bytes([7]),  # no such client message
        struct.pack(">BBHII", 255, 1, 0, 0, 0),  # QEMU audio: not offered
        struct.pack(">B3xi", 6, 2 << 20),  # clipboard beyond the bound
        struct.pack(">BxH", 2, 5000),  # absurd encoding count
        struct.pack(">B3x", 0) + PixelFormat(true_colour=False).to_bytes(),
    ],
)
def test_bad_messages_close_the_connection(message: bytes) -> None:
    server, _, _ = _pair()
    with pytest.raises(ProtocolError):
        server.receive_data(message)


def test_framebuffer_update_round_trips_into_the_client_framebuffer() -> None:
    server, client, _ = _pair()
    screen = DemoScreen(name="demo", server_id="i", width=64, height=32)
    server.send_framebuffer_update([((0, 0, 64, 32), screen.pixels(server.pixel_format))])
    (update,) = client.receive_data(server.data_to_send())
    assert [(r.x, r.y, r.width, r.height) for r in update.rects] == [(0, 0, 64, 32)]
    assert client.pixel(2, 2) == screen.image.getpixel((2, 2))
    with pytest.raises(ValueError):
        server.send_framebuffer_update([((0, 0, 2, 2), b"short")])
