"""Recordings in tests: one set of keys for the whole run, the `[recording]` config that uses them, and
what a recording holds once decrypted and decompressed, for the suite-wide token scan (tests/conftest.py:
the files themselves are compressed and encrypted, so a token in them is invisible to a byte scan)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.auth.cookie import generate_key
from gateway.recording.format import HEADER_MAGIC, Header, Keyring, RecordingError, RecordingReader, Screen
from gateway.recording.store import segment_name
from tests.support.rfb_client import RFBClientProtocol

__all__ = ["KEYS", "decoded_recordings", "recording_config", "recording_header", "replay"]

# The run's recording keys: every test that records through the gateway uses them, so the token scan
# can open every recording the run left behind.
_HMAC, _ENCRYPTION = generate_key(), generate_key()
KEYS = Keyring.from_secrets([_HMAC], [_ENCRYPTION])


def recording_config(**settings: Any) -> dict[str, Any]:
    """A `[recording]` section with the run's keys (encrypted at rest); `settings` add or override."""
    return {"hmac_keys": [_HMAC], "encryption_keys": [_ENCRYPTION], **settings}


def recording_header(rid: str, **fields: Any) -> Header:
    """The header of a recording a test writes itself: a control console on the demo cloud started now,
    unless `fields` say otherwise (each test names what it relies on)."""
    defaults: dict[str, Any] = {
        "start": time.time(),
        "user": "demo",
        "groups": (),
        "server_id": "srv-1",
        "server_name": "web-1",
        "cloud": "demo",
        "permission": "control",
        "rfb_version": "RFB 003.008",
        "width": 64,
        "height": 48,
        "pixel_format": bytes(16),
        "name": "web-1",
        "encodings": (0, 1),
        "record_input": False,
    }
    return Header(id=rid, **{**defaults, **fields})


def replay(screen: Screen, server: bytes) -> RFBClientProtocol:
    """A client that starts where a player starts (a synthetic handshake for `screen`) and decodes the
    recorded server messages: its framebuffer is what the recording shows at their end."""
    client = RFBClientProtocol()
    name = screen.name.encode()
    init = struct.pack(">HH16sI", screen.width, screen.height, screen.pixel_format, len(name)) + name
    client.receive_data(b"RFB 003.008\n" + b"\x01\x01" + bytes(4) + init)
    client.receive_data(server)
    return client


def decoded_recordings(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every local-store recording under `root` made with the run's keys, part by part, as plaintext:
    the header, each segment's records, the index. Recordings made with other keys (format tests) or
    unreadable ones are skipped: their own tests read them."""
    for header_path in sorted(root.rglob("header")):
        directory = header_path.parent
        try:
            header = header_path.read_bytes()
            if not header.startswith(HEADER_MAGIC):
                continue
            reader = RecordingReader(KEYS, header)
            yield f"recording {directory.name} header", header
            number = 0
            while (segment := directory / segment_name(number)).is_file():
                for record in reader.segment(number, segment.read_bytes()).records:
                    yield f"recording {directory.name} segment {number}", record.data
                number += 1
            index = directory / "index"
            if index.is_file():
                yield f"recording {directory.name} index", reader.index(index.read_bytes()).to_bytes()
        except (OSError, RecordingError):
            continue
