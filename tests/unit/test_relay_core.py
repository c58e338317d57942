"""RelayCore, the relay's decisions without sockets or a clock: each test is a playbook of events in
(with the time they happen) and the commands that must come out. The asyncio driver that carries the
commands out is tested on real sockets in tests/integration/test_relay.py."""

from __future__ import annotations

import struct

import pytest

from gateway.consoles.codes import REASON_EXPIRED, REASON_LOST
from gateway.consoles.relay_core import (
    CloseInfo,
    CloseSide,
    Notice,
    PassThrough,
    RelayCore,
    ToBrowser,
    ToUpstream,
    Wakeup,
)
from gateway.rfb import ClientMessageFilter, ServerMessageFilter

T0 = 1000.0  # the driver's clock when the relay starts; fractions below are exact in binary
GREETING = b"RFB 003.008\n" + b"\x01\x01" + b"\x00\x00\x00\x00"  # version, security [None], result OK
HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"  # version, None chosen, ClientInit (shared)
FBUR = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 10)
CUT = struct.pack(">B3xi", 6, 5) + b"typed"
IDLE_CLOSE = [
    CloseSide("browser", 4408, "Closed after 0.75 seconds without input"),
    CloseSide("upstream", 1000, ""),
]


def relay(
    *,
    view_only: bool = False,
    idle_timeout: float | None = None,
    idle_warning: float | None = None,
    max_duration: float | None = None,
) -> RelayCore:
    return RelayCore(
        ClientMessageFilter(view_only=view_only),
        idle_timeout=idle_timeout,
        idle_warning=idle_warning,
        max_duration=max_duration,
    )


def warning(seconds_left: int, within: float) -> Notice:
    return Notice({"type": "idle_warning", "seconds_left": seconds_left}, within)


def handshake(core: RelayCore, now: float = T0) -> None:
    """The server's greeting, then the client's reply: after it the server's bytes no longer matter."""
    assert core.upstream_bytes(GREETING) == (ToBrowser(GREETING),)
    assert core.follows_server
    assert core.browser_bytes(HANDSHAKE, now) == (PassThrough(), ToUpstream(HANDSHAKE))
    assert not core.follows_server


# --- bytes ---------------------------------------------------------------------------------------


def test_bytes_are_forwarded_counted_and_pass_through_starts_after_the_handshake() -> None:
    core = relay()
    assert core.start(T0) == []  # no timers: nothing to wake for
    handshake(core)
    assert core.upstream_bytes(b"x" * 100) == (ToBrowser(b"x" * 100),)
    assert core.browser_bytes(FBUR + KEY, T0 + 1) == (ToUpstream(FBUR + KEY),)
    assert core.browser_bytes(b"", T0 + 2) == (ToUpstream(b""),)  # the empty message goes too
    stats = core.stats
    assert (stats.bytes_to_browser, stats.msgs_to_browser) == (len(GREETING) + 100, 2)
    assert (stats.bytes_to_upstream, stats.msgs_to_upstream) == (len(HANDSHAKE + FBUR + KEY), 3)
    assert stats.last_input == T0 + 1  # the key; the empty message is not input


def test_view_only_drops_input_and_counts_it() -> None:
    core = relay(view_only=True)
    core.start(T0)
    handshake(core)
    assert core.browser_bytes(FBUR + KEY + POINTER + CUT + FBUR, T0 + 1) == (ToUpstream(FBUR + FBUR),)
    assert core.browser_bytes(KEY, T0 + 2) == ()
    assert core.stats.dropped == 4
    assert core.stats.last_input == T0


def test_a_client_protocol_error_closes_with_4400_and_forwards_nothing() -> None:
    core = relay(view_only=True)
    core.start(T0)
    core.upstream_bytes(GREETING)
    assert core.browser_bytes(HANDSHAKE + b"\x07" + bytes(20), T0) == [
        CloseSide("browser", 4400, "protocol error"),
        CloseSide("upstream", 1000, ""),
    ]
    assert core.ended == CloseInfo("gateway", 4400, "protocol error", 1000)
    assert core.browser_bytes(FBUR, T0) == () and core.upstream_bytes(b"x") == ()  # ended: nothing more


# --- timers --------------------------------------------------------------------------------------


def test_idle_warning_then_idle_close() -> None:
    core = relay(idle_timeout=0.75, idle_warning=0.5)
    assert core.start(T0) == [Wakeup(T0 + 0.25)]
    handshake(core, T0)
    assert core.browser_bytes(FBUR, T0 + 0.125) == (ToUpstream(FBUR),)  # not input: no new idle period
    assert core.tick(T0 + 0.125) == [Wakeup(T0 + 0.25)]  # an early tick changes nothing
    assert core.tick(T0 + 0.25) == [warning(1, 0.5), Wakeup(T0 + 0.75)]
    assert core.tick(T0 + 0.5) == [Wakeup(T0 + 0.75)]  # warned once per idle period
    core.browser_bytes(KEY, T0 + 0.5)  # input: a new idle period
    assert core.tick(T0 + 0.75) == [warning(1, 0.5), Wakeup(T0 + 1.25)]
    assert core.tick(T0 + 1.25) == IDLE_CLOSE
    assert core.ended == CloseInfo("gateway", 4408, "Closed after 0.75 seconds without input", 1000)
    assert core.tick(T0 + 2) == []


def test_input_dropped_in_view_only_does_not_reset_the_idle_timer() -> None:
    """Issue 10 item 12: a viewer's keys and pointer go nowhere, so they are not activity either."""
    core = relay(view_only=True, idle_timeout=0.75, idle_warning=0.5)
    core.start(T0)
    handshake(core)
    assert core.tick(T0 + 0.25) == [warning(1, 0.5), Wakeup(T0 + 0.75)]
    assert core.browser_bytes(KEY + POINTER + CUT, T0 + 0.5) == ()
    # No second warning, no new idle period: the close comes on the first period's schedule.
    assert core.tick(T0 + 0.75) == IDLE_CLOSE
    assert core.stats.dropped == 3 and core.stats.last_input == T0


def test_a_warning_longer_than_the_timeout_warns_at_once() -> None:
    core = relay(idle_timeout=0.75, idle_warning=5)
    assert core.start(T0) == [warning(1, 0.75), Wakeup(T0 + 0.75)]


def test_idle_reasons_speak_in_minutes() -> None:
    core = relay(idle_timeout=900)
    core.start(T0)
    assert core.tick(T0 + 900)[0] == CloseSide("browser", 4408, "Closed after 15 minutes without input")


def test_max_duration() -> None:
    core = relay(max_duration=0.25, idle_timeout=0.75)
    assert core.start(T0) == [Wakeup(T0 + 0.25)]
    core.browser_bytes(KEY, T0 + 0.125)  # input does not extend the maximum duration
    assert core.tick(T0 + 0.25) == [
        CloseSide("browser", 4409, "The console reached its maximum duration"),
        CloseSide("upstream", 1000, ""),
    ]


@pytest.mark.parametrize(
    "bad", [{"idle_timeout": 0}, {"max_duration": -1}, {"idle_timeout": 5, "idle_warning": 0}]
)
def test_timers_must_be_positive(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        relay(**bad)


# --- endings -------------------------------------------------------------------------------------


def test_terminate_closes_both_sides_and_the_first_word_counts() -> None:
    core = relay()
    core.start(T0)
    assert core.terminate(4001, "Terminated by an administrator") == [
        CloseSide("browser", 4001, "Terminated by an administrator"),
        CloseSide("upstream", 1000, ""),
    ]
    assert core.terminate(4002, "second call is ignored") == []
    assert core.ended == CloseInfo("gateway", 4001, "Terminated by an administrator", 1000)


def test_terminate_before_start_is_carried_out_when_it_starts() -> None:
    core = relay(idle_timeout=10)
    assert core.terminate(4003, "Your session ended") == []  # nothing runs yet
    assert core.start(T0) == [
        CloseSide("browser", 4003, "Your session ended"),
        CloseSide("upstream", 1000, ""),
    ]
    assert core.tick(T0 + 100) == []


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "tab closed"), (4001, "bye")])
def test_browser_close_code_reaches_the_upstream(code: int, reason: str) -> None:
    core = relay()
    core.start(T0)
    assert core.browser_closed(code, reason) == [
        CloseSide("browser", 1000, ""),
        CloseSide("upstream", code, reason),
    ]
    assert core.ended == CloseInfo("browser", code, reason, code)


def test_a_browser_that_vanishes_leaves_as_going_away() -> None:
    core = relay()
    core.start(T0)
    assert core.browser_vanished() == [CloseSide("browser", 1000, ""), CloseSide("upstream", 1001, "")]
    assert core.ended == CloseInfo("browser", 1006, "", 1001)


@pytest.mark.parametrize(
    ("up_code", "up_reason", "code", "reason"),
    [
        (1000, "", 1000, ""),
        (1011, "internal", 1011, "internal"),
        (4321, "why", 4321, "why"),
        (3000, "x" * 200, 3000, "x" * 123),
        (1012, "restarting", 4500, "The console proxy closed the connection (code 1012)"),
        (1005, "", 1000, ""),
    ],
)
def test_upstream_close_code_reaches_the_browser(
    up_code: int, up_reason: str, code: int, reason: str
) -> None:
    core = relay()
    core.start(T0)
    core.upstream_bytes(GREETING)
    assert core.upstream_closed(up_code, up_reason)[0] == CloseSide("browser", code, reason)
    assert core.ended == CloseInfo("upstream", code, reason, up_code)


def test_an_abrupt_upstream_end_before_the_first_byte_means_the_link_expired() -> None:
    core = relay()
    core.start(T0)
    assert core.upstream_closed(1006, "")[0] == CloseSide("browser", 4410, REASON_EXPIRED)
    later = relay()
    later.start(T0)
    later.upstream_bytes(GREETING)
    assert later.upstream_closed(1006, "")[0] == CloseSide("browser", 4502, REASON_LOST)


def test_a_broken_upstream_stream_is_a_lost_link() -> None:
    core = relay()
    core.start(T0)
    assert core.upstream_failed()[0] == CloseSide("browser", 4502, REASON_LOST)
    assert core.ended == CloseInfo("upstream", 4502, REASON_LOST, 1006)


# --- clipboard policy ------------------------------------------------------------------------------


def test_a_copy_restriction_keeps_the_server_stream_filtered_and_counts_denials() -> None:
    client = ClientMessageFilter(view_only=False, paste=False, copy_out=False)
    core = RelayCore(
        client,
        idle_timeout=None,
        idle_warning=None,
        max_duration=None,
        server_filter=ServerMessageFilter(client, copy_max=0),
    )
    core.start(T0)
    assert core.upstream_bytes(GREETING) == (ToBrowser(GREETING),)
    assert core.browser_bytes(HANDSHAKE, T0) == (ToUpstream(HANDSHAKE),)  # no PassThrough: frames are read
    assert core.follows_server
    server_init = struct.pack(">HH16sI", 8, 8, bytes([32, 24, 0, 1]) + bytes(12), 1) + b"x"
    copied = struct.pack(">B3xi", 3, 6) + b"secret"
    assert core.upstream_bytes(server_init + copied) == (ToBrowser(server_init),)
    assert core.upstream_bytes(copied) == ()
    assert core.browser_bytes(CUT + KEY, T0 + 1) == (ToUpstream(KEY),)
    stats = core.stats
    assert (stats.copy_denied, stats.copy_denied_bytes, stats.paste_denied, stats.paste_denied_bytes) == (
        2,
        12,
        1,
        5,
    )
    assert stats.bytes_to_browser == len(GREETING) + len(server_init)


# --- recording: keyframes at segment cuts ---------------------------------------------------------------


class Tap:
    """A recorder as the core sees it: whole server messages per segment (a partial one held until its
    end, like gateway/recording/recorder.py), a segment due after `seconds` once it holds a message."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.segments: list[list[bytes]] = []  # none until ServerInit ended (the first boundary)
        self.started = 0.0
        self.pending = b""
        self.inputs: list[tuple[float, int]] = []
        self.markers: list[tuple[float, str, dict[str, object]]] = []

    @property
    def at_boundary(self) -> bool:
        return bool(self.segments) and not self.pending

    def server(self, now: float, data: bytes, boundaries: list[int] | tuple[int, ...]) -> None:
        start = 0
        for end in boundaries:
            message, self.pending = self.pending + data[start:end], b""
            if not self.segments:  # the handshake and ServerInit: the header's, not a record
                self.segments.append([])
                self.started = now
            elif message:
                self.segments[-1].append(message)
            start = end
        self.pending += data[start:]

    def client(self, now: float, inputs: int) -> None:
        if inputs:
            self.inputs.append((now, inputs))

    def marker(self, now: float, kind: str, **fields: object) -> None:
        self.markers.append((now, kind, fields))

    def due(self, now: float) -> bool:
        return bool(self.segments and self.segments[-1]) and now - self.started >= self.seconds

    def due_at(self, now: float) -> float:
        deadline = self.started + self.seconds
        return deadline if self.segments and deadline > now else now + self.seconds

    def cut(self, now: float) -> None:
        assert self.at_boundary, "a segment cut inside a server message"
        self.segments.append([])
        self.started = now


SERVER_INIT = struct.pack(">HH16sI", 64, 48, bytes([32, 24, 0, 1]) + bytes(12), 3) + b"web"
BELL = b"\x02"
KEYFRAME = struct.pack(">BBHHHH", 3, 0, 0, 0, 64, 48)  # full, non-incremental, the whole framebuffer


def raw_update(w: int, h: int) -> bytes:
    return struct.pack(">BxHHHHHi", 0, 1, 0, 0, w, h, 0) + bytes(w * h * 4)


def recorded(tap: Tap, **timers: float) -> RelayCore:
    client = ClientMessageFilter(view_only=False, record=True)
    core = RelayCore(
        client,
        idle_timeout=timers.get("idle_timeout"),
        idle_warning=timers.get("idle_warning"),
        max_duration=None,
        server_filter=ServerMessageFilter(client, copy_max=None),
        recording=tap,
    )
    assert core.has_timers  # a recorded console's segments end on time even when nothing else ticks
    core.start(T0)
    core.upstream_bytes(GREETING, T0)
    assert core.browser_bytes(HANDSHAKE, T0) == (ToUpstream(HANDSHAKE),)  # frames stay read: no PassThrough
    assert core.upstream_bytes(SERVER_INIT, T0) == (ToBrowser(SERVER_INIT),)
    return core


def test_a_due_segment_asks_for_a_keyframe_and_the_next_starts_at_the_next_server_message() -> None:
    tap = Tap(seconds=2.0)
    core = recorded(tap)
    update = raw_update(4, 4)
    assert core.upstream_bytes(update, T0 + 1) == (ToBrowser(update),)  # not due yet
    half = len(update) // 2
    # Due (2 s old) in the middle of a message: the keyframe is asked for now, the cut waits for its end.
    assert core.upstream_bytes(update[:half], T0 + 2.5) == (ToBrowser(update[:half]), ToUpstream(KEYFRAME))
    assert len(tap.segments) == 1
    assert core.upstream_bytes(update[half:] + BELL, T0 + 2.6) == (ToBrowser(update[half:] + BELL),)
    assert tap.segments == [[update, update], [BELL]]  # every segment starts where a message starts
    assert tap.started == T0 + 2.6
    # Only one request per cut: the next comes when the new segment is due in turn.
    assert core.upstream_bytes(update, T0 + 3) == (ToBrowser(update),)
    assert core.upstream_bytes(BELL, T0 + 4.6) == (ToBrowser(BELL), ToUpstream(KEYFRAME))
    assert tap.segments == [[update, update], [BELL, update, BELL], []]  # at a boundary: cut at once
    stats = core.stats
    assert stats.bytes_to_upstream == len(HANDSHAKE) + 2 * len(KEYFRAME)


def test_a_quiet_console_gets_its_keyframe_from_the_clock_and_never_inside_a_client_message() -> None:
    tap = Tap(seconds=2.0)
    core = recorded(tap)
    assert core.tick(T0 + 1) == [Wakeup(T0 + 2)]
    assert core.upstream_bytes(BELL, T0 + 1) == (ToBrowser(BELL),)
    # Half a key event is held by the strict filter, so the upstream stands between two client messages.
    assert core.browser_bytes(KEY[:3], T0 + 1.5) == ()
    assert core.tick(T0 + 2) == [ToUpstream(KEYFRAME), Wakeup(T0 + 4)]
    assert tap.segments == [[BELL], []]
    assert core.browser_bytes(KEY[3:], T0 + 2.1) == (ToUpstream(KEY),)  # whole, after the keyframe request
    assert tap.inputs == [(T0 + 2.1, 1)]
    assert core.tick(T0 + 3) == [Wakeup(T0 + 4)]
    assert core.tick(T0 + 4) == [Wakeup(T0 + 6)]  # an empty segment is not cut: nothing to ask for


def test_before_the_handshake_ends_nothing_is_recorded_or_injected() -> None:
    tap = Tap(seconds=1.0)
    client = ClientMessageFilter(view_only=False, record=True)
    core = RelayCore(
        client,
        idle_timeout=None,
        idle_warning=None,
        max_duration=None,
        server_filter=ServerMessageFilter(client, copy_max=None),
        recording=tap,
    )
    assert core.start(T0) == [Wakeup(T0 + 1)]
    core.upstream_bytes(GREETING, T0)
    assert core.tick(T0 + 5) == [Wakeup(T0 + 6)]
    assert tap.segments == []
    with pytest.raises(ValueError, match="made to record"):
        RelayCore(
            ClientMessageFilter(view_only=False, copy_out=False),
            idle_timeout=None,
            idle_warning=None,
            max_duration=None,
            server_filter=ServerMessageFilter(client, copy_max=None),
            recording=tap,
        )


def test_what_the_page_is_told_is_part_of_the_record() -> None:
    """The driver reports each notice it sends (the core's idle warning, the watchers', moderation's)."""
    tap = Tap(seconds=60.0)
    core = recorded(tap, idle_timeout=1.0, idle_warning=0.25)
    core.noticed({"type": "watchers", "watchers": []}, T0 + 0.5)
    core.noticed({"type": "idle_warning", "seconds_left": 1}, T0 + 0.75)
    assert tap.markers == [
        (T0 + 0.5, "notice", {"notice": {"type": "watchers", "watchers": []}}),
        (T0 + 0.75, "notice", {"notice": {"type": "idle_warning", "seconds_left": 1}}),
    ]
    core.terminate(4000, "An administrator closed this console")
    core.noticed({"type": "late"}, T0 + 1)
    assert len(tap.markers) == 2  # nothing after the end
