"""One console's recorder: the relay core's tap on one side, the recording store on the other.

The tap side (`server`, `client`, `marker`, `cut`: gateway/consoles/relay_core.py's RecordingTap) runs on
the relay's hot path and only appends to the segment being written (format.RecordingWriter). Everything
slow happens in one background task per recording, in order: the header goes to the store once
ServerInit has passed (the header holds the handshake), each cut segment is compressed, encrypted and
signed in a worker thread and stored, and at the end the index and the seal. Between the two sides the
backlog is bounded in bytes (`max_pending`): a slow store never slows the console, and one that falls that
far behind, or fails, ends the recording. What the console does then is the caller's (`on_failure`): a
required recording closes it, an optional one lets it go on unrecorded. Nothing already stored is lost:
the recording is closed where it failed and the queued segments, the index and the seal are still
offered to the store (a store that failed outright may take none of them: the recording then reads as
truncated after its last stored segment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.recording.format import Header, Keyring, RecordingWriter, SegmentDraft
from gateway.recording.store import RecordingStore
from gateway.rfb import RECORDABLE_ENCODINGS, ClientMessageFilter, ServerMessageFilter

__all__ = ["Recorder", "RecordingResult", "RecordingSettings"]

log = logging.getLogger("gateway.recording")

_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """What every recording of this gateway shares (from `[recording]`)."""

    keys: Keyring
    segment_seconds: float = 30.0
    segment_bytes: int = 8 * _MIB
    max_pending: int = 64 * _MIB
    finish_timeout: float = 30.0  # how long a closing console waits for its last segment and seal


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """How a recording ended: `started` once its header was stored; `failure` in words, when it failed."""

    started: bool
    segments: int  # segments stored
    sealed: bool
    failure: str | None


class Recorder:
    """Records one console. Made with the console's RFB filters (it reads the handshake, the framebuffer
    and the input from them), handed to its RelayCore as `recording`, `start`ed before the relay runs and
    `close`d after it ended."""

    def __init__(
        self,
        store: RecordingStore,
        settings: RecordingSettings,
        who: Mapping[str, Any],
        *,
        record_input: bool,
        client: ClientMessageFilter,
        frame: ServerMessageFilter,
        on_started: Callable[[], None],
        on_failure: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`who`: the header's description of the console (id, user, groups, server_id, server_name,
        cloud, permission, project_id, region, tags). `on_started` is called once the header is stored,
        `on_failure` once, with the reason, when the recording cannot go on (soon after, from the event
        loop: never inside a relay event). `clock` is the relay's clock (its `now`)."""
        self._store = store
        self._settings = settings
        self._who = dict(who)
        self._record_input = record_input
        self._client = client
        self._frame = frame
        self._on_started = on_started
        self._on_failure = on_failure
        self._clock = clock
        self._wall = wall
        self.id: str = self._who["id"]
        self._recording: RecordingWriter | None = None  # made when ServerInit has passed
        self._t0 = 0.0  # the relay's clock when the recording started
        self._segment_started = 0.0
        self._partial = bytearray()  # a server message not yet whole
        self._screen: tuple[int, int, bytes] = (0, 0, b"")  # size and name as last recorded
        self._pixel_format: bytes | None = None
        self._stopped = False  # failed or closed: the tap ignores everything
        self.failure: str | None = None
        self._jobs: asyncio.Queue[tuple[str, SegmentDraft | None] | None] = asyncio.Queue()
        self._backlog = 0  # bytes of cut segments not yet stored
        self._stored = 0
        self._begun = False
        self._sealed = False
        self._task: asyncio.Task[None] | None = None

    # -- the tap (the relay core's side; appends only) ---------------------------------------------

    @property
    def at_boundary(self) -> bool:
        return self._recording is not None and not self._partial

    def server(self, now: float, data: bytes, boundaries: Sequence[int]) -> None:
        if self._stopped:
            return
        start = 0
        for end in boundaries:
            if self._recording is None:  # the first boundary is ServerInit's end: the handshake is over
                self._begin(now)
            else:
                if self._partial:
                    self._partial += data[start:end]
                    message = bytes(self._partial)
                    self._partial.clear()
                else:
                    message = data[start:end]
                if message:
                    self._recording.server(self._t(now), message)
            start = end
        if self._recording is not None:
            if start < len(data):
                self._partial += data[start:]
            self._screen_changed(now)

    def client(self, now: float, inputs: int) -> None:
        log_ = self._client.input_log
        writer = self._recording
        if writer is None or self._stopped:
            if log_:
                log_.clear()
            return
        t = self._t(now)
        if log_:
            for message in log_:
                writer.client(t, message)
            log_.clear()
        else:
            for _ in range(inputs):  # input not recorded: counted in the activity histogram only
                writer.client(t, b"")
        pixel_format = self._client.pixel_format
        if pixel_format is not None and pixel_format != self._pixel_format:
            self._pixel_format = pixel_format
            writer.screen(pixel_format=pixel_format)

    def marker(self, now: float, kind: str, **fields: Any) -> None:
        if self._recording is not None and not self._stopped:
            self._recording.marker(self._t(now), kind, **fields)

    def due(self, now: float) -> bool:
        return self._recording is not None and not self._stopped and self._recording.due(self._t(now))

    def due_at(self, now: float) -> float:
        every = self._settings.segment_seconds
        deadline = self._segment_started + every
        return deadline if self._recording is not None and deadline > now else now + every

    def cut(self, now: float) -> None:
        if self._recording is None or self._stopped:
            return
        self._enqueue(self._recording.cut(self._t(now)))
        self._segment_started = now

    # -- the edge ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer (call from the event loop, before the relay runs)."""
        self._task = asyncio.get_running_loop().create_task(self._work(), name=f"recording-{self.id}")

    async def close(self, now: float, *, code: int, reason: str, closed_by: str) -> RecordingResult:
        """The console ended: the last segment (with a `closed` marker), the index and the seal go to
        the store; waits for them at most `finish_timeout`."""
        if self._recording is not None and not self._stopped:
            self._recording.marker(self._t(now), "closed", code=code, reason=reason, by=closed_by)
            self._finish(now)
        self._stopped = True
        self._jobs.put_nowait(None)
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self._settings.finish_timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._fail("the recording store did not take the end of the recording in time")
        return RecordingResult(self._begun, self._stored, self._sealed, self.failure)

    def _begin(self, now: float) -> None:
        frame, client = self._frame, self._client
        init = frame.server_init or bytes(24)
        self._t0 = self._segment_started = now
        self._screen = (frame.width, frame.height, frame.name)
        header = Header(
            start=self._wall(),
            rfb_version=client.version,
            width=frame.width,
            height=frame.height,
            pixel_format=init[4:20],
            name=frame.name.decode("utf-8", "replace"),
            encodings=tuple(sorted(RECORDABLE_ENCODINGS)),
            record_input=self._record_input,
            **self._who,
        )
        self._recording = RecordingWriter(
            header,
            self._settings.keys,
            segment_seconds=self._settings.segment_seconds,
            segment_bytes=self._settings.segment_bytes,
        )
        self._jobs.put_nowait(("begin", None))
        self._recording.marker(0, "opened", width=frame.width, height=frame.height)

    def _screen_changed(self, now: float) -> None:
        frame = self._frame
        screen = (frame.width, frame.height, frame.name)
        if screen == self._screen:
            return
        writer = self._recording
        assert writer is not None
        if screen[:2] != self._screen[:2]:
            writer.marker(self._t(now), "resized", width=frame.width, height=frame.height)
        self._screen = screen
        writer.screen(width=frame.width, height=frame.height, name=frame.name.decode("utf-8", "replace"))

    def _t(self, now: float) -> int:
        return max(0, int((now - self._t0) * 1000))

    def _enqueue(self, draft: SegmentDraft) -> None:
        self._backlog += draft.size
        self._jobs.put_nowait(("segment", draft))
        if self._backlog > self._settings.max_pending and not self._stopped:
            behind = self._backlog / _MIB
            self._fail(f"the recording store fell behind ({behind:.0f} MiB waiting)")

    def _finish(self, now: float) -> None:
        """Close the writer: its last segment, then the index and the seal, are queued."""
        writer = self._recording
        assert writer is not None
        self._partial.clear()  # a message cut off by the end is not one a player could decode
        self._enqueue(writer.close(self._t(now)))
        self._jobs.put_nowait(("finish", None))

    def _fail(self, reason: str) -> None:
        """The recording cannot go on: stop the tap, close what was recorded where it is, and say so."""
        if self.failure is not None:
            return
        self.failure = reason
        log.warning("recording %s failed: %s", self.id, reason)
        if self._recording is not None and not self._stopped:
            self._stopped = True
            now = self._clock()
            self._recording.marker(self._t(now), "failed", reason=reason)
            self._finish(now)
        self._stopped = True
        asyncio.get_running_loop().call_soon(self._on_failure, reason)

    async def _work(self) -> None:
        """The background writer: every job in order; after a failure the rest is still offered to the
        store (what it takes is kept), but nothing more is reported."""
        store, writer_of = self._store, lambda: self._recording
        while (job := await self._jobs.get()) is not None:
            kind, draft = job
            writer = writer_of()
            assert writer is not None  # jobs exist only once the writer does
            try:
                if kind == "begin":
                    await store.begin(self.id, writer.header_bytes, writer.header.meta())
                    self._begun = True
                    if self.failure is None:
                        self._on_started()
                elif kind == "segment":
                    assert draft is not None
                    self._backlog -= draft.size
                    if self._begun:  # built in order, each in a worker thread (compression, AES, HMAC)
                        data = await asyncio.to_thread(writer.build, draft)
                        await store.put_segment(self.id, draft.number, data)
                        self._stored += 1
                elif self._begun:  # finish
                    index, seal = writer.finish()
                    await store.finish(self.id, index, seal, writer.final_meta())
                    self._sealed = True
            except Exception as exc:  # a store error, or anything else: the recording cannot go on
                if self.failure is None:
                    what = "start" if kind == "begin" else "store a segment" if kind == "segment" else "seal"
                    self._fail(f"the recording store could not {what}: {exc}")
                else:
                    log.info("recording %s: %s after the failure also failed: %s", self.id, kind, exc)
