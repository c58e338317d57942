"""Moderated consoles without sockets: the moderation machine (watchers and a fake clock in, transitions
out), the RFB filter's input hold, and the relay core's hold event. The real thing (Xvnc, Chromium, two
replicas) is in tests/browser/test_moderation_browser.py and tests/integration/test_moderation.py."""

from __future__ import annotations

import struct

import pytest
from pydantic import ValidationError

from gateway.consoles.moderation import ModerationMachine, Transition, Watching
from gateway.consoles.relay_core import Notice, RelayCore, ToUpstream
from gateway.policy import Moderation, Policy, PolicyConfig, RuleConfig
from gateway.rfb import ClientMessageFilter

T0 = 1000.0
LEADS = Moderation(("leads",), count=1, on_leave="pause", grace=0.0)
SERVER_38_NONE = b"RFB 003.008\n" + b"\x01\x01" + bytes(4)
HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x00"  # ClientInit asks for exclusive access
FBUR = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480)


def key(down: int, keysym: int = 0x61) -> bytes:
    return struct.pack(">BBxxI", 4, down, keysym)


def pointer(mask: int, x: int = 10, y: int = 20) -> bytes:
    return struct.pack(">BBHH", 5, mask, x, y)


def qemu_key(down: int, keysym: int = 0x61, keycode: int = 30) -> bytes:
    return struct.pack(">BBHII", 255, 0, down, keysym, keycode)


def cut(text: bytes) -> bytes:
    return struct.pack(">B3xi", 6, len(text)) + text


def watcher(user: str, status: str = "joined", groups: tuple[str, ...] = ("leads",)) -> Watching:
    return Watching(user=user, name=user.title(), groups=groups, status=status)


# --- the machine -----------------------------------------------------------------------------------


def test_input_waits_for_a_joined_moderator_of_the_rules_groups() -> None:
    machine = ModerationMachine(LEADS, "olga")
    start = machine.start()
    assert (start.state, start.held) == ("waiting", True)
    assert start.reason == "Input held: waiting for 1 moderator (leads) to join"
    # None of these is a moderator: pending, refused, left, another group, the owner herself.
    not_yet = [
        watcher("pam", "pending"),
        watcher("rex", "refused"),
        watcher("lou", "left"),
        watcher("ann", groups=("ops",)),
        watcher("olga"),
    ]
    assert machine.watchers(not_yet, T0) is None
    assert machine.held
    moderated = machine.watchers([*not_yet, watcher("mia", groups=("ops", "leads"))], T0 + 1)
    assert moderated == Transition("moderated", ("Mia",), 1, "Moderated by Mia")
    assert not moderated.held and not machine.held
    # Re-reading the same list (a reconcile) changes nothing.
    assert machine.watchers([*not_yet, watcher("mia", groups=("ops", "leads"))], T0 + 2) is None


def test_pause_when_a_moderator_leaves_and_release_when_one_is_back() -> None:
    machine = ModerationMachine(LEADS, "olga")
    machine.start()
    machine.watchers([watcher("mia"), watcher("max")], T0)
    # One of two leaves: still moderated, the page learns who remains.
    still = machine.watchers([watcher("max")], T0 + 1)
    assert still is not None and (still.state, still.moderators) == ("moderated", ("Max",))
    paused = machine.watchers([watcher("max", "left")], T0 + 2)
    assert paused is not None
    assert (paused.state, paused.held, paused.left) == ("paused", True, ("Max",))
    assert paused.reason == "Input paused because Max left; waiting for 1 moderator (leads) to join"
    back = machine.watchers([watcher("mia")], T0 + 3)
    assert back is not None and (back.state, back.held) == ("moderated", False)


def test_two_moderators_needed_and_the_same_user_twice_counts_once() -> None:
    machine = ModerationMachine(Moderation(("leads", "sec"), count=2), "olga")
    assert machine.start().reason == "Input held: waiting for 2 moderators (leads or sec) to join"
    one = machine.watchers([watcher("mia"), watcher("mia")], T0)  # two tabs of one person
    assert one is not None and one.state == "waiting" and one.moderators == ("Mia",)
    assert one.reason == "Input held: waiting for 1 moderator (leads or sec) to join"
    two = machine.watchers([watcher("mia"), watcher("sam", groups=("sec",))], T0 + 1)
    assert two is not None and two.state == "moderated" and two.reason == "Moderated by Mia and Sam"


def test_terminate_after_the_grace_unless_a_moderator_comes_back() -> None:
    rule = Moderation(("leads",), on_leave="terminate", grace=10.0)
    machine = ModerationMachine(rule, "olga")
    machine.start()
    machine.watchers([watcher("mia")], T0)
    leaving = machine.watchers([], T0 + 1)
    assert leaving is not None and (leaving.state, leaving.held) == ("leaving", True)
    assert machine.deadline == T0 + 11
    assert machine.tick(T0 + 10.5) is None
    # Back within the grace: moderated again, no deadline.
    back = machine.watchers([watcher("mia")], T0 + 10.9)
    assert back is not None and back.state == "moderated" and machine.deadline is None
    machine.watchers([], T0 + 20)
    assert machine.tick(T0 + 29.9) is None
    ended = machine.tick(T0 + 30)
    assert ended is not None and ended.state == "ended"
    assert ended.reason == "This console closed: no moderator came back in time"
    assert machine.watchers([watcher("mia")], T0 + 31) is None  # the end is final


def test_terminate_at_once_without_grace_and_a_moderator_can_end_it() -> None:
    machine = ModerationMachine(Moderation(("leads",), on_leave="terminate", grace=0.0), "olga")
    machine.start()
    machine.watchers([watcher("mia")], T0)
    ended = machine.watchers([watcher("mia", "left")], T0 + 1)
    assert ended is not None and (ended.state, ended.reason) == ("ended", "Closed because Mia left")
    other = ModerationMachine(LEADS, "olga")
    other.start()
    by = other.end_by("Mia")
    assert by is not None and (by.state, by.by, by.reason) == ("ended", "Mia", "Ended by moderator Mia")
    assert other.end_by("Mia") is None


def test_the_notice_says_everything_the_page_shows() -> None:
    machine = ModerationMachine(LEADS, "olga")
    assert machine.start().notice() == {
        "type": "moderation",
        "state": "waiting",
        "held": True,
        "moderators": [],
        "needed": 1,
        "reason": "Input held: waiting for 1 moderator (leads) to join",
    }


# --- the policy ------------------------------------------------------------------------------------


def test_the_rule_table_is_validated_and_explained() -> None:
    rule = RuleConfig(
        name="db",
        groups=["ops"],
        permission="control",
        moderation={"groups": ["leads"], "count": 2, "on_leave": "terminate", "grace": "30s"},
    )
    demands = Policy(PolicyConfig(rules=[rule]))._rules[0].demands
    assert demands.moderation == Moderation(("leads",), 2, "terminate", 30.0)
    assert demands.describe() == [
        "moderation: input held until 2 moderators are watching (group leads); "
        "when one leaves, the console closes unless one is back within 30 seconds"
    ]
    for bad, words in (
        ({"permission": "view", "moderation": {"groups": ["leads"]}}, 'needs permission = "control"'),
        ({"moderation": {"groups": []}}, "give at least one group"),
        ({"moderation": {"groups": ["lead*"]}}, "looks like a glob"),
        ({"moderation": {"groups": ["leads"], "count": 0}}, "greater than or equal to 1"),
        ({"moderation": {"groups": ["leads"], "on_leave": "ignore"}}, "'pause' or 'terminate'"),
        ({"moderation": {"groups": ["leads"], "who": 1}}, "Extra inputs are not permitted"),
    ):
        with pytest.raises(ValidationError, match=words):
            RuleConfig(**{"name": "db", "groups": ["ops"], "permission": "control", **bad})


# --- the filter and the relay core ---------------------------------------------------------------------


def moderated_filter() -> ClientMessageFilter:
    filt = ClientMessageFilter(view_only=False, moderated=True, allow_exclusive=True)
    assert filt.feed_server(SERVER_38_NONE)
    return filt


def test_a_moderated_filter_starts_held_drops_input_and_stays_shared() -> None:
    filt = moderated_filter()
    assert filt.held
    shaken = filt.feed(HANDSHAKE)
    assert shaken.forward[-1] == 1  # never exclusive, even where control may ask for it
    held = filt.feed(FBUR + key(1) + pointer(1) + cut(b"pasted") + qemu_key(1) + FBUR)
    assert (held.forward, held.dropped, held.input_events) == (FBUR + FBUR, 4, 0)
    assert filt.paste_denied == 0  # held, not refused by the clipboard policy
    assert filt.hold(False) == b""
    passed = filt.feed(key(1) + cut(b"pasted"))
    assert (passed.forward, passed.dropped, passed.input_events) == (key(1) + cut(b"pasted"), 0, 2)


def test_holding_releases_what_the_server_saw_pressed() -> None:
    filt = moderated_filter()
    filt.feed(HANDSHAKE)
    filt.hold(False)
    filt.feed(key(1, 0x61) + key(1, 0x62) + key(0, 0x62) + qemu_key(1, 0x63, 46) + pointer(1, 5, 6))
    releases = filt.hold(True)
    assert releases == key(0, 0x61) + qemu_key(0, 0x63, 46) + pointer(0, 5, 6)
    assert filt.feed(key(0, 0x61)).forward == b""  # the browser's own release is held now
    filt.hold(False)
    assert filt.hold(True) == b""  # nothing pressed since


def test_only_a_moderated_filter_can_be_held() -> None:
    with pytest.raises(ValueError, match="moderated"):
        ClientMessageFilter(view_only=False).hold(True)


def test_the_relay_core_holds_releases_and_tells_the_page() -> None:
    core = RelayCore(moderated_filter(), idle_timeout=None, idle_warning=None, max_duration=None)
    core.start(T0)
    core.upstream_bytes(SERVER_38_NONE)
    core.browser_bytes(HANDSHAKE, T0)
    assert core.browser_bytes(key(1), T0 + 1) == ()  # held from the start
    assert core.stats.dropped == 1 and core.stats.last_input == T0  # dropped input is not activity
    released = {"type": "moderation", "state": "moderated"}
    assert core.hold_input(False, released) == [Notice(released, 5.0)]
    assert core.browser_bytes(key(1), T0 + 2) == (ToUpstream(key(1)),)
    before = core.stats.bytes_to_upstream
    paused = {"type": "moderation", "state": "paused"}
    assert core.hold_input(True, paused) == [ToUpstream(key(0)), Notice(paused, 5.0)]
    assert core.stats.bytes_to_upstream == before + len(key(0))
    assert core.browser_bytes(key(0), T0 + 3) == ()
    core.terminate(4005, "Ended by moderator Mia")
    assert core.hold_input(False, released) == []  # ended: nothing more
