"""rebuild(): the index of a recording that has none yet (live, or cut short), from its segments, for the
player's timeline; it must agree with the index the writer seals, and stop at a segment that fails."""

from __future__ import annotations

from gateway.recording.format import Keyring, RecordingReader, rebuild
from tests.unit.test_recording_format import Recorded, keys, rec  # noqa: F401 (fixtures)


def test_the_rebuilt_index_is_the_one_the_writer_seals(keys: Keyring, rec: Recorded) -> None:  # noqa: F811
    sealed = RecordingReader(keys, rec.header)
    expected = sealed.index(rec.index, sealed.seal(rec.seal))
    index, problems = rebuild(keys, rec.header, rec.segments)
    assert problems == []
    assert index.segments == expected.segments  # offsets, sizes, times, screens, records, hashes
    assert index.duration == expected.duration
    assert index.bytes_out == expected.bytes_out
    assert index.markers == expected.markers
    assert [(r.t, r.text, r.times) for r in index.typed or []] == [(2000, "ls\n", [0, 100, 200])]
    assert [(r.t, r.text) for r in index.typed or []] == [(r.t, r.text) for r in expected.typed or []]


def test_a_live_recording_rebuilds_up_to_what_is_stored(keys: Keyring, rec: Recorded) -> None:  # noqa: F811
    index, problems = rebuild(keys, rec.header, rec.segments[:2])
    assert problems == [] and [s.number for s in index.segments] == [0, 1]
    assert index.duration == index.segments[-1].end


def test_rebuilding_stops_at_a_tampered_segment_and_names_it(keys: Keyring, rec: Recorded) -> None:  # noqa: F811
    segments = list(rec.segments)
    edited = bytearray(segments[1])
    edited[-40] ^= 1
    segments[1] = bytes(edited)
    index, problems = rebuild(keys, rec.header, segments)
    assert [s.number for s in index.segments] == [0]
    assert [(p.kind, p.segment) for p in problems] == [("edited", 1)]
    index, problems = rebuild(keys, rec.header, [segments[0], None, segments[2]])
    assert [(p.kind, p.segment) for p in problems] == [("missing", 1)]
