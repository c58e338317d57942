"""The relay's decisions, sans-IO: events in, commands out.

The driver (`consoles/relay.py`) turns what the sockets and the clock do into events: bytes from the
browser, bytes from the upstream, a close (or a vanishing) on either side, a timer tick with the current
time, a terminate. `RelayCore` answers each with commands: forward these bytes, send this notice, close
this side with this code and reason, wake me at time T, frames may pass through from now on. It never
reads a clock and never touches a socket, so every rule (idle warning and cut, maximum duration, the
first-byte rule for expired links, what the browser is told about an upstream close, the RFB filter) is
tested with a fake clock and no sockets (tests/unit/test_relay_core.py). Keep-alive pings are below the
messages this machine sees (consoles/keepalive.py: one scheduler for every console's sockets).

Per message the machine does what the relay did inline before (one filter call and a few counters). The
per-message answers (forward these bytes) reuse one command object per direction, so the hot path
allocates nothing more than before: a command is valid until the next event of its kind, which is how the
driver uses it (it carries each command out before it reads the next message).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.consoles.codes import (
    CLOSE_GOING_AWAY,
    CLOSE_IDLE,
    CLOSE_LINK_EXPIRED,
    CLOSE_MAX_DURATION,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UPSTREAM_CODE,
    CLOSE_UPSTREAM_LOST,
    CODES,
    REASON_EXPIRED,
    REASON_LOST,
    REASON_MAX_DURATION,
    REASON_PROTOCOL,
)
from gateway.rfb import ClientMessageFilter, RFBProtocolError, ServerMessageFilter, full_update_request

__all__ = [
    "CloseInfo",
    "CloseSide",
    "Command",
    "Notice",
    "PassThrough",
    "RecordingTap",
    "RelayCore",
    "RelayStats",
    "ToBrowser",
    "ToUpstream",
    "Wakeup",
    "browser_close_for_upstream",
]

log = logging.getLogger("gateway.relay")

ABNORMAL: Final = 1006  # no close frame: the peer vanished
NO_STATUS: Final = 1005
# Codes a server may put in a close frame that still mean the same thing to the browser.
_SENDABLE_STANDARD: Final = frozenset({1000, 1001, 1003, 1007, 1008, 1009, 1010, 1011})
_MAX_REASON_BYTES: Final = 123
NOTICE_WITHIN: Final = 5.0  # seconds a state notice (moderation) may take to reach the page


# -- commands ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class ToUpstream:
    data: bytes


@dataclass(slots=True)
class ToBrowser:
    data: bytes


@dataclass(slots=True)
class Notice:
    """A gateway notice to the page (a JSON text frame); advisory: give up after `within` seconds."""

    payload: dict[str, object]
    within: float


@dataclass(slots=True)
class CloseSide:
    side: str  # "browser" | "upstream"
    code: int
    reason: str


@dataclass(slots=True)
class Wakeup:
    """Tick me (with the time) at `at`; the latest Wakeup replaces any earlier one."""

    at: float


@dataclass(slots=True)
class PassThrough:
    """The server's bytes no longer matter to the RFB filter: upstream frames may pass through as they are."""


Command = ToUpstream | ToBrowser | Notice | CloseSide | Wakeup | PassThrough
_PASS_THROUGH: Final = PassThrough()


# -- what a relay reports -----------------------------------------------------------------------------


@dataclass(slots=True)
class RelayStats:
    bytes_to_browser: int = 0
    bytes_to_upstream: int = 0
    msgs_to_browser: int = 0
    msgs_to_upstream: int = 0
    dropped: int = 0  # client messages the view-only filter (or the clipboard policy) dropped
    paste_denied: int = 0  # clipboard transfers the policy refused, browser -> console
    paste_denied_bytes: int = 0
    copy_denied: int = 0  # ... console -> browser
    copy_denied_bytes: int = 0
    started: float = 0.0  # the clock's time when the relay started
    last_input: float = 0.0  # the clock's time of the last forwarded key/pointer/clipboard message


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a relay ended. `code`/`reason` are what the browser sent (by="browser") or was sent."""

    by: str  # "browser" | "upstream" | "gateway"
    code: int
    reason: str
    upstream_code: int | None = None  # what the upstream sent, or was sent; 1006 if it vanished


def _sendable(code: int) -> bool:
    return code in _SENDABLE_STANDARD or 3000 <= code <= 4999


def clip_reason(reason: str) -> str:
    """Close reasons are limited to 123 bytes of UTF-8."""
    raw = reason.encode("utf-8")
    if len(raw) <= _MAX_REASON_BYTES:
        return reason
    return raw[:_MAX_REASON_BYTES].decode("utf-8", "ignore")


def browser_close_for_upstream(code: int, reason: str, *, upstream_spoke: bool) -> tuple[int, str]:
    """What the browser is told when the upstream ended with `code` (1006: no close frame).

    Nova checks the token only after the 101, so an abrupt end before the first upstream byte
    means the one-time link was spent or stale; later it means the console went away.
    """
    if code == ABNORMAL:
        return (CLOSE_UPSTREAM_LOST, REASON_LOST) if upstream_spoke else (CLOSE_LINK_EXPIRED, REASON_EXPIRED)
    if code in (0, NO_STATUS):
        return CLOSE_NORMAL, ""
    if _sendable(code):
        return code, clip_reason(reason)
    return CLOSE_UPSTREAM_CODE, f"{CODES[CLOSE_UPSTREAM_CODE].reason} (code {code})"


def idle_reason(seconds: float) -> str:
    if seconds >= 60:
        minutes = seconds / 60
        text = f"{minutes:.0f}" if minutes == int(minutes) else f"{minutes:.1f}"
        return f"Closed after {text} minute{'' if text == '1' else 's'} without input"
    return f"Closed after {seconds:g} seconds without input"


# -- a recorded console's recorder, as the machine sees it ---------------------------------------------


class RecordingTap(Protocol):
    """The recorder of a recorded console (gateway/recording/recorder.py): what was relayed goes in by
    appending; where segments are cut is the core's decision, since it needs the keyframe request."""

    @property
    def at_boundary(self) -> bool:
        """Nothing of a server message is held: a segment may end here."""
        ...

    def server(self, now: float, data: bytes, boundaries: Sequence[int]) -> None:
        """Server bytes as forwarded; `boundaries`: offsets in `data` where messages end."""
        ...

    def client(self, now: float, inputs: int) -> None:
        """A browser message went through the client filter with `inputs` input messages forwarded."""
        ...

    def marker(self, now: float, kind: str, **fields: Any) -> None: ...

    def due(self, now: float) -> bool:
        """The current segment is old or big enough to be cut."""
        ...

    def due_at(self, now: float) -> float:
        """When to look again whether a segment is due (after `now`)."""
        ...

    def cut(self, now: float) -> None:
        """End the segment here (only at a server-message boundary)."""
        ...


# -- the machine --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Timers:
    idle_timeout: float | None
    idle_warning: float | None
    max_duration: float | None
    warned_for: float | None = None  # the last_input an idle warning was sent for
    armed: bool = field(default=False)


class RelayCore:
    """One console's relay rules. Every event method returns the commands to carry out, in order; once a
    close is decided (`ended` set, two CloseSide commands returned) later events return nothing."""

    __slots__ = (
        "_cut_pending",
        "_filter",
        "_following",
        "_recording",
        "_server_filter",
        "_timers",
        "_to_browser",
        "_to_upstream",
        "ended",
        "stats",
    )

    def __init__(
        self,
        client_filter: ClientMessageFilter,
        *,
        idle_timeout: float | None,
        idle_warning: float | None,
        max_duration: float | None,
        server_filter: ServerMessageFilter | None = None,
        recording: RecordingTap | None = None,
    ) -> None:
        """`server_filter`: the clipboard policy restricts copying out, or the console is recorded, so
        every server byte is read (and frames never pass through unread); without it only the handshake
        is. `recording` (needs `server_filter` and a client filter made with `record=True`): what is
        relayed is recorded, cut into segments that each start at a keyframe: when one is due, a full
        FramebufferUpdateRequest goes upstream between two client messages and the next segment starts
        at the next server-message boundary, so a player can start decoding there."""
        if recording is not None and (server_filter is None or not client_filter.recorded):
            raise ValueError("a recorded console needs a server filter and a client filter made to record")
        for name, value in (("idle_timeout", idle_timeout), ("max_duration", max_duration)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if idle_warning is not None and idle_warning <= 0:
            raise ValueError("idle_warning must be positive")
        if idle_timeout is None:
            idle_warning = None  # nothing to warn about
        elif idle_warning is not None:
            idle_warning = min(idle_warning, idle_timeout)  # longer than the timeout: warn at once
        self._filter = client_filter
        self._server_filter = server_filter
        self._recording = recording
        self._cut_pending = False  # a keyframe was asked for: cut at the next server-message boundary
        self._following = client_filter.follows_server
        self._timers = _Timers(idle_timeout, idle_warning, max_duration)
        self.stats = RelayStats()
        # Reused for every message (see the module docstring): (the command, the one-command answer).
        up = ToUpstream(b"")
        self._to_upstream = (up, (up,))
        down = ToBrowser(b"")
        self._to_browser = (down, (down,))
        self.ended: CloseInfo | None = None

    @property
    def has_timers(self) -> bool:
        timers = self._timers
        return (
            timers.idle_timeout is not None or timers.max_duration is not None or self._recording is not None
        )

    @property
    def follows_server(self) -> bool:
        """The server's bytes still matter (the RFB handshake, or a copy-out filter): feed them as
        `upstream_bytes`."""
        return self._following or self._server_filter is not None

    # -- events ------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """The relay runs from `now`: the clocks start (or a terminate that came first is carried out)."""
        stats = self.stats
        stats.started = stats.last_input = now
        if self.ended is not None:
            return self._closes(self.ended)
        self._timers.armed = True
        return self.tick(now) if self.has_timers else []

    def browser_bytes(self, data: bytes, now: float) -> tuple[Command, ...] | list[Command]:
        """A binary message from the browser: filtered (view-only drops input), counted, forwarded."""
        if self.ended is not None:
            return ()
        filt = self._filter
        try:
            result = filt.feed(data)
        except RFBProtocolError as exc:
            log.warning("closing a console session on a client protocol error: %s", exc)
            return self._end(CloseInfo("gateway", CLOSE_PROTOCOL_ERROR, REASON_PROTOCOL, CLOSE_NORMAL))
        stats = self.stats
        if result.input_events:
            stats.last_input = now
        if self._recording is not None:
            self._recording.client(now, result.input_events)
        if result.dropped:
            stats.dropped += result.dropped
            stats.paste_denied, stats.paste_denied_bytes = filt.paste_denied, filt.paste_denied_bytes
        opaque = self._following and not filt.follows_server  # the client's reply ended the handshake
        if opaque:
            self._following = False
            opaque = self._server_filter is None
        forward = result.forward
        if forward or not data:
            stats.bytes_to_upstream += len(forward)
            stats.msgs_to_upstream += 1
            command, answer = self._to_upstream
            command.data = forward
            return (_PASS_THROUGH, command) if opaque else answer
        return (_PASS_THROUGH,) if opaque else ()

    def upstream_bytes(self, data: bytes, now: float = 0.0) -> tuple[Command, ...]:
        """A binary message from the console proxy: followed while the handshake needs it, forwarded
        (`now` matters to recorded consoles only)."""
        if self.ended is not None:
            return ()
        stats = self.stats
        command, answer = self._to_browser
        server_filter = self._server_filter
        if server_filter is not None:
            return self._filtered_upstream(server_filter, data, now)
        stats.bytes_to_browser += len(data)
        stats.msgs_to_browser += 1
        command.data = data
        if self._following:
            filt = self._filter
            filt.feed_server(data)  # before the browser sees it: it decides what the client may send next
            if not filt.follows_server:
                self._following = False
                return (command, _PASS_THROUGH)
        return answer

    def _filtered_upstream(
        self, server_filter: ServerMessageFilter, data: bytes, now: float
    ) -> tuple[Command, ...]:
        """Copying out is restricted, or the console is recorded: every server byte goes through the
        filter (never passes through)."""
        if self._following:
            self._filter.feed_server(data)
            self._following = self._filter.follows_server
        try:
            forward = server_filter.feed(data)
        except RFBProtocolError as exc:
            log.warning("closing a console session: the gateway cannot frame the server's stream: %s", exc)
            return tuple(self._end(CloseInfo("gateway", CLOSE_PROTOCOL_ERROR, REASON_PROTOCOL, CLOSE_NORMAL)))
        stats = self.stats
        stats.copy_denied = server_filter.copy_denied
        stats.copy_denied_bytes = server_filter.copy_denied_bytes
        keyframe = None
        if self._recording is not None:
            self._record_server(self._recording, server_filter, forward, now)
            keyframe = self._keyframe(self._recording, now)
        if not forward:
            return (keyframe,) if keyframe is not None else ()
        stats.bytes_to_browser += len(forward)
        stats.msgs_to_browser += 1
        command, answer = self._to_browser
        command.data = forward
        return answer if keyframe is None else (command, keyframe)

    def _record_server(self, tap: RecordingTap, frame: ServerMessageFilter, data: bytes, now: float) -> None:
        """What the browser gets is what is recorded; a cut that waits for a boundary happens at the
        first one."""
        bounds = frame.boundaries
        if not (self._cut_pending and bounds):
            tap.server(now, data, bounds)
            return
        first = bounds[0]
        if first:
            tap.server(now, data[:first], (first,))
        tap.cut(now)
        self._cut_pending = False
        tap.server(now, data[first:], [b - first for b in bounds[1:]])

    def _keyframe(self, tap: RecordingTap, now: float) -> ToUpstream | None:
        """A segment is due: ask the server for the whole screen, between two client messages (the
        strict client filter forwards whole messages only), and cut here if the server's stream is at a
        message boundary, else at the next one. Either way the full update lands in the new segment."""
        if self._cut_pending or not self._filter.in_messages or not tap.due(now):
            return None
        frame = self._server_filter
        assert frame is not None  # a recording needs one (__init__)
        if tap.at_boundary:
            tap.cut(now)
        else:
            self._cut_pending = True
        request = full_update_request(frame.width, frame.height)
        self.stats.bytes_to_upstream += len(request)
        self.stats.msgs_to_upstream += 1
        return ToUpstream(request)

    def browser_closed(self, code: int | None, reason: str) -> list[Command]:
        """The browser's close frame (`code` None: it carried no status)."""
        code = code if isinstance(code, int) else 0
        up = code if code in (CLOSE_NORMAL, CLOSE_GOING_AWAY) or 3000 <= code <= 4999 else CLOSE_NORMAL
        return self._end(CloseInfo("browser", code or NO_STATUS, reason, up))

    def browser_vanished(self) -> list[Command]:
        """The browser's connection dropped without a close frame, or a write to it failed."""
        return self._end(CloseInfo("browser", ABNORMAL, "", CLOSE_GOING_AWAY))

    def upstream_closed(self, code: int, reason: str) -> list[Command]:
        """The console proxy's close frame; `code` 1006 when it vanished without one."""
        spoke = self.stats.bytes_to_browser > 0
        browser_code, browser_reason = browser_close_for_upstream(code, reason, upstream_spoke=spoke)
        return self._end(CloseInfo("upstream", browser_code, browser_reason, code))

    def upstream_failed(self) -> list[Command]:
        """A broken frame or an over-long message from the console proxy: the link is bad, not the token."""
        return self._end(CloseInfo("upstream", CLOSE_UPSTREAM_LOST, REASON_LOST, ABNORMAL))

    def terminate(self, code: int, reason: str, *, upstream_code: int = CLOSE_NORMAL) -> list[Command]:
        """The gateway ends the console (admin, sign-out, lock, drain, shutdown); the first word counts."""
        return self._end(CloseInfo("gateway", code, clip_reason(reason), upstream_code))

    def hold_input(self, held: bool, notice: dict[str, object] | None = None) -> list[Command]:
        """A moderation rule holds (or releases) the browser's input from its next message on: dropped
        as view-only drops it, never queued. Holding first releases, upstream, the keys and buttons the
        server saw pressed; `notice` tells the page why."""
        if self.ended is not None:
            return []
        out: list[Command] = []
        releases = self._filter.hold(held)
        if releases:
            self.stats.bytes_to_upstream += len(releases)
            self.stats.msgs_to_upstream += 1
            out.append(ToUpstream(releases))
        if notice is not None:
            out.append(Notice(notice, NOTICE_WITHIN))
        return out

    def noticed(self, payload: dict[str, object], now: float) -> None:
        """The page was sent a gateway notice (the core's own, or the watchers' and moderation's from
        outside): a recorded console keeps it as a marker."""
        if self._recording is not None and self.ended is None:
            self._recording.marker(now, "notice", notice=payload)

    def tick(self, now: float) -> list[Command]:
        """The time is `now`: cut at the maximum duration or the idle timeout, warn before the idle cut,
        and say when to tick next."""
        if self.ended is not None or not self._timers.armed:
            return []
        timers = self._timers
        stats = self.stats
        out: list[Command] = []
        wake = math.inf
        if timers.max_duration is not None:
            max_end = stats.started + timers.max_duration
            if now >= max_end:
                return self._end(CloseInfo("gateway", CLOSE_MAX_DURATION, REASON_MAX_DURATION, CLOSE_NORMAL))
            wake = max_end
        idle_timeout = timers.idle_timeout
        if idle_timeout is not None:
            last = stats.last_input
            deadline = last + idle_timeout
            if now >= deadline:
                return self._end(CloseInfo("gateway", CLOSE_IDLE, idle_reason(idle_timeout), CLOSE_NORMAL))
            wake = min(wake, deadline)
            if timers.idle_warning is not None:
                warn_at = deadline - timers.idle_warning
                if now < warn_at:
                    wake = min(wake, warn_at)
                elif timers.warned_for != last:
                    timers.warned_for = last
                    left = deadline - now
                    out.append(Notice({"type": "idle_warning", "seconds_left": math.ceil(left)}, left))
        tap = self._recording
        if tap is not None:
            keyframe = self._keyframe(tap, now)  # a quiet console's segment still ends on time
            if keyframe is not None:
                out.append(keyframe)
            wake = min(wake, tap.due_at(now))
        if wake != math.inf:
            out.append(Wakeup(wake))
        return out

    # -- the ending --------------------------------------------------------------------------------

    def _end(self, info: CloseInfo) -> list[Command]:
        if self.ended is not None:
            return []
        self.ended = info
        return self._closes(info) if self._timers.armed else []

    @staticmethod
    def _closes(info: CloseInfo) -> list[Command]:
        """Both sides' closes: the browser hears the code and reason (or, when it closed, only an answer);
        the upstream hears the browser's code, or 1000 (1006 → its own vanishing: nothing to add)."""
        if info.by == "browser":
            browser = CloseSide("browser", CLOSE_NORMAL, "")  # only answers the browser's own close
        else:
            browser = CloseSide("browser", info.code, info.reason)
        upstream_code = info.upstream_code if info.upstream_code is not None else CLOSE_NORMAL
        upstream = CloseSide("upstream", upstream_code, info.reason if info.by == "browser" else "")
        return [browser, upstream]
