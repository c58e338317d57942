"""Driving the recording player (static/js/player.js) in Chromium: open it, seek and time the seek, and
compare what its canvas shows with another canvas (the live console's) pixel by pixel.

The player's hooks are `window.recordingPlayer` (ready, seek, play, pause, position, duration, state,
canvas); docs/recording.md, "Player", lists them. bench/ reuses `seek_seconds` for the one-hour figure.
"""

from __future__ import annotations

import base64
import io
import struct
import time

from PIL import Image, ImageChops
from playwright.async_api import Page

from gateway.recording.format import Header, Keyring, RecordingWriter
from gateway.recording.store import RecordingStore

__all__ = [
    "NOVNC_PIXEL_FORMAT",
    "canvas_image",
    "frame_difference",
    "open_player",
    "player_canvas",
    "player_ready",
    "seek_seconds",
    "write_synthetic",
]

# The pixel format noVNC asks every server for (32 bpp, depth 24, little-endian, true colour, RGB at
# shifts 0/8/16): what a recorded stream from the console page is encoded in.
NOVNC_PIXEL_FORMAT = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0])

READY_MS = 30_000


async def open_player(page: Page, base: str, recording: str, *, at: int | None = None) -> None:
    """The player page for `recording`, once its first frame is on the canvas (`at`: start at this ms)."""
    hash_part = f"#t={at}" if at is not None else ""
    await page.goto(f"{base}/recordings/{recording}{hash_part}")
    await player_ready(page)


async def player_ready(page: Page) -> None:
    """Once the player page (however it was reached) shows its first frame."""
    await page.wait_for_function(
        "() => window.recordingPlayer && window.recordingPlayer.player", timeout=READY_MS
    )
    await page.evaluate("() => window.recordingPlayer.ready")


async def seek_seconds(page: Page, ms: float) -> float:
    """Seek the open player to `ms` and return how long it took in the browser (seconds), from the call
    to the frame being on the canvas: the segment's fetch (the gateway verifies and decrypts it), a fresh
    noVNC and the feed at full speed up to the target."""
    elapsed = await page.evaluate(
        """async (ms) => {
            const started = performance.now();
            await window.recordingPlayer.seek(ms);
            return performance.now() - started;
        }""",
        ms,
    )
    return float(elapsed) / 1000


async def canvas_image(page: Page, selector: str) -> Image.Image:
    """What the first canvas under `selector` shows, at the framebuffer's own size."""
    url = await page.evaluate(
        "(selector) => document.querySelector(selector + ' canvas').toDataURL('image/png')", selector
    )
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


async def player_canvas(page: Page) -> Image.Image:
    return await canvas_image(page, '[data-testid="player-screen"]')


def frame_difference(a: Image.Image, b: Image.Image, *, tolerance: int = 16) -> float:
    """The share of pixels that differ by more than `tolerance` in some channel (1.0 if the sizes
    differ): 0.0 is the same frame."""
    if a.size != b.size:
        return 1.0
    red, green, blue = ImageChops.difference(a, b).split()
    worst = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return sum(worst.histogram()[tolerance + 1 :]) / (a.size[0] * a.size[1])


def _raw_rect(x: int, y: int, width: int, height: int, pixel: bytes) -> bytes:
    """A FramebufferUpdate with one Raw rectangle filled with one 4-byte pixel."""
    return struct.pack(">BxHHHHHi", 0, 1, x, y, width, height, 0) + pixel * (width * height)


async def write_synthetic(
    store: RecordingStore,
    keys: Keyring,
    rid: str,
    *,
    seconds: int,
    segment_seconds: int = 30,
    width: int = 640,
    height: int = 480,
    server_id: str = "synthetic",
    server_name: str = "synthetic",
    cloud: str = "demo",
    user: str = "demo",
    tags: tuple[str, ...] = (),
) -> None:
    """A sealed recording `seconds` long, shaped like what the gateway records from a busy terminal:
    every second one text line's worth of screen (a Raw rectangle the full width, 16 rows) changes, and
    every `segment_seconds` the segment is cut after a full-screen Raw update (the keyframe the gateway
    asks for). Written through the real format and store, so the player and the API treat it like any
    other; the frame at time t is deterministic (line k shows colour k)."""
    header = Header(
        id=rid,
        start=time.time() - seconds,
        user=user,
        groups=(),
        server_id=server_id,
        server_name=server_name,
        cloud=cloud,
        permission="control",
        rfb_version="RFB 003.008",
        width=width,
        height=height,
        pixel_format=NOVNC_PIXEL_FORMAT,
        name=server_name,
        encodings=(0, 1),
        record_input=False,
        tags=tags,
    )
    writer = RecordingWriter(header, keys, segment_seconds=segment_seconds)
    await store.begin(rid, writer.header_bytes, header.meta())
    writer.marker(0, "opened")
    writer.server(0, _raw_rect(0, 0, width, height, b"\x20\x20\x20\x00"))
    for second in range(1, seconds + 1):
        t = second * 1000
        colour = struct.pack("<I", (second * 2654435761) & 0xFFFFFF)
        writer.server(t, _raw_rect(0, (second * 16) % (height - 15), width, 16, colour))
        if second % segment_seconds == 0 and second < seconds:
            writer.server(t + 1, _raw_rect(0, 0, width, height, b"\x20\x20\x20\x00"))
            draft = writer.cut(t + 1)
            await store.put_segment(rid, draft.number, writer.build(draft))
    writer.marker(seconds * 1000, "closed", code=1000)
    draft = writer.close(seconds * 1000)
    await store.put_segment(rid, draft.number, writer.build(draft))
    index, seal = writer.finish()
    await store.finish(rid, index, seal, meta=writer.final_meta())
