"""The recording benchmark's own logic (bench/recording.py, bench/protocol.py's framed profiles), sans-IO.

The figures themselves are not tested (benchmarks are not tests); what is: the stream a recorded console
is measured on is one the gateway can frame message by message, byte for byte what was asked for, and
the hour extrapolation counts a recorded stream's keyframes every segment and a plain one's first frame
once.
"""

from __future__ import annotations

import pytest

from bench.protocol import (
    CLIENT_STEPS,
    FRAMED,
    SERVER_STEPS,
    framed_update,
    profile,
    stream_command,
)
from bench.recording import per_hour
from gateway.rfb import ClientMessageFilter, ServerMessageFilter


@pytest.mark.parametrize("name", ["64k", "mix"])
@pytest.mark.parametrize("total", [1 << 20, 3 << 20])
def test_framed_profile_is_exact_and_framed_by_a_recorded_console_message_by_message(
    name: str, total: int
) -> None:
    prof = profile(name + FRAMED, total)
    assert prof.framed and not profile(name, total).framed
    assert prof.total == total  # the client and the source agree on the bytes to expect
    assert profile(prof.name, prof.total) == prof  # the source rebuilds it from the stream command
    client = ClientMessageFilter(view_only=False, record=True)
    server = ServerMessageFilter(client, copy_max=None)
    for ours, theirs in zip(CLIENT_STEPS, SERVER_STEPS, strict=False):  # the handshake, step by step
        client.feed_server(theirs)
        server.feed(theirs)
        client.feed(ours)
    client.feed_server(SERVER_STEPS[-1])
    assert server.feed(SERVER_STEPS[-1]) == SERVER_STEPS[-1]
    client.feed(stream_command(prof.name, prof.total))
    for size in prof.sizes:
        message = framed_update(size)
        assert len(message) == size
        client.feed_server(message)
        assert server.feed(message) == message
        # One whole server message: the recorder can cut a segment after it.
        assert server.boundaries[-1] == size and server.at_boundary


def test_every_size_a_framed_profile_can_hold_is_a_whole_update() -> None:
    for size in range(20, 300_000, 4):
        message = framed_update(size)
        assert len(message) == size
        assert message[0] == 0 and 1 <= int.from_bytes(message[2:4], "big") <= 2


def test_an_hour_counts_a_recorded_streams_keyframe_every_segment_and_a_plain_ones_first_frame_once() -> None:
    # 30 s holding a 3 MB first frame and 0.3 MB after it.
    assert per_hour(3_300_000, 3_000_000, 30.0, keyframed=True) == pytest.approx(396.0)
    assert per_hour(3_300_000, 3_000_000, 30.0, keyframed=False) == pytest.approx(3.0 + 36.0)
