"""The demo console's picture: text state in, pixels out.

The simulated server has no real OS behind it, so the screen is a rendered image: a title naming the
server (so a user can see the gateway opened the *right* console) and a login-prompt-like text area that
echoes keystrokes (so input visibly round-trips through every hop). Rendering and pixel packing are pure
functions; `DemoScreen` only keeps the current text and image together.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

__all__ = [
    "BACKGROUND",
    "COLOUR_BARS",
    "PROMPT",
    "DemoScreen",
    "PixelFormat",
    "Rect",
    "apply_key",
    "keysym_to_text",
    "pack_pixels",
    "render",
]

Rect = tuple[int, int, int, int]
"""x, y, width, height."""

BACKGROUND = (16, 20, 24)
TITLE_BAR = (31, 58, 95)
TITLE_TEXT = (240, 240, 240)
BODY_TEXT = (200, 210, 200)
PROMPT = "Demo OS 1.0 (simulated console) tty1\n\nlogin: "
MAX_TYPED = 4096
"""Only this much typed text is kept (the oldest scrolls away): the demo is a prompt, not an editor."""

TITLE_HEIGHT = 40
MARGIN = 12
FONT_SIZE = 16
LINE_HEIGHT = 20
# Pure colour blocks at the right of the title bar, so pixel-format tests can check each channel.
COLOUR_BARS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))
BAR_SIZE = 16

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
)

# X11 keysyms (X11/keysymdef.h) the text area understands beyond printable characters.
XK_BACKSPACE = 0xFF08
XK_TAB = 0xFF09
XK_RETURN = 0xFF0D
XK_KP_ENTER = 0xFF8D


# --------------------------------------------------------------------------------------------- pixels


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """An RFB PIXEL_FORMAT (RFC 6143 §7.4); true colour only, colour maps are refused."""

    bits_per_pixel: int = 32
    depth: int = 24
    big_endian: bool = False
    true_colour: bool = True
    red_max: int = 255
    green_max: int = 255
    blue_max: int = 255
    red_shift: int = 16
    green_shift: int = 8
    blue_shift: int = 0

    _STRUCT = struct.Struct(">BBBBHHHBBB3x")

    @classmethod
    def from_bytes(cls, data: bytes) -> PixelFormat:
        bpp, depth, be, tc, rmax, gmax, bmax, rs, gs, bs = cls._STRUCT.unpack(data)
        return cls(bpp, depth, bool(be), bool(tc), rmax, gmax, bmax, rs, gs, bs)

    def to_bytes(self) -> bytes:
        return self._STRUCT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    def validate(self) -> None:
        """Raise ValueError unless `pack_pixels` can honour this format exactly."""
        if self.bits_per_pixel not in (8, 16, 32):
            raise ValueError(f"bits-per-pixel {self.bits_per_pixel} unsupported")
        if not self.true_colour:
            raise ValueError("colour-map pixel formats unsupported")
        used = 0
        for name, cmax, shift in self._fields():
            if cmax < 1 or cmax & (cmax + 1):
                raise ValueError(f"{name}-max {cmax} is not 2^n-1")
            mask = cmax << shift
            if mask >> self.bits_per_pixel:
                raise ValueError(f"{name} field does not fit in {self.bits_per_pixel} bits")
            if mask & used:
                raise ValueError("colour fields overlap")
            used |= mask

    def _fields(self) -> tuple[tuple[str, int, int], ...]:
        return (
            ("red", self.red_max, self.red_shift),
            ("green", self.green_max, self.green_shift),
            ("blue", self.blue_max, self.blue_shift),
        )


@functools.lru_cache(maxsize=64)
def _byte_luts(pf: PixelFormat) -> tuple[tuple[tuple[list[int], ...], ...], int]:
    """Per output byte, per channel: 8-bit channel value -> that channel's bits in that byte.

    Fields are disjoint, so each output byte is the *sum* of three per-channel lookups, which Pillow
    computes in C (`point` + `add`) without numpy or a per-pixel Python loop.
    """
    nbytes = pf.bytes_per_pixel
    per_byte = []
    for k in range(nbytes):
        luts = []
        for _name, cmax, shift in pf._fields():
            luts.append([((((v * cmax + 127) // 255) << shift) >> (8 * k)) & 0xFF for v in range(256)])
        per_byte.append(tuple(luts))
    return tuple(per_byte), nbytes


def pack_pixels(image: Image.Image, pf: PixelFormat) -> bytes:
    """Row-major pixels of an RGB image in the client's pixel format (what a Raw rectangle carries)."""
    pf.validate()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if pf == _DEFAULT_BGRX:
        return rgb.tobytes("raw", "BGRX")  # the common case, one C call
    bands = rgb.split()
    per_byte, nbytes = _byte_luts(pf)
    planes = []
    for luts in per_byte:
        plane = bands[0].point(luts[0])
        plane = ImageChops.add(plane, bands[1].point(luts[1]))
        plane = ImageChops.add(plane, bands[2].point(luts[2]))
        planes.append(plane)
    if pf.big_endian:
        planes.reverse()
    if nbytes == 1:
        return planes[0].tobytes()
    if nbytes == 2:
        return Image.merge("LA", planes).tobytes()
    return Image.merge("RGBA", planes).tobytes()


_DEFAULT_BGRX = PixelFormat()


# ----------------------------------------------------------------------------------------------- text


def keysym_to_text(keysym: int) -> str | None:
    """The character(s) a key-down adds to the text area; "\b" for BackSpace; None to ignore."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)  # Latin-1 keysyms equal their code points
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return chr(keysym - 0x01000000)  # Unicode keysyms
    if keysym in (XK_RETURN, XK_KP_ENTER):
        return "\n"
    if keysym == XK_TAB:
        return "    "
    if keysym == XK_BACKSPACE:
        return "\b"
    if 0xFFB0 <= keysym <= 0xFFB9:
        return chr(ord("0") + keysym - 0xFFB0)  # keypad digits
    return None


def apply_key(typed: str, keysym: int) -> str:
    """New typed text after one key-down."""
    text = keysym_to_text(keysym)
    if text is None:
        return typed
    if text == "\b":
        return typed[:-1]
    return (typed + text)[-MAX_TYPED:]


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for candidate in _FONT_CANDIDATES:
        if Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def title_for(name: str, server_id: str) -> str:
    return f"{name} ({server_id}) — novnc-gateway demo"


def render(title: str, typed: str, width: int = 800, height: int = 600) -> Image.Image:
    """The whole screen for this title and typed text; deterministic, so diffs find what changed."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(FONT_SIZE)
    draw.rectangle((0, 0, width - 1, TITLE_HEIGHT - 1), fill=TITLE_BAR)
    draw.text((MARGIN, (TITLE_HEIGHT - FONT_SIZE) // 2), title, font=font, fill=TITLE_TEXT)
    for i, colour in enumerate(COLOUR_BARS):
        x0 = width - MARGIN - (len(COLOUR_BARS) - i) * BAR_SIZE
        y0 = (TITLE_HEIGHT - BAR_SIZE) // 2
        draw.rectangle((x0, y0, x0 + BAR_SIZE - 1, y0 + BAR_SIZE - 1), fill=colour)

    lines = (PROMPT + typed).split("\n")
    visible = max(1, (height - TITLE_HEIGHT - 2 * MARGIN) // LINE_HEIGHT)
    lines = lines[-visible:]
    y = TITLE_HEIGHT + MARGIN
    for line in lines:
        draw.text((MARGIN, y), line, font=font, fill=BODY_TEXT)
        y += LINE_HEIGHT
    # A block cursor after the last character, like a text console.
    cursor_x = MARGIN + int(draw.textlength(lines[-1], font=font))
    cursor_y = y - LINE_HEIGHT
    draw.rectangle((cursor_x + 1, cursor_y + 2, cursor_x + 9, cursor_y + LINE_HEIGHT - 3), fill=BODY_TEXT)
    return image


def changed_rect(before: Image.Image, after: Image.Image) -> Rect | None:
    """The bounding box of the pixels that differ, or None when the images are equal."""
    box = ImageChops.difference(before, after).getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return (x0, y0, x1 - x0, y1 - y0)


class DemoScreen:
    """The console's current text and picture, shared by every viewer of one server."""

    def __init__(self, *, name: str, server_id: str, width: int = 800, height: int = 600) -> None:
        if not (1 <= width <= 0xFFFF and 1 <= height <= 0xFFFF):
            raise ValueError("screen size out of range")
        self.width = width
        self.height = height
        self.title = title_for(name, server_id)
        self.typed = ""
        self._rendered = ""
        self.image = render(self.title, self.typed, width, height)
        self.version = 0

    def type_key(self, keysym: int, down: bool) -> Rect | None:
        """Apply a key event; returns the changed rectangle, if the picture changed.

        `image` is replaced, never mutated, so a viewer may keep the old one while sending it.
        """
        self.key(keysym, down)
        return self.refresh()

    def key(self, keysym: int, down: bool) -> bool:
        """Apply a key event to the text only (cheap); True if `refresh` has something to draw.

        Lets a server coalesce a burst of keys into one render instead of one per key.
        """
        if not down:
            return False
        typed = apply_key(self.typed, keysym)
        changed = typed != self.typed
        self.typed = typed
        return changed

    def refresh(self) -> Rect | None:
        """Re-render if the text changed since the last render; the changed rectangle, if any."""
        if self.typed == self._rendered:
            return None
        image = render(self.title, self.typed, self.width, self.height)
        rect = changed_rect(self.image, image)
        self.image, self._rendered = image, self.typed
        if rect is not None:
            self.version += 1
        return rect

    def pixels(self, pf: PixelFormat, rect: Rect | None = None) -> bytes:
        """Raw pixels of `rect` (default: the whole screen) in `pf`."""
        if rect is None:
            return pack_pixels(self.image, pf)
        x, y, w, h = rect
        return pack_pixels(self.image.crop((x, y, x + w, y + h)), pf)
