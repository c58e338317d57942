"""The sidecar index of a recording: where each segment is and what it starts with, a per-second activity
histogram, the markers, and (only when input is recorded) the text typed, with times.

Built incrementally by the writer (IndexBuilder, fed as events happen: no second pass over the
recording), stored as compact JSON inside the same envelope as a segment (compressed, encrypted when the
segments are), and covered by the seal. The player reads it to draw the timeline, to find the segment
holding a time without touching the others, and to search typed text. Times are milliseconds since the
recording's start. Sans-IO: no clock, no files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.recording.keysyms import BACKSPACE, TypedKeys

__all__ = ["RUN_GAP_MS", "Index", "IndexBuilder", "SegmentEntry", "TypedRun"]

# Typed characters further apart than this (or after a newline) start a new run of the typed-text panel.
RUN_GAP_MS: Final = 5000


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One segment: its place in the packed file (offset, size), its time span, the framebuffer at its
    start (the player's synthetic ServerInit), its record count and the SHA-256 of its stored bytes (so a
    sealed index verifies any single segment without reading the ones before it)."""

    number: int
    offset: int
    size: int
    start: int
    end: int
    width: int
    height: int
    records: int
    sha256: str

    def to_list(self) -> list[Any]:
        return [
            self.number,
            self.offset,
            self.size,
            self.start,
            self.end,
            self.width,
            self.height,
            self.records,
            self.sha256,
        ]


@dataclass(slots=True)
class TypedRun:
    """Characters typed close together: `t` is the first one's time, `times` each one's offset from it."""

    t: int
    text: str
    times: list[int]

    def at(self, position: int) -> int:
        """When the character at `position` of `text` was typed."""
        return self.t + self.times[position]


@dataclass(slots=True)
class Index:
    duration: int = 0
    segments: list[SegmentEntry] = field(default_factory=list)
    bytes_out: list[int] = field(default_factory=list)  # server -> browser bytes per second
    inputs: list[int] = field(default_factory=list)  # input messages (keys, pointer, clipboard) per second
    markers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    typed: list[TypedRun] | None = None  # None: input was not recorded

    def segment_at(self, t: int) -> SegmentEntry | None:
        """The segment holding time `t` (the last one starting at or before it)."""
        found = None
        for entry in self.segments:
            if entry.start > t:
                break
            found = entry
        return found

    def find(self, text: str) -> list[int]:
        """When each occurrence of `text` (case-insensitive, within one run) began to be typed."""
        needle = text.casefold()
        hits: list[int] = []
        if not needle or self.typed is None:
            return hits
        for run in self.typed:
            hay = run.text.casefold()
            if len(hay) != len(run.text):  # casefold changed lengths (ß): positions from the original
                hay, needle_here = run.text, text
            else:
                needle_here = needle
            pos = hay.find(needle_here)
            while pos >= 0:
                hits.append(run.at(pos))
                pos = hay.find(needle_here, pos + 1)
        return hits

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "v": 1,
            "duration": self.duration,
            "segments": [e.to_list() for e in self.segments],
            "bytes_out": self.bytes_out,
            "inputs": self.inputs,
            "markers": [[t, m] for t, m in self.markers],
        }
        if self.typed is not None:
            doc["typed"] = [[r.t, r.text, r.times] for r in self.typed]
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        """Parse and check an index; anything malformed raises ValueError saying what."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"index is not JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError("index: not a version 1 index object")
        index = cls(duration=_int(doc.get("duration"), "duration"))
        for item in _list(doc.get("segments"), "segments"):
            row = _list(item, "segment")
            if len(row) != 9 or not isinstance(row[8], str):
                raise ValueError("index: a segment entry is malformed")
            index.segments.append(SegmentEntry(*(_int(v, "segment") for v in row[:8]), row[8]))
        index.bytes_out = [_int(v, "bytes_out") for v in _list(doc.get("bytes_out"), "bytes_out")]
        index.inputs = [_int(v, "inputs") for v in _list(doc.get("inputs"), "inputs")]
        for item in _list(doc.get("markers"), "markers"):
            row = _list(item, "marker")
            if len(row) != 2 or not isinstance(row[1], dict):
                raise ValueError("index: a marker is malformed")
            index.markers.append((_int(row[0], "marker"), row[1]))
        if "typed" in doc:
            index.typed = []
            for item in _list(doc["typed"], "typed"):
                row = _list(item, "typed run")
                if len(row) != 3 or not isinstance(row[1], str):
                    raise ValueError("index: a typed run is malformed")
                times = [_int(v, "typed run") for v in _list(row[2], "typed run")]
                if len(times) != len(row[1]):
                    raise ValueError("index: a typed run's times do not match its text")
                index.typed.append(TypedRun(_int(row[0], "typed run"), row[1], times))
        return index


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"index: {what} holds something other than a non-negative integer")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"index: {what} is not a list")
    return value


class IndexBuilder:
    """Fed by the writer as events happen; `build` returns the Index so far (cheap: copies lists)."""

    __slots__ = ("_bytes_out", "_inputs", "_keys", "_last_key", "_markers", "_segments", "_typed")

    def __init__(self, *, typed_text: bool) -> None:
        self._bytes_out: list[int] = []
        self._inputs: list[int] = []
        self._markers: list[tuple[int, dict[str, Any]]] = []
        self._segments: list[SegmentEntry] = []
        self._typed: list[TypedRun] | None = [] if typed_text else None
        self._keys = TypedKeys()
        self._last_key = -RUN_GAP_MS - 1

    @staticmethod
    def _bump(histogram: list[int], t: int, amount: int) -> None:
        second = t // 1000
        if second >= len(histogram):
            histogram.extend([0] * (second + 1 - len(histogram)))
        histogram[second] += amount

    def server(self, t: int, size: int) -> None:
        self._bump(self._bytes_out, t, size)

    def input(self, t: int) -> None:
        self._bump(self._inputs, t, 1)

    def key(self, t: int, keysym: int, down: bool) -> None:
        """A key event (only called when input is recorded)."""
        if self._typed is None:
            return
        char = self._keys.press(keysym, down)
        if not char:
            return
        runs = self._typed
        if char == BACKSPACE:
            if runs and runs[-1].text and not runs[-1].text.endswith("\n"):
                run = runs[-1]
                run.text = run.text[:-1]
                run.times.pop()
                if not run.text:
                    runs.pop()
            return
        if not runs or t - self._last_key > RUN_GAP_MS or runs[-1].text.endswith("\n"):
            runs.append(TypedRun(t, char, [0]))
        else:
            run = runs[-1]
            run.text += char
            run.times.append(t - run.t)
        self._last_key = t

    def marker(self, t: int, marker: dict[str, Any]) -> None:
        self._markers.append((t, marker))

    def segment(self, entry: SegmentEntry) -> None:
        self._segments.append(entry)

    def build(self, duration: int) -> Index:
        typed = None if self._typed is None else [TypedRun(r.t, r.text, list(r.times)) for r in self._typed]
        return Index(
            duration=duration,
            segments=list(self._segments),
            bytes_out=list(self._bytes_out),
            inputs=list(self._inputs),
            markers=list(self._markers),
            typed=typed,
        )
