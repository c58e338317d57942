"""The keep-alive policy on a fake clock: who gets pinged, when, and when a silent peer counts as dead."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import pytest

from gateway.consoles.keepalive import KeepAlivePolicy, Watch

INTERVAL = 20.0


@dataclass
class Peer:
    """A socket's far end: `answers` pongs each ping at once; `traffic` lists the times it sends data."""

    answers: bool = True
    traffic: list[float] = field(default_factory=list)
    progress: int = 0
    pings: list[float] = field(default_factory=list)
    dead_at: float | None = None


def run(policy: KeepAlivePolicy, peers: list[Peer], until: float, start: float = 0.0) -> int:
    """Advance the clock look by look (as the driver's timer does) until `until`; returns the looks."""
    watches = {id(policy.watch(p, i, INTERVAL, start, 0)): p for i, p in enumerate(peers)}
    looks = 0

    def progress(watch: Watch) -> int:
        nonlocal looks
        looks += 1
        return watches[id(watch)].progress

    while (at := policy.next_due()) is not None and at <= until:
        for peer in peers:  # data the peer sent before this look
            peer.progress += sum(1 for t in peer.traffic if t <= at) - getattr(peer, "_seen", 0)
            peer._seen = sum(1 for t in peer.traffic if t <= at)  # type: ignore[attr-defined]
        pings, dead = policy.due(at, progress)
        for watch in pings:
            peer = watches[id(watch)]
            peer.pings.append(at)
            if peer.answers:
                peer.progress += 1  # the pong, before the next look
        for watch in dead:
            watches[id(watch)].dead_at = at
    return looks


def test_an_idle_live_peer_is_pinged_once_per_interval_and_never_closed() -> None:
    peer = Peer()
    looks = run(KeepAlivePolicy(0.25), [peer], until=10 * INTERVAL)
    assert peer.dead_at is None
    assert peer.pings[0] == INTERVAL
    gaps = {b - a for a, b in zip(peer.pings, peer.pings[1:], strict=False)}
    assert gaps == {INTERVAL}
    assert looks <= 2 * len(peer.pings) + 2  # about two looks per ping, nothing per second


def test_a_peer_that_keeps_sending_is_never_pinged() -> None:
    peer = Peer(answers=False, traffic=[i * 3.0 for i in range(1, 200)])
    run(KeepAlivePolicy(0.25), [peer], until=590.0)
    assert peer.pings == [] and peer.dead_at is None


@pytest.mark.parametrize("last", [0.0, 0.1, 3.0, 9.9, 10.0, 10.1, 17.5, 29.9])
def test_a_silent_peer_is_pinged_after_one_to_one_and_a_half_intervals_and_closed_within_two(
    last: float,
) -> None:
    """Its last byte at `last` after several earlier ones; nothing after, no pong."""
    peer = Peer(answers=False, traffic=[*(i * 0.5 for i in range(1, int(last * 2))), last])
    run(KeepAlivePolicy(0.25), [peer], until=200.0)
    assert len(peer.pings) == 1
    silent_for = peer.pings[0] - last
    assert INTERVAL <= silent_for <= 1.5 * INTERVAL + 0.25, silent_for
    assert peer.dead_at is not None
    assert 1.5 * INTERVAL <= peer.dead_at - last <= 2 * INTERVAL + 0.25, peer.dead_at - last


def test_a_peer_that_answers_late_is_dead_and_one_that_answers_in_time_lives() -> None:
    """The pong must arrive within half an interval of the ping (as aiohttp's heartbeat)."""
    policy = KeepAlivePolicy(0.25)
    slow, prompt = Peer(answers=False), Peer(answers=False)
    watches = [policy.watch(slow, 0, INTERVAL, 0.0, 0), policy.watch(prompt, 1, INTERVAL, 0.0, 0)]
    peers = {id(watches[0]): slow, id(watches[1]): prompt}
    pinged_at = None
    while (at := policy.next_due()) is not None and at < 100:
        pings, dead = policy.due(at, lambda w: peers[id(w)].progress)
        if pings:
            pinged_at = at
        if pinged_at is not None and at < pinged_at + INTERVAL / 2:
            prompt.progress += 1  # its pong, before the timeout
        for watch in dead:
            peers[id(watch)].dead_at = at
    assert slow.dead_at == INTERVAL * 1.5
    assert prompt.dead_at is None


def test_a_forgotten_socket_is_neither_pinged_nor_closed_and_its_owner_is_let_go() -> None:
    """The record waits in its slot, but not the relay: a closed console's sockets and buffers must not
    stay alive for up to an interval (the soak's memory slope caught that)."""
    policy = KeepAlivePolicy(0.25)
    peer = Peer()
    owner = weakref.ref(peer)
    watch = policy.watch(peer, 0, INTERVAL, 0.0, 0)
    policy.forget(watch)
    del peer
    assert owner() is None
    pings, dead = policy.due(10 * INTERVAL, lambda w: 0)
    assert (pings, dead) == ([], [])
    assert policy.next_due() is None and len(policy) == 0


def test_looks_fall_on_the_resolution_grid_and_sockets_share_slots() -> None:
    policy = KeepAlivePolicy(0.5)
    for i in range(1000):
        policy.watch(Peer(), i, INTERVAL, 0.001 * i, 0)  # opened over one second
    # First looks half an interval after each opened, rounded up to the grid: three slots, not 1000.
    assert policy.next_due() == 10.0
    pings, dead = policy.due(10.0, lambda w: 0)
    assert (pings, dead) == ([], [])
    assert policy.next_due() == 10.5
    policy.due(11.0, lambda w: 0)
    assert policy.next_due() == 20.0  # the next look is each one's ping time


def test_mixed_intervals_keep_their_own_pace() -> None:
    """A reload may change console.keepalive: consoles opened before keep theirs."""
    policy = KeepAlivePolicy(0.25)
    short, long = Peer(), Peer()
    w_short = policy.watch(short, 0, 2.0, 0.0, 0)
    w_long = policy.watch(long, 1, 8.0, 0.0, 0)
    peers = {id(w_short): short, id(w_long): long}
    while (at := policy.next_due()) is not None and at <= 16.0:
        pings, _ = policy.due(at, lambda w: peers[id(w)].progress)
        for watch in pings:
            peers[id(watch)].pings.append(at)
            peers[id(watch)].progress += 1
    assert short.pings == [2.0 * i for i in range(1, 9)]
    assert long.pings == [8.0, 16.0]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        KeepAlivePolicy(0)
    with pytest.raises(ValueError):
        KeepAlivePolicy().watch(Peer(), 0, 0.0, 0.0, 0)
