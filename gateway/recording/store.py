"""Where recordings are kept: one small async interface, two backends (local.py: a directory, the
default; s3.py: an S3-compatible bucket). The same contract tests run against both
(tests/contract/test_recording_store_contract.py).

A recording is stored as separate parts, written in this order: `begin` (header and listing metadata),
`put_segment` for each segment as it is cut, `finish` (index, then seal). Each part is written whole or
not at all, so a reader (a live player, the verifier) sees every segment that was put and nothing
half-written; a recording without a seal is incomplete (still being written, or cut short).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["RecordingInfo", "RecordingStore", "StoreError", "check_id", "meta_bytes", "segment_name"]

_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class StoreError(Exception):
    """The store refused or failed (down, full, no permission, timed out): recording cannot go on.
    The message names the store and the reason, never a secret."""


def check_id(rid: str) -> str:
    """Recording ids are console ids: letters, digits, '-' and '_' only, so they are safe as file names
    and object keys."""
    if not _ID_RE.fullmatch(rid):
        raise ValueError("not a valid recording id")
    return rid


def meta_bytes(meta: Mapping[str, Any]) -> bytes:
    """A recording's listing metadata as stored (meta.json)."""
    return json.dumps(dict(meta), separators=(",", ":"), ensure_ascii=False).encode()


def segment_name(number: int) -> str:
    return f"seg-{number:08d}"


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A stored recording, as a listing shows it."""

    id: str
    meta: Mapping[str, Any]  # what `begin` was given (Header.meta(): start, user, server, cloud, ...)
    segments: int  # segments stored so far
    size: int  # bytes stored (all parts)
    finished: bool  # the seal is there

    @property
    def start(self) -> float | None:
        """When the recording started (Unix time), from its metadata; None if that is unreadable."""
        value = self.meta.get("start")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RecordingStore(ABC):
    """Every method raises StoreError when the store cannot do it; reads of absent parts return None."""

    name: str  # "local" or "s3", for messages and metrics

    @abstractmethod
    async def begin(self, rid: str, header: bytes, meta: Mapping[str, Any]) -> None:
        """Create the recording with its header and listing metadata (JSON values); an id already in
        use is refused."""

    @abstractmethod
    async def put_segment(self, rid: str, number: int, data: bytes) -> None:
        """Store segment `number` whole (and durably: a crash afterwards does not lose it)."""

    @abstractmethod
    async def finish(
        self, rid: str, index: bytes, seal: bytes, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Store the final metadata (if given: RecordingWriter.final_meta()), the index, then the seal:
        the recording is complete."""

    @abstractmethod
    async def list(self) -> list[RecordingInfo]:
        """Every recording in the store (unordered)."""

    @abstractmethod
    async def info(self, rid: str) -> RecordingInfo | None: ...

    @abstractmethod
    async def read_header(self, rid: str) -> bytes | None: ...

    @abstractmethod
    async def read_segment(self, rid: str, number: int) -> bytes | None: ...

    @abstractmethod
    async def read_index(self, rid: str) -> bytes | None: ...

    @abstractmethod
    async def read_seal(self, rid: str) -> bytes | None: ...

    @abstractmethod
    async def delete(self, rid: str) -> bool:
        """Remove every part of the recording; False if there was none."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise StoreError unless a write would succeed now (a probe object written and removed)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (the S3 client's); the store is not used afterwards."""
