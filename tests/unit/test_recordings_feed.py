"""The recordings API's sans-IO parts: the player's segment feed (what reaches the browser, and what never
does) and the server as recorded, which review rules match."""

from __future__ import annotations

import struct

from gateway.policy import Policy, PolicyConfig
from gateway.recording.format import INPUT, MARKER, SERVER, Record, Screen, Segment
from gateway.web.recordings import FEED_SCREEN, feed, recorded_server

SCREEN = Screen(640, 480, bytes(range(16)), "desk ☃")


def parse(body: bytes) -> list[tuple[int, int, bytes]]:
    out, at = [], 0
    while at < len(body):
        kind, t, length = struct.unpack_from(">BII", body, at)
        out.append((kind, t, body[at + 9 : at + 9 + length]))
        at += 9 + length
    assert at == len(body)
    return out


def test_the_feed_holds_the_screen_then_server_messages_and_markers_but_never_input() -> None:
    records = [
        Record(SERVER, 1000, b"\x00\x00\x00\x00"),
        Record(INPUT, 1001, struct.pack(">BBxxI", 4, 1, ord("p"))),
        Record(MARKER, 1002, b'{"kind":"notice"}'),
        Record(SERVER, 1003, b"\x02"),
    ]
    body = feed(Segment(3, 1000, 2000, SCREEN, records, b"\x00" * 32))
    parsed = parse(body)
    assert parsed[0] == (
        FEED_SCREEN,
        1000,
        struct.pack(">HH", 640, 480) + bytes(range(16)) + "desk ☃".encode(),
    )
    assert parsed[1:] == [
        (SERVER, 1000, b"\x00\x00\x00\x00"),
        (MARKER, 1002, b'{"kind":"notice"}'),
        (SERVER, 1003, b"\x02"),
    ]


def test_review_rules_match_the_server_as_recorded() -> None:
    meta = {
        "cloud": "hw",
        "server_id": "srv-9",
        "server_name": "db-1",
        "project_id": "p1",
        "region": "eu",
        "tags": ["env=prod", 5],  # a malformed entry is ignored, not trusted
        "user": "alice",
    }
    server = recorded_server(meta)
    assert (server.cloud, server.id, server.name, server.project_id, server.tags) == (
        "hw",
        "srv-9",
        "db-1",
        "p1",
        ("env=prod",),
    )
    policy = Policy(
        PolicyConfig.model_validate({"reviewers": [{"name": "r", "groups": ["a"], "tags": ["env=prod"]}]})
    )
    assert policy.review("carol", ["a"], server).allowed
    # An older recording without project or tags: selectors on them fail closed.
    assert not policy.review("carol", ["a"], recorded_server({"cloud": "hw", "server_id": "srv-9"})).allowed
