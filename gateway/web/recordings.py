"""Recordings API (docs/recording.md, "Player" and "Who may watch"): reviewers list and search the
recordings they may watch, read one's description (timeline, typed text when allowed, integrity), its
segments decoded for the player, and the recording as stored.

Keys never leave the gateway: segments are verified and decrypted here and reach the browser as plain
server messages (never the recorded input). A recording the caller may not watch is answered exactly like
one that does not exist. Every search, playback and download is audited.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from gateway.auth.cookie import SessionData
from gateway.clouds.base import Server
from gateway.policy import Review
from gateway.recording.format import (
    MARKER,
    SERVER,
    Keyring,
    Problem,
    RecordingError,
    RecordingReader,
    Segment,
    pack,
    rebuild,
    verify,
)
from gateway.recording.index import Index
from gateway.recording.store import RecordingInfo, RecordingStore, StoreError, check_id
from gateway.services import Gateway
from gateway.web.api import audit_base
from gateway.web.http import json_error, json_refusal
from gateway.web.keys import GATEWAY
from gateway.web.session_cookie import current

__all__ = ["FEED_SCREEN", "feed", "recorded_server", "setup"]

log = logging.getLogger("gateway.recordings")
routes = web.RouteTableDef()

NOT_FOUND: Final = "No such recording"
# The player's segment feed: [kind u8][t u32 ms][length u32][payload], big-endian. FEED_SCREEN first (the
# framebuffer at the segment's start: width u16, height u16, pixel format 16 bytes, name UTF-8), then
# server messages (format.SERVER) and markers (format.MARKER, JSON) in recorded order. Never input.
FEED_SCREEN: Final = 0
_FEED: Final = struct.Struct(">BII")
# A playback is audited on its first request, and again when the same user comes back to the same
# recording after this long (per replica): a player fetches many segments, the trail wants one line.
PLAYED_AGAIN_AFTER: Final = 900.0
SEARCH_LIMIT: Final = 200
_VERDICTS_KEPT: Final = 32
# Problem kinds that say someone changed the recording (rather than that it ends early).
_TRUNCATION: Final = frozenset({"truncated"})


def feed(segment: Segment) -> bytes:
    """One segment as the player reads it (see `_FEED`)."""
    screen = segment.screen.to_bytes()
    parts = [_FEED.pack(FEED_SCREEN, segment.start, len(screen)), screen]
    for record in segment.records:
        if record.kind in (SERVER, MARKER):
            parts += (_FEED.pack(record.kind, record.t, len(record.data)), record.data)
    return b"".join(parts)


def recorded_server(meta: Any) -> Server:
    """The server as it was when the recording started (review rules match this, not today's server:
    it may have been renamed or deleted since)."""

    def text(key: str) -> str:
        value = meta.get(key)
        return value if isinstance(value, str) else ""

    tags = meta.get("tags")
    return Server(
        cloud=text("cloud"),
        id=text("server_id"),
        name=text("server_name"),
        status="",
        project_id=text("project_id"),
        region=text("region"),
        availability_zone="",
        locked=False,
        tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A recording's integrity as the player shows it, with the index it could read."""

    status: str  # verified | live | truncated | tampered
    message: str
    segment: int | None
    index: Index | None


@dataclass(slots=True)
class _State:
    """Per application: the integrity verdicts of live recordings (recomputed when a segment is added) and
    when each user last had a recording's playback audited."""

    verdicts: OrderedDict[tuple[Any, ...], Verdict] = field(default_factory=OrderedDict)
    played: dict[tuple[str, str], float] = field(default_factory=dict)


_STATE = web.AppKey("recordings", _State)


def setup(app: web.Application) -> None:
    app[_STATE] = _State()
    app.add_routes(routes)


@dataclass(frozen=True, slots=True)
class _Access:
    session: SessionData
    info: RecordingInfo
    review: Review
    store: RecordingStore
    keys: Keyring


def _parts(gw: Gateway) -> tuple[RecordingStore, Keyring] | None:
    store, keys = gw.recordings, gw.recording_keys
    return None if store is None or keys is None else (store, keys)


def _not_found() -> web.HTTPClientError:
    return json_refusal(web.HTTPNotFound, NOT_FOUND, code="not_found")


async def _open(request: web.Request) -> _Access:
    """The recording named in the path, if the caller may watch it; otherwise not found, whatever the
    reason (no store, a malformed id, no such recording, no reviewer entry)."""
    gw = request.app[GATEWAY]
    session = current(request)
    parts = _parts(gw)
    try:
        rid = check_id(request.match_info["recording_id"])
    except ValueError:
        raise _not_found() from None
    if parts is None:
        raise _not_found()
    info = await parts[0].info(rid)
    if info is None:
        raise _not_found()
    review = gw.policy.review(session.user, session.groups, recorded_server(info.meta))
    if not review.allowed:
        log.info("recording %s not shown to %s (%s)", rid, session.user, review.reason)
        raise _not_found()
    return _Access(session, info, review, *parts)


async def _live_ids(gw: Gateway) -> set[str]:
    return {record.id for record in await gw.registry.all()}


async def _verdict(request: web.Request, access: _Access, live: bool) -> Verdict:
    """Verify the whole recording: the seal, the chain, every segment. Each time for a finished one (an
    edit never changes a listing's size); a live one, which a player re-reads every few seconds, only
    when a segment was added."""
    info, store = access.info, access.store
    key = (id(store), info.id, info.segments, info.size)
    state = request.app[_STATE]
    cached = state.verdicts.get(key) if live and not info.finished else None
    if cached is not None:
        state.verdicts.move_to_end(key)
        return cached
    header = await store.read_header(info.id)
    segments = [await store.read_segment(info.id, n) for n in range(info.segments)]
    index_bytes = await store.read_index(info.id) if info.finished else None
    seal = await store.read_seal(info.id) if info.finished else None
    verdict = await asyncio.to_thread(_judge, access.keys, header, segments, index_bytes, seal, live)
    if live and not info.finished:
        state.verdicts[key] = verdict
        while len(state.verdicts) > _VERDICTS_KEPT:
            state.verdicts.popitem(last=False)
    return verdict


async def _typed_index(request: web.Request, access: _Access, live: bool) -> Index | None:
    """The index a typed-text search reads: a finished recording's sealed index (authenticated by the
    seal, without reading the segments), else the one rebuilt for a live or cut-short one."""
    info, store = access.info, access.store
    if not info.finished:
        return (await _verdict(request, access, live)).index
    header = await store.read_header(info.id)
    index_bytes = await store.read_index(info.id)
    seal = await store.read_seal(info.id)
    if header is None or index_bytes is None or seal is None:
        return None
    try:
        return await asyncio.to_thread(_sealed_index, access.keys, header, index_bytes, seal)
    except RecordingError:
        return None  # it does not verify: nothing in it is searchable; the player says why


def _sealed_index(keys: Keyring, header: bytes, index_bytes: bytes, seal: bytes) -> Index:
    reader = RecordingReader(keys, header)
    return reader.index(index_bytes, reader.seal(seal))


def _judge(
    keys: Keyring,
    header: bytes | None,
    segments: list[bytes | None],
    index_bytes: bytes | None,
    seal: bytes | None,
    live: bool,
) -> Verdict:
    if header is None:
        return Verdict("tampered", "Tampered: the recording's header is missing", None, None)
    if seal is None:  # live or cut short: no index yet, so the timeline is rebuilt from the segments
        try:
            index, problems = rebuild(keys, header, segments)
        except RecordingError as exc:
            return Verdict("tampered", f"Tampered: {exc.problem.message}", None, None)
        sealed = False
    else:
        result = verify(keys, header, segments, index_bytes, seal)
        index, problems, sealed = result.index, result.problems, True
        if index is None and result.header is not None:  # a bad seal or index: still a timeline
            index = rebuild(keys, header, segments)[0]
    changed = [p for p in problems if p.kind not in _TRUNCATION]
    if changed:
        first: Problem = changed[0]
        return Verdict("tampered", f"Tampered: {first.message}", first.segment, index)
    if problems:
        return Verdict("truncated", f"Truncated: {problems[0].message}", None, index)
    if not sealed and live:
        return Verdict("live", "Recording in progress: it plays up to now and keeps following", None, index)
    if not sealed:
        return Verdict("truncated", "Truncated: the recording has no seal (it was cut short)", None, index)
    return Verdict("verified", f"Verified: {len(segments)} segments, sealed", None, index)


def _audit_played(request: web.Request, access: _Access) -> None:
    state = request.app[_STATE]
    now = time.monotonic()
    key = (access.session.user, access.info.id)
    if now - state.played.get(key, -PLAYED_AGAIN_AFTER) < PLAYED_AGAIN_AFTER:
        return
    state.played = {k: t for k, t in state.played.items() if now - t < PLAYED_AGAIN_AFTER}
    state.played[key] = now
    request.app[GATEWAY].audit.emit(
        "recording_played", **_about(request, access), typed_text=access.review.typed_text
    )


def _about(request: web.Request, access: _Access) -> dict[str, Any]:
    meta = access.info.meta
    about: dict[str, Any] = {
        **audit_base(request, access.session),
        "recording": access.info.id,
        "target_user": str(meta.get("user", "")),
        "cloud": str(meta.get("cloud", "")),
        "server_id": str(meta.get("server_id", "")),
        "reviewers": list(access.review.reviewers),
    }
    if isinstance(meta.get("server_name"), str):
        about["server_name"] = meta["server_name"]
    return about


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _summary(info: RecordingInfo, live: bool, duration: float | None = None) -> dict[str, Any]:
    """`duration` (ms): from the index when the caller read it; otherwise what the listing says."""
    meta = info.meta
    if duration is None:
        duration = _number(meta.get("duration_ms"))
    return {
        "id": info.id,
        "user": meta.get("user"),
        "groups": meta.get("groups"),
        "cloud": meta.get("cloud"),
        "server_id": meta.get("server_id"),
        "server_name": meta.get("server_name"),
        "permission": meta.get("permission"),
        "started": info.start,
        "duration": duration,  # ms; None when not known without reading the recording
        "ended": _number(meta.get("end")),
        "size": info.size,
        "segments": info.segments,
        "sealed": info.finished,
        "live": live,
        "input_recorded": meta.get("record_input") is True,
    }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _store_down(handler: Handler) -> Handler:
    """A store that cannot be read answers 503 saying so (StoreError names the store, never a secret)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreError as exc:
            log.warning("%s %s: recording store: %s", request.method, request.path, exc)
            return json_error(503, f"The recording store cannot be read: {exc}", code="store")

    return wrapped


FILTERS: Final = ("id", "user", "server", "since", "until", "text")


@routes.get("/api/recordings")
@_store_down
async def listing(request: web.Request) -> web.Response:
    """Recordings the caller may watch, filtered as in `search` except by typed text, which never goes in
    an address (addresses end up in proxy logs and browser history; the text may be a password)."""
    if request.query.get("text"):
        return json_error(400, "Search typed text with POST /api/recordings/search", code="bad_request")
    return await _search(request, {name: request.query.get(name, "") for name in FILTERS})


@routes.post("/api/recordings/search")
@_store_down
async def search(request: web.Request) -> web.Response:
    """The same search with the filters as a JSON object, typed text included."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return json_error(400, "Send a JSON object of filters", code="bad_request")
    return await _search(request, {name: str(body.get(name) or "") for name in FILTERS})


async def _search(request: web.Request, filters: dict[str, str]) -> web.Response:
    """Recordings the caller may watch, newest first, filtered by recording (console) id, user, server
    (name or id, a part of it), start time range (Unix seconds) and typed text (only where the caller
    may read it)."""
    gw = request.app[GATEWAY]
    session = current(request)
    wanted = filters["id"].strip()  # a console id, e.g. from a console_closed line's `recording`
    user = filters["user"].strip().casefold()
    server = filters["server"].strip().casefold()
    text = filters["text"].strip()
    try:
        since = float(filters["since"]) if filters["since"].strip() else None
        until = float(filters["until"]) if filters["until"].strip() else None
    except ValueError:
        return json_error(400, "since and until are Unix times in seconds", code="bad_request")
    parts = _parts(gw)
    infos = await parts[0].list() if parts is not None else []
    live = await _live_ids(gw)
    found: list[dict[str, Any]] = []
    for info in sorted(infos, key=lambda i: i.start or 0.0, reverse=True):
        meta = info.meta
        review = gw.policy.review(session.user, session.groups, recorded_server(meta))
        if not review.allowed:
            continue
        if (wanted and info.id != wanted) or (user and user not in str(meta.get("user", "")).casefold()):
            continue
        names = (str(meta.get("server_name", "")).casefold(), str(meta.get("server_id", "")).casefold())
        if server and not any(server in name for name in names):
            continue
        start = info.start
        if (since is not None and (start is None or start < since)) or (
            until is not None and (start is None or start > until)
        ):
            continue
        hits: list[int] | None = None
        if text:
            if not review.typed_text or parts is None:
                continue
            access = _Access(session, info, review, *parts)
            index = await _typed_index(request, access, info.id in live)
            hits = index.find(text) if index is not None else []
            if not hits:
                continue
        item = _summary(info, info.id in live)
        if hits is not None:
            item["hits"] = hits
        found.append(item)
        if len(found) >= SEARCH_LIMIT:
            break
    given = [name for name in FILTERS if filters[name].strip()]
    # The typed text searched for is not written down: it may be the very password someone looks for.
    gw.audit.emit("recording_searched", **audit_base(request, session), filters=given, results=len(found))
    return web.json_response({"recordings": found, "limit": SEARCH_LIMIT})


@routes.get("/api/recordings/{recording_id}")
@_store_down
async def describe(request: web.Request) -> web.Response:
    """What the player needs before the first frame: who, what, the segments' times, the activity per
    second, the markers, the typed text (only with typed_text), the integrity verdict."""
    access = await _open(request)
    live = access.info.id in await _live_ids(request.app[GATEWAY])
    verdict = await _verdict(request, access, live)
    _audit_played(request, access)
    index = verdict.index or Index()
    typed = None
    if index.typed is None:
        typed_state = "none"
    elif access.review.typed_text:
        typed_state = "shown"
        typed = [{"t": run.t, "text": run.text, "times": run.times} for run in index.typed]
    else:
        typed_state = "hidden"
    downloadable = access.review.typed_text or access.info.meta.get("record_input") is not True
    rid = access.info.id
    return web.json_response(
        {
            "recording": _summary(access.info, live, index.duration),
            "segments": [
                {"number": s.number, "start": s.start, "end": s.end, "width": s.width, "height": s.height}
                for s in index.segments
            ],
            "activity": index.bytes_out,
            "inputs": index.inputs,
            "markers": [{**marker, "t": t} for t, marker in index.markers],
            "typed": typed,
            "typed_text": typed_state,
            "integrity": {"status": verdict.status, "message": verdict.message, "segment": verdict.segment},
            "download": f"/api/recordings/{rid}/download" if downloadable else None,
        }
    )


@routes.get(r"/api/recordings/{recording_id}/segments/{number:\d{1,9}}")
@_store_down
async def segment(request: web.Request) -> web.Response:
    """One segment, verified and decrypted here, as the player's feed. A segment that does not verify is
    refused with 409 and says which and why (the player shows it as tampered)."""
    access = await _open(request)
    number = int(request.match_info["number"])
    rid, store = access.info.id, access.store
    header = await store.read_header(rid)
    data = await store.read_segment(rid, number)
    if header is None or data is None:
        raise _not_found()
    index_bytes = await store.read_index(rid) if access.info.finished else None
    seal = await store.read_seal(rid) if access.info.finished else None
    try:
        body = await asyncio.to_thread(_decode, access.keys, header, number, data, index_bytes, seal)
    except RecordingError as exc:
        problem = exc.problem
        return json_error(
            409, f"Tampered: {problem.message}", code="tampered", segment=number, kind=problem.kind
        )
    _audit_played(request, access)
    return web.Response(body=body, content_type="application/octet-stream")


def _decode(
    keys: Keyring, header: bytes, number: int, data: bytes, index_bytes: bytes | None, seal: bytes | None
) -> bytes:
    reader = RecordingReader(keys, header)
    if index_bytes is not None and seal is not None:
        reader.index(index_bytes, reader.seal(seal))  # a sealed recording: the segment must be the sealed one
    return feed(reader.segment(number, data))


@routes.get("/api/recordings/{recording_id}/download")
@_store_down
async def download(request: web.Request) -> web.StreamResponse:
    """The recording as stored, in one file (header, segments, index, seal: format.pack), to keep as
    evidence or verify elsewhere. It holds the recorded input when there is any, so it needs typed_text
    then, like the typed-text index."""
    access = await _open(request)
    if not access.review.typed_text and access.info.meta.get("record_input") is True:
        raise _not_found()
    rid, store = access.info.id, access.store
    header = await store.read_header(rid)
    if header is None:
        raise _not_found()
    index_bytes = await store.read_index(rid)
    seal = await store.read_seal(rid)
    # Streamed a segment at a time: pack() takes each segment from `slot` as it gets to it, and the
    # loop below fills the slot, from the store, just before pack could ask for the next one.
    slot = _Slot()
    pieces = pack(header, slot, index_bytes, seal)
    numbers = iter(range(access.info.segments))
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{rid}.nvgr"',
        }
    )
    await response.prepare(request)
    sent = 0
    try:
        while True:
            while slot.item is None and not slot.done:  # the next stored segment (absent ones skipped)
                number = next(numbers, None)
                if number is None:
                    slot.done = True
                else:
                    slot.item = await store.read_segment(rid, number)
            piece = next(pieces, None)
            if piece is None:
                break
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
    except StoreError as exc:  # the headers are out: the file ends short (unpack says it is incomplete)
        log.warning("download of recording %s cut short: %s", rid, exc)
    finally:
        request.app[GATEWAY].audit.emit("recording_downloaded", **_about(request, access), size=sent)
    return response


class _Slot:
    """One segment at a time for pack(): an iterator the download loop fills before pack reads it."""

    def __init__(self) -> None:
        self.item: bytes | None = None
        self.done = False  # no segment is left

    def __iter__(self) -> _Slot:
        return self

    def __next__(self) -> bytes:
        item, self.item = self.item, None
        if item is not None:
            return item
        if self.done:
            raise StopIteration
        raise RuntimeError("pack() read ahead of the download loop")
