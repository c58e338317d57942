"""The recording format, sans-IO: RecordingWriter turns a console's events into sealed segments, an index
and a seal; RecordingReader (and `verify`) check them and give the records back. Byte layout, integrity
and key rotation: docs/recording.md.

No files, sockets or clock here: the recorder edge (gateway/recording/recorder.py) feeds events with
explicit times (milliseconds since the recording started) and hands the bytes to a store. Compressing,
encrypting and signing a segment (`RecordingWriter.build`) is one pure CPU step the edge may run in a
worker thread, so compression never runs on the event loop.

A reader never crashes on hostile input: anything wrong raises RecordingError carrying a Problem that
names it (which segment, and whether it was edited, truncated, out of chain, or under an unknown key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from zstandard import ZstdCompressor, ZstdDecompressor, ZstdError, frame_content_size

from gateway.auth.cookie import parse_key
from gateway.recording.index import Index, IndexBuilder, SegmentEntry

__all__ = [
    "INPUT",
    "MARKER",
    "SERVER",
    "Header",
    "Keyring",
    "Packed",
    "Problem",
    "Record",
    "RecordingError",
    "RecordingReader",
    "RecordingWriter",
    "Screen",
    "Seal",
    "Segment",
    "SegmentDraft",
    "Verification",
    "pack",
    "rebuild",
    "unpack",
    "verify",
]

VERSION: Final = 1
HEADER_MAGIC: Final = b"NVGR"
SEGMENT_MAGIC: Final = b"NVGS"
INDEX_MAGIC: Final = b"NVGI"
SEAL_MAGIC: Final = b"NVGE"
PACKED_MAGIC: Final = b"NVGP"

# Record kinds inside a segment. SCREEN is always the first record (the framebuffer at the segment's
# start, for the player's synthetic ServerInit) and is given as Segment.screen, not among the records.
_SCREEN: Final = 0
SERVER: Final = 1  # one whole server -> client message
INPUT: Final = 2  # one whole client -> server input message (key, pointer, clipboard, QEMU key)
MARKER: Final = 3  # JSON object with a "kind": opened, resized, notice, input_held, closed, ...

_FLAG_ENCRYPTED: Final = 1
_KID_BYTES: Final = 8
_NONCE_BYTES: Final = 12
_MAC_BYTES: Final = 32
_TAG_BYTES: Final = 16
# magic, version, flags, number, start ms, end ms, records, raw length, previous link hash, MAC key id,
# encryption key id (zeros: not encrypted), nonce (zeros: not encrypted), body length
_SEGMENT: Final = struct.Struct(">4sBBIQQII32s8s8s12sI")
# magic, version, flags, encryption key id, nonce, body length
_INDEX: Final = struct.Struct(">4sBB8s12sI")
# magic, version, segment count, end ms, header hash, last link hash, index hash, MAC key id
_SEAL: Final = struct.Struct(">4sBIQ32s32s32s8s")
_SCREEN_FIXED: Final = struct.Struct(">HH16s")
_BLOB: Final = struct.Struct(">BQ")
_MAX_RAW: Final = 1 << 30  # a segment never holds more (segment_bytes <= 256 MiB plus one message)
_MAX_HEADER: Final = 1 << 20
_LABEL_SEGMENT: Final = b"novnc-gateway recording segment\x00"
_LABEL_INDEX: Final = b"novnc-gateway recording index\x00"
_LABEL_SEAL: Final = b"novnc-gateway recording seal\x00"
_NO_KID: Final = bytes(_KID_BYTES)
_NO_NONCE: Final = bytes(_NONCE_BYTES)
_KEY_EVENT: Final = 4
_QEMU: Final = 255
# zstd levels, fixed (no config key): level 1 stores Raw terminal updates about 17:1, as small as zlib
# level 3 did, at about a quarter of its CPU (docs/recording.md "Numbers"); the index is small and written
# once, so it takes a higher level.
_SEGMENT_LEVEL: Final = 1
_INDEX_LEVEL: Final = 9
# A record's data at least this long (a FramebufferUpdate, mostly) is kept by reference, not copied into
# the segment's buffer: relaying Raw updates, that copy was a large part of the recorder's event-loop time.
_BY_REFERENCE: Final = 4096


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a recording, in words an auditor can act on.

    kind: malformed, truncated (no seal), missing (a segment), edited (a segment's MAC does not match),
    unknown_key (signed or encrypted under a key id that is not configured), chain (a segment does not
    follow the one before: removed, reordered or from another recording), bad_mac (the seal does not
    verify), index (the index does not match the seal), extra (segments after the sealed count).
    """

    kind: str
    message: str
    segment: int | None = None


class RecordingError(ValueError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _fail(kind: str, message: str, segment: int | None = None) -> RecordingError:
    return RecordingError(Problem(kind, message, segment))


def key_id(key: bytes, purpose: bytes) -> bytes:
    """A public 8-byte name for a key (a hash: never key material), stored beside what it signed."""
    return hashlib.sha256(b"novnc-gateway recording " + purpose + b" key id\x00" + key).digest()[:_KID_BYTES]


class Keyring:
    """The configured recording keys: the first HMAC key signs, all verify; the first encryption key (if
    any) encrypts, all decrypt. Rotation = put the new key first and keep the old ones listed while
    recordings made with them are kept (docs/recording.md)."""

    __slots__ = ("_aeads", "_enc_kid", "_macs", "_sign_kid")

    def __init__(self, hmac_keys: Sequence[bytes], encryption_keys: Sequence[bytes] = ()) -> None:
        if not hmac_keys:
            raise ValueError("at least one HMAC key is required")
        self._macs = {key_id(k, b"hmac"): k for k in reversed(hmac_keys)}
        self._sign_kid = key_id(hmac_keys[0], b"hmac")
        self._aeads = {key_id(k, b"encryption"): AESGCM(k) for k in reversed(encryption_keys)}
        self._enc_kid = key_id(encryption_keys[0], b"encryption") if encryption_keys else None

    @classmethod
    def from_secrets(cls, hmac_keys: Iterable[str], encryption_keys: Iterable[str] = ()) -> Keyring:
        """From config values (`novnc-gateway keygen` form, base64url of 32 bytes)."""
        return cls([parse_key(k) for k in hmac_keys], [parse_key(k) for k in encryption_keys])

    def __repr__(self) -> str:
        return f"Keyring(hmac={len(self._macs)}, encryption={len(self._aeads)})"

    @property
    def signing_kid(self) -> bytes:
        return self._sign_kid

    @property
    def encryption_kid(self) -> bytes | None:
        """The id of the key new segments are encrypted with; None: not encrypting."""
        return self._enc_kid

    def sign(self, label: bytes, data: bytes) -> bytes:
        """The MAC under the signing key."""
        return hmac.digest(self._macs[self._sign_kid], label + data, "sha256")

    def check(self, kid: bytes, label: bytes, data: bytes, mac: bytes) -> bool | None:
        """True/False whether `mac` verifies; None when no configured key has this id."""
        key = self._macs.get(kid)
        if key is None:
            return None
        return hmac.compare_digest(hmac.digest(key, label + data, "sha256"), mac)

    def encrypt(self, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
        """Ciphertext with tag under the encrypting key."""
        if self._enc_kid is None:
            raise RuntimeError("no encryption key is configured")
        return self._aeads[self._enc_kid].encrypt(nonce, plain, aad)

    def decrypt(self, kid: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        """The plaintext; None when no configured key has this id; raises InvalidTag when it fails."""
        aead = self._aeads.get(kid)
        return None if aead is None else aead.decrypt(nonce, sealed, aad)


@dataclass(frozen=True, slots=True)
class Header:
    """Who recorded what, and the RFB handshake as the browser saw it. Stored as canonical JSON in the
    clear (listing and search need it; the screen content is what gets encrypted)."""

    id: str  # the recording id = the console id
    start: float  # Unix time the recording started; record times are milliseconds after it
    user: str
    groups: tuple[str, ...]
    server_id: str
    server_name: str
    cloud: str
    permission: str
    rfb_version: str  # "RFB 003.008"
    width: int
    height: int
    pixel_format: bytes  # the 16 bytes of ServerInit
    name: str  # the desktop name
    encodings: tuple[int, ...]  # what the gateway let the client negotiate
    record_input: bool
    project_id: str = ""
    region: str = ""
    tags: tuple[str, ...] = ()  # the server's tags ("key=value" or "key"), for review rules

    def to_bytes(self) -> bytes:
        # The store's metadata plus the id and the RFB facts; keys are sorted, so the bytes do not depend
        # on the order they are gathered in.
        doc = {
            "v": VERSION,
            "id": self.id,
            **self.meta(),
            "rfb": {
                "version": self.rfb_version,
                "width": self.width,
                "height": self.height,
                "pixel_format": self.pixel_format.hex(),
                "name": self.name,
                "encodings": list(self.encodings),
            },
        }
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return HEADER_MAGIC + bytes([VERSION]) + body

    def meta(self) -> dict[str, Any]:
        """What a store keeps beside the recording for listing, search and retention."""
        return {
            "start": self.start,
            "user": self.user,
            "groups": list(self.groups),
            "server_id": self.server_id,
            "server_name": self.server_name,
            "cloud": self.cloud,
            "permission": self.permission,
            "record_input": self.record_input,
            "project_id": self.project_id,
            "region": self.region,
            "tags": list(self.tags),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        if len(data) > _MAX_HEADER or data[:4] != HEADER_MAGIC or data[4:5] != bytes([VERSION]):
            raise _fail("malformed", "the header is not a version 1 recording header")
        try:
            doc = json.loads(data[5:])
            rfb = doc["rfb"]
            header = cls(
                id=_str(doc["id"]),
                start=float(doc["start"]),
                user=_str(doc["user"]),
                groups=tuple(_str(g) for g in doc["groups"]),
                server_id=_str(doc["server_id"]),
                server_name=_str(doc["server_name"]),
                cloud=_str(doc["cloud"]),
                permission=_str(doc["permission"]),
                rfb_version=_str(rfb["version"]),
                width=_u16(rfb["width"]),
                height=_u16(rfb["height"]),
                pixel_format=bytes.fromhex(_str(rfb["pixel_format"])),
                name=_str(rfb["name"]),
                encodings=tuple(_s32(e) for e in rfb["encodings"]),
                record_input=doc["record_input"] is True,
                project_id=_str(doc.get("project_id", "")),
                region=_str(doc.get("region", "")),
                tags=tuple(_str(t) for t in doc.get("tags", ())),
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _fail("malformed", "the header's fields are malformed") from None
        if len(header.pixel_format) != 16:
            raise _fail("malformed", "the header's pixel format is not 16 bytes")
        return header


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _u16(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise ValueError("not a 16-bit size")
    return value


def _s32(value: Any) -> int:
    if type(value) is not int or not -(1 << 31) <= value < (1 << 31):
        raise ValueError("not an encoding number")
    return value


@dataclass(frozen=True, slots=True)
class Screen:
    """The framebuffer at a segment's start: what a synthetic ServerInit must say."""

    width: int
    height: int
    pixel_format: bytes
    name: str

    def to_bytes(self) -> bytes:
        return _SCREEN_FIXED.pack(self.width, self.height, self.pixel_format) + self.name.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Screen:
        width, height, pixel_format = _SCREEN_FIXED.unpack_from(data)
        return cls(width, height, pixel_format, data[_SCREEN_FIXED.size :].decode())


class Record(NamedTuple):
    kind: int  # SERVER, INPUT or MARKER
    t: int  # milliseconds since the recording started
    data: bytes  # the message (SERVER, INPUT) or the marker's JSON

    def marker(self) -> dict[str, Any]:
        """A MARKER record's object."""
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise _fail("malformed", "a marker is not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class SegmentDraft:
    """A cut segment waiting for `RecordingWriter.build`: its records, uncompressed, in the pieces they
    were appended as (large server messages by reference: appending and cutting never copy them on the
    event loop; `build` compresses the pieces in order, in a worker thread)."""

    number: int
    start: int
    end: int
    records: int
    parts: tuple[bytes, ...]
    screen: Screen

    @property
    def size(self) -> int:
        """Bytes of records, uncompressed."""
        return sum(map(len, self.parts))


@dataclass(frozen=True, slots=True)
class Segment:
    number: int
    start: int
    end: int
    screen: Screen
    records: list[Record]
    sha256: bytes  # of the stored bytes: the link the next segment names


@dataclass(frozen=True, slots=True)
class Seal:
    segments: int
    end: int
    header_hash: bytes
    last_link: bytes
    index_hash: bytes


def _uvarint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _index_keys(index: IndexBuilder, t: int, message: bytes) -> None:
    """A recorded input message's key, if it is one (KeyEvent, or QEMU's extended key event), into the
    typed text."""
    if len(message) >= 8 and message[0] == _KEY_EVENT:
        index.key(t, int.from_bytes(message[4:8], "big"), message[1] != 0)
    elif len(message) >= 12 and message[0] == _QEMU and message[1] == 0:
        index.key(t, int.from_bytes(message[4:8], "big"), message[2:4] != b"\0\0")


class RecordingWriter:
    """Events in, sealed segments out. One per recording; not thread-safe except as `build` says.

    Feed `server`/`client`/`marker`/`screen` as things happen; when `due(t)` the edge asks the server
    for a full update (the keyframe) and calls `cut(t)` at the next server-message boundary; `close(t)`
    ends the last segment. Each draft goes through `build` (in number order; may run in a worker thread
    while events keep arriving), then `finish()` gives the index and the seal.
    """

    def __init__(
        self,
        header: Header,
        keys: Keyring,
        *,
        segment_seconds: float = 30.0,
        segment_bytes: int = 8 * 1024 * 1024,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.header = header
        self.header_bytes = header.to_bytes()
        self._keys = keys
        self._id = header.id.encode()
        self._segment_ms = int(segment_seconds * 1000)
        self._segment_bytes = segment_bytes
        self._compressor = ZstdCompressor(level=_SEGMENT_LEVEL)  # reused: build runs one at a time
        self._random = random
        self._record_input = header.record_input
        self._index = IndexBuilder(typed_text=header.record_input)
        self._screen = Screen(header.width, header.height, header.pixel_format, header.name)
        self._closed = False
        self._drafts = 0
        # build's state (touched only by build and finish)
        self._built = 0
        self._link = hashlib.sha256(self.header_bytes).digest()
        self._offset = len(PACKED_MAGIC) + 1 + _BLOB.size + len(self.header_bytes) + _BLOB.size
        self._end = 0
        self._stored = 0
        self._close_code: int | None = None
        self._start_segment(0)

    def _start_segment(self, t: int) -> None:
        self._parts: list[bytes] = []  # the segment's records so far: the pieces before `_buf`
        self._size = 0  # their bytes
        self._buf = bytearray()  # record framing and small records since the last piece
        self._records = 0
        self._seg_start = t
        self._last = t
        self._seg_screen = self._screen
        self._append(_SCREEN, t, self._screen.to_bytes())

    def _append(self, kind: int, t: int, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("the recording is closed")
        buf = self._buf
        buf.append(kind)
        if t > self._last:
            _uvarint(buf, t - self._last)
            self._last = t
        else:
            buf.append(0)  # times never go back: an out-of-order event takes the latest time
        _uvarint(buf, len(data))
        if len(data) >= _BY_REFERENCE and type(data) is bytes:  # immutable: safe to keep, no copy
            self._parts += (bytes(buf), data)
            self._size += len(buf) + len(data)
            buf.clear()
        else:
            buf += data
        self._records += 1

    @property
    def buffered(self) -> int:
        """Bytes of the current segment so far (uncompressed)."""
        return self._size + len(self._buf)

    def server(self, t: int, message: bytes) -> None:
        """One whole server -> client message."""
        self._append(SERVER, t, message)
        self._index.server(self._last, len(message))

    def client(self, t: int, message: bytes) -> None:
        """One whole client input message: counted in the histogram always, recorded (and its keys
        indexed as typed text) only when the header says input is recorded."""
        self._index.input(max(t, self._last))
        if not self._record_input:
            return
        self._append(INPUT, t, message)
        _index_keys(self._index, self._last, message)

    def marker(self, t: int, kind: str, **fields: Any) -> None:
        """A marker (opened, resized, notice, input_held, closed, ...); fields must be JSON values."""
        doc = {"kind": kind, **fields}
        if kind == "closed" and isinstance(fields.get("code"), int):
            self._close_code = fields["code"]
        self._append(MARKER, t, json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
        self._index.marker(self._last, doc)

    def screen(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        pixel_format: bytes | None = None,
        name: str | None = None,
    ) -> None:
        """The framebuffer changed (a resize, the client's SetPixelFormat, a new desktop name): the next
        segment's start says so."""
        s = self._screen
        self._screen = Screen(
            s.width if width is None else width,
            s.height if height is None else height,
            s.pixel_format if pixel_format is None else pixel_format,
            s.name if name is None else name,
        )

    def due(self, t: int) -> bool:
        """Time to cut: the segment is old or big enough and holds more than its start."""
        return self._records > 1 and (
            t - self._seg_start >= self._segment_ms or self.buffered >= self._segment_bytes
        )

    def cut(self, t: int) -> SegmentDraft:
        """End the current segment at `t` and start the next (which begins with the current screen)."""
        draft = self._draft(t)
        self._start_segment(max(t, self._last))
        return draft

    def close(self, t: int) -> SegmentDraft:
        """End the last segment; nothing more can be recorded."""
        draft = self._draft(t)
        self._closed = True
        return draft

    def _draft(self, t: int) -> SegmentDraft:
        if self._closed:
            raise RuntimeError("the recording is closed")
        end = max(t, self._last)
        draft = SegmentDraft(
            self._drafts,
            self._seg_start,
            end,
            self._records,
            (*self._parts, bytes(self._buf)),
            self._seg_screen,
        )
        self._drafts += 1
        self._end = end
        return draft

    def build(self, draft: SegmentDraft) -> bytes:
        """Compress, encrypt (when keys say so), chain and sign one segment: the bytes to store.

        Pure CPU (zstd, hashlib and AES-GCM release the GIL on large inputs), so the edge may run it in a
        worker thread while events keep arriving; drafts must be built one at a time, in number order."""
        if draft.number != self._built:
            raise RuntimeError(f"segment {draft.number} built out of order (expected {self._built})")
        raw_size = draft.size
        packer = self._compressor.compressobj(size=raw_size)  # the frame states the size (the reader checks)
        body = b"".join([*map(packer.compress, draft.parts), packer.flush()])
        enc_kid = self._keys.encryption_kid
        flags, nonce = (0, _NO_NONCE) if enc_kid is None else (_FLAG_ENCRYPTED, self._random(_NONCE_BYTES))
        size = len(body) + (_TAG_BYTES if flags else 0)
        fixed = _SEGMENT.pack(
            SEGMENT_MAGIC,
            VERSION,
            flags,
            draft.number,
            draft.start,
            draft.end,
            draft.records,
            raw_size,
            self._link,
            self._keys.signing_kid,
            enc_kid or _NO_KID,
            nonce,
            size,
        )
        if flags:
            body = self._keys.encrypt(nonce, body, _LABEL_SEGMENT + self._id + fixed)
        stored = fixed + body
        stored += self._keys.sign(_LABEL_SEGMENT + self._id, stored)
        digest = hashlib.sha256(stored).digest()
        screen = draft.screen
        self._index.segment(
            SegmentEntry(
                draft.number,
                self._offset,
                len(stored),
                draft.start,
                draft.end,
                screen.width,
                screen.height,
                draft.records,
                digest.hex(),
            )
        )
        self._offset += len(stored) + _BLOB.size
        self._stored += len(stored)
        self._link = digest
        self._built += 1
        return stored

    def finish(self) -> tuple[bytes, bytes]:
        """(index bytes, seal bytes), once the last segment (from `close`) is built."""
        if not self._closed or self._built != self._drafts:
            raise RuntimeError("finish needs the recording closed and every segment built")
        index = _envelope_index(self._keys, self._id, self._index.build(self._end).to_bytes(), self._random)
        fixed = _SEAL.pack(
            SEAL_MAGIC,
            VERSION,
            self._built,
            self._end,
            hashlib.sha256(self.header_bytes).digest(),
            self._link,
            hashlib.sha256(index).digest(),
            self._keys.signing_kid,
        )
        return index, fixed + self._keys.sign(_LABEL_SEAL + self._id, fixed)

    def final_meta(self) -> dict[str, Any]:
        """The listing metadata once finished (for store.finish): the header's, plus when it ended, how
        long it ran, its close code (from the last "closed" marker) and the segment bytes stored."""
        return self.header.meta() | {
            "end": self.header.start + self._end / 1000,
            "duration_ms": self._end,
            "close_code": self._close_code,
            "segments": self._built,
            "bytes": self._stored,
        }

    def index(self, t: int) -> Index:
        """The index so far (a live recording's timeline); segments listed once built."""
        return self._index.build(max(t, self._last))


def _envelope_index(keys: Keyring, rid: bytes, plain: bytes, random: Callable[[int], bytes]) -> bytes:
    body = ZstdCompressor(level=_INDEX_LEVEL).compress(plain)
    enc_kid = keys.encryption_kid
    flags, nonce = (0, _NO_NONCE) if enc_kid is None else (_FLAG_ENCRYPTED, random(_NONCE_BYTES))
    fixed = _INDEX.pack(
        INDEX_MAGIC, VERSION, flags, enc_kid or _NO_KID, nonce, len(body) + (_TAG_BYTES if flags else 0)
    )
    if flags:
        body = keys.encrypt(nonce, body, _LABEL_INDEX + rid + fixed)
    return fixed + body


def _inflate(body: bytes, size: int | None, what: str, segment: int | None = None) -> bytes:
    """One zstd frame, bounded by the size the (authenticated) header promised (`None`: at most
    _MAX_RAW): the frame must state that size, and the decoder refuses to write past it, so a hostile
    frame cannot make it allocate more."""
    try:
        stated = frame_content_size(body)
    except ZstdError:
        raise _fail("malformed", f"{what} does not decompress", segment) from None
    if (size is not None and stated != size) or not 0 <= stated <= _MAX_RAW:
        raise _fail("malformed", f"{what} does not decompress to its stated size", segment)
    inflater = ZstdDecompressor().decompressobj()
    try:
        raw = inflater.decompress(body)
    except ZstdError:
        raise _fail("malformed", f"{what} does not decompress", segment) from None
    if len(raw) != stated or not inflater.eof or inflater.unused_data:
        raise _fail("malformed", f"{what} does not decompress to its stated size", segment)
    return raw


def _varint_rest(raw: bytes, pos: int, first: int) -> tuple[int, int]:
    """A varint of more than one byte whose `first` byte was read, and the position after it: the one-byte
    case stays inline in `_decode_records`, which is the hot loop."""
    value, shift = first & 0x7F, 7
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _decode_records(raw: bytes, start: int, count: int, number: int) -> tuple[Screen, list[Record]]:
    """The records of a segment (the hot loop of playback: kept flat)."""
    records: list[Record] = []
    append = records.append
    pos, end, t, n = 0, len(raw), start, 0
    screen: Screen | None = None
    try:
        while pos < end:
            kind = raw[pos]
            byte = raw[pos + 1]
            pos += 2
            if byte < 0x80:
                dt = byte
            else:
                dt, pos = _varint_rest(raw, pos, byte)
            byte = raw[pos]
            pos += 1
            if byte < 0x80:
                length = byte
            else:
                length, pos = _varint_rest(raw, pos, byte)
            if pos + length > end:
                raise ValueError("a record runs past the segment's end")
            t += dt
            data = raw[pos : pos + length]
            pos += length
            n += 1
            if n == 1:
                if kind != _SCREEN:
                    raise ValueError("the segment does not start with its screen")
                screen = Screen.from_bytes(data)
            elif SERVER <= kind <= MARKER:
                append(Record(kind, t, data))
            else:
                raise ValueError(f"unknown record kind {kind}")
    except (IndexError, ValueError, struct.error) as exc:
        if isinstance(exc, UnicodeError):
            reason = "the desktop name is not UTF-8"
        elif isinstance(exc, IndexError | struct.error):
            reason = "a record is cut off"
        else:
            reason = str(exc)
        raise _fail("malformed", f"segment {number}: records are malformed ({reason})", number) from None
    if screen is None or n != count:
        raise _fail("malformed", f"segment {number}: holds {n} records, its header says {count}", number)
    return screen, records


@dataclass(slots=True)
class Verification:
    """The verdict on a whole recording: `ok` only when sealed and nothing is wrong."""

    header: Header | None = None
    segments: int = 0  # segments that verified
    sealed: bool = False
    index: Index | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sealed and not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"intact: {self.segments} segments, sealed"
        return "; ".join(p.message for p in self.problems)


class RecordingReader:
    """Opens one recording's parts with the configured keys; each method raises RecordingError naming
    what is wrong. Segments may be opened in any order (a seek); the chain is checked whenever the
    segment before was opened by this reader (in order, as `verify` does), and each segment against the
    sealed index once `index` has been read with a verified seal."""

    def __init__(self, keys: Keyring, header_bytes: bytes) -> None:
        self.header = Header.from_bytes(header_bytes)
        self._keys = keys
        self._id = self.header.id.encode()
        self._header_hash = hashlib.sha256(header_bytes).digest()
        self._links: dict[int, bytes] = {}
        self._sealed: Index | None = None

    def segment(self, number: int, data: bytes) -> Segment:
        """Verify and decode segment `number` (its MAC, its place in the chain, then decrypt and parse)."""
        where = f"segment {number}"
        if len(data) < _SEGMENT.size + _MAC_BYTES:
            raise _fail("malformed", f"{where} is too short to be a recording segment", number)
        (
            magic,
            version,
            flags,
            stored_number,
            start,
            end,
            records,
            raw_len,
            prev,
            mac_kid,
            enc_kid,
            nonce,
            size,
        ) = _SEGMENT.unpack_from(data)
        body_end = _SEGMENT.size + size
        if len(data) != body_end + _MAC_BYTES:
            raise _fail("edited", f"{where} was cut short or extended (its length is wrong)", number)
        verdict = self._keys.check(mac_kid, _LABEL_SEGMENT + self._id, data[:body_end], data[body_end:])
        if verdict is None:
            raise _fail(
                "unknown_key",
                f"{where} is signed with key id {mac_kid.hex()}, not configured (or the id was altered)",
                number,
            )
        if not verdict:
            raise _fail(
                "edited", f"{where} was changed after it was written (its MAC does not match)", number
            )
        if magic != SEGMENT_MAGIC or version != VERSION:
            raise _fail("malformed", f"{where}: format version {version} is not supported", number)
        if stored_number != number:
            raise _fail("chain", f"{where} holds segment {stored_number} (moved)", number)
        expected = self._header_hash if number == 0 else self._links.get(number - 1)
        if expected is not None and not hmac.compare_digest(prev, expected):
            raise _fail(
                "chain",
                f"{where} does not follow segment {number - 1} (segments removed, reordered or mixed)",
                number,
            )
        digest = hashlib.sha256(data).digest()
        if self._sealed is not None:
            entry = next((e for e in self._sealed.segments if e.number == number), None)
            if entry is None or entry.sha256 != digest.hex():
                raise _fail("chain", f"{where} is not the one the sealed index names", number)
        body = data[_SEGMENT.size : body_end]
        if flags & _FLAG_ENCRYPTED:
            body = self._open(enc_kid, nonce, body, _LABEL_SEGMENT + self._id + data[: _SEGMENT.size], where)
        screen, decoded = _decode_records(_inflate(body, raw_len, where, number), start, records, number)
        self._links[number] = digest
        return Segment(number, start, end, screen, decoded, digest)

    def _open(self, kid: bytes, nonce: bytes, body: bytes, aad: bytes, where: str) -> bytes:
        number = int(where.rsplit(" ", 1)[1]) if where.startswith("segment") else None
        try:
            plain = self._keys.decrypt(kid, nonce, body, aad)
        except InvalidTag:
            raise _fail("edited", f"{where} does not decrypt (changed, or a different key)", number) from None
        if plain is None:
            raise _fail(
                "unknown_key", f"{where} is encrypted with key id {kid.hex()}, not configured", number
            )
        return plain

    def seal(self, data: bytes) -> Seal:
        """Verify the seal's MAC and that it closes this header."""
        if len(data) != _SEAL.size + _MAC_BYTES or data[:4] != SEAL_MAGIC:
            raise _fail("malformed", "the seal is malformed")
        _, version, segments, end, header_hash, last_link, index_hash, kid = _SEAL.unpack_from(data)
        if version != VERSION:
            raise _fail("malformed", f"the seal has format version {version}")
        verdict = self._keys.check(kid, _LABEL_SEAL + self._id, data[: _SEAL.size], data[_SEAL.size :])
        if verdict is None:
            raise _fail(
                "unknown_key",
                f"the seal is signed with key id {kid.hex()}, not configured (or the id was altered)",
            )
        if not verdict:
            raise _fail("bad_mac", "the seal's MAC does not match (seal edited, or signed by another key)")
        if not hmac.compare_digest(header_hash, self._header_hash):
            raise _fail("edited", "the header was changed after recording (the seal names another)")
        return Seal(segments, end, header_hash, last_link, index_hash)

    def index(self, data: bytes, seal: Seal | None = None) -> Index:
        """Decode the index; with a verified seal, check it is the sealed one (and trust it to check
        single segments from then on)."""
        if seal is not None and not hmac.compare_digest(hashlib.sha256(data).digest(), seal.index_hash):
            raise _fail("index", "the index was changed after recording (the seal names another)")
        if len(data) < _INDEX.size or data[:4] != INDEX_MAGIC:
            raise _fail("malformed", "the index is malformed")
        _, version, flags, kid, nonce, size = _INDEX.unpack_from(data)
        if version != VERSION or len(data) != _INDEX.size + size:
            raise _fail("malformed", "the index is malformed")
        body = data[_INDEX.size :]
        if flags & _FLAG_ENCRYPTED:
            body = self._open(kid, nonce, body, _LABEL_INDEX + self._id + data[: _INDEX.size], "the index")
        plain = _inflate(body, None, "the index")
        try:
            index = Index.from_bytes(plain)
        except ValueError as exc:
            raise _fail("malformed", str(exc)) from None
        if seal is not None:
            self._sealed = index
        return index


def verify(
    keys: Keyring,
    header: bytes,
    segments: Iterable[bytes | None],
    index: bytes | None,
    seal: bytes | None,
) -> Verification:
    """Check a whole recording, in order; collect every problem instead of stopping at the first.

    `segments` yields each stored segment in number order (None for one the store does not have)."""
    result = Verification()
    try:
        reader = RecordingReader(keys, header)
    except RecordingError as exc:
        result.problems.append(exc.problem)
        return result
    result.header = reader.header
    count = 0
    for number, data in enumerate(segments):
        count = number + 1
        if data is None:
            result.problems.append(Problem("missing", f"segment {number} is missing", number))
            continue
        try:
            reader.segment(number, data)
            result.segments += 1
        except RecordingError as exc:
            result.problems.append(exc.problem)
    if seal is None:
        result.problems.append(
            Problem("truncated", "no seal: the recording is incomplete (cut short, or still being written)")
        )
        return result
    try:
        sealed = reader.seal(seal)
    except RecordingError as exc:
        result.problems.append(exc.problem)
        return result
    result.sealed = True
    if count < sealed.segments:
        result.problems.append(
            Problem("truncated", f"segments {count} to {sealed.segments - 1} of {sealed.segments} are gone")
        )
    elif count > sealed.segments:
        result.problems.append(Problem("extra", f"{count - sealed.segments} segments after the sealed end"))
    elif count and not hmac.compare_digest(reader._links.get(count - 1, b""), sealed.last_link):
        if not any(p.segment == count - 1 for p in result.problems):
            result.problems.append(
                Problem("chain", "the last segment is not the one the seal names", count - 1)
            )
    if index is None:
        result.problems.append(Problem("index", "the index is missing"))
    else:
        try:
            result.index = reader.index(index, sealed)
        except RecordingError as exc:
            result.problems.append(exc.problem)
    return result


def rebuild(keys: Keyring, header: bytes, segments: Iterable[bytes | None]) -> tuple[Index, list[Problem]]:
    """The index of a recording that has none (still being written, or cut short), rebuilt from its
    segments in order as the writer builds it, for the player's timeline. It ends at the first segment
    that is missing or does not verify (that problem is returned). Input not recorded was not counted
    either: the histogram of inputs holds only recorded ones. Raises RecordingError for a bad header."""
    reader = RecordingReader(keys, header)
    builder = IndexBuilder(typed_text=reader.header.record_input)
    problems: list[Problem] = []
    offset = len(PACKED_MAGIC) + 1 + _BLOB.size + len(header) + _BLOB.size  # as in pack()
    end = 0
    for number, data in enumerate(segments):
        if data is None:
            problems.append(Problem("missing", f"segment {number} is missing", number))
            break
        try:
            segment = reader.segment(number, data)
        except RecordingError as exc:
            problems.append(exc.problem)
            break
        for record in segment.records:
            if record.kind == SERVER:
                builder.server(record.t, len(record.data))
            elif record.kind == INPUT:
                builder.input(record.t)
                _index_keys(builder, record.t, record.data)
            else:
                builder.marker(record.t, record.marker())
        screen = segment.screen
        records = len(segment.records) + 1  # with the screen record, as the writer counts
        size, digest = len(data), segment.sha256.hex()
        width, height = screen.width, screen.height
        builder.segment(
            SegmentEntry(number, offset, size, segment.start, segment.end, width, height, records, digest)
        )
        offset += len(data) + _BLOB.size
        end = segment.end
    return builder.build(end), problems


@dataclass(slots=True)
class Packed:
    """A recording's parts as one file (the download): header, segments, then index and seal if any."""

    header: bytes
    segments: list[bytes]
    index: bytes | None
    seal: bytes | None
    complete: bool  # False: the file ended inside a part (a cut-off download)


_BLOB_HEADER, _BLOB_SEGMENT, _BLOB_INDEX, _BLOB_SEAL = 1, 2, 3, 4


def pack(
    header: bytes, segments: Iterable[bytes], index: bytes | None, seal: bytes | None
) -> Iterable[bytes]:
    """The packed file, in pieces (to stream a download). Index offsets point into this layout."""
    yield PACKED_MAGIC + bytes([VERSION])
    yield _BLOB.pack(_BLOB_HEADER, len(header)) + header
    for data in segments:
        yield _BLOB.pack(_BLOB_SEGMENT, len(data))
        yield data
    if index is not None:
        yield _BLOB.pack(_BLOB_INDEX, len(index)) + index
    if seal is not None:
        yield _BLOB.pack(_BLOB_SEAL, len(seal)) + seal


def unpack(data: bytes) -> Packed:
    """Split a packed file; a file cut off mid-part keeps the whole parts before it (complete=False)."""
    if data[:5] != PACKED_MAGIC + bytes([VERSION]):
        raise _fail("malformed", "not a packed recording")
    pos, order = 5, [_BLOB_HEADER]
    parts = Packed(b"", [], None, None, True)
    while pos < len(data):
        if pos + _BLOB.size > len(data):
            parts.complete = False
            break
        kind, size = _BLOB.unpack_from(data, pos)
        pos += _BLOB.size
        if pos + size > len(data):
            parts.complete = False
            break
        blob = data[pos : pos + size]
        pos += size
        if kind not in order:
            raise _fail("malformed", "the packed recording's parts are out of order")
        if kind == _BLOB_HEADER:
            parts.header, order = blob, [_BLOB_SEGMENT, _BLOB_INDEX, _BLOB_SEAL]
        elif kind == _BLOB_SEGMENT:
            parts.segments.append(blob)
        elif kind == _BLOB_INDEX:
            parts.index, order = blob, [_BLOB_SEAL]
        else:
            parts.seal, order = blob, []
    if not parts.header:
        raise _fail("malformed", "the packed recording has no header")
    return parts
