"""The recording index: typed text from keysyms, the activity histogram, and a strict parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.recording.index import RUN_GAP_MS, Index, IndexBuilder
from gateway.recording.keysyms import BACKSPACE, TypedKeys, keysym_char

ROOT = Path(__file__).resolve().parents[2]
SHIFT_L, CONTROL_L, ALT_L, ALTGR = 0xFFE1, 0xFFE3, 0xFFE9, 0xFE03
RETURN, TAB, BACKSPACE_KEY, KP_ENTER, KP_5, LEFT, F1 = 0xFF0D, 0xFF09, 0xFF08, 0xFF8D, 0xFFB5, 0xFF51, 0xFFBE


@pytest.mark.parametrize(
    ("keysym", "char"),
    [
        (ord("a"), "a"),
        (ord("A"), "A"),
        (ord(" "), " "),
        (ord("~"), "~"),
        (0xE9, "é"),  # Latin-1 directly
        (0xDF, "ß"),
        (0x01000000 + ord("Ж"), "Ж"),  # Unicode keysyms
        (0x01000000 + 0x1F600, "\U0001f600"),
        (0x20AC, "€"),  # legacy keysyms, as noVNC sends them
        (0x6F6, "Ж"),
        (0x7E1, "\u03b1"),  # Greek small alpha
        (0x1A1, "Ą"),
        (0x4B1, "ア"),
        (RETURN, "\n"),
        (KP_ENTER, "\n"),
        (TAB, "\t"),
        (KP_5, "5"),
        (BACKSPACE_KEY, BACKSPACE),
        (SHIFT_L, ""),
        (LEFT, ""),
        (F1, ""),
        (0x7F, ""),  # Delete's Latin-1 slot is not a character
        (0x01000000 + 0xD800, ""),  # a surrogate
        (0x0110FFFF + 1, ""),  # past Unicode
    ],
)
def test_keysym_char(keysym: int, char: str) -> None:
    assert keysym_char(keysym) == char


def test_legacy_keysyms_are_the_inverse_of_novncs_table() -> None:
    """noVNC (the client we serve) picks keysyms with keysymdef.js: every character it maps to a legacy
    keysym must come back as that character, so a noVNC upgrade that changes the table fails here."""
    source = ROOT / "node_modules" / "@novnc" / "novnc" / "core" / "input" / "keysymdef.js"
    if not source.exists():
        pytest.skip("noVNC is not installed (scripts/setup.sh installs it)")
    pairs = re.findall(r"^\s+0x([0-9a-f]+): 0x([0-9a-f]+),", source.read_text(), re.M)
    legacy = [(int(code, 16), int(keysym, 16)) for code, keysym in pairs if int(keysym, 16) < 0x01000000]
    assert len(legacy) > 600
    for code, keysym in legacy:
        assert keysym_char(keysym) == chr(code), (hex(code), hex(keysym))


def _typed(events: list[tuple[int, int, bool]]) -> list[tuple[int, str]]:
    builder = IndexBuilder(typed_text=True)
    for t, keysym, down in events:
        builder.key(t, keysym, down)
    typed = builder.build(0).typed
    assert typed is not None
    return [(run.t, run.text) for run in typed]


def _type(text: str, start: int = 0, step: int = 100) -> list[tuple[int, int, bool]]:
    events = []
    for i, char in enumerate(text):
        keysym = {"\n": RETURN, "\b": BACKSPACE_KEY}.get(char, ord(char))
        events += [(start + i * step, keysym, True), (start + i * step + 10, keysym, False)]
    return events


def test_only_key_down_types_and_shift_is_no_character() -> None:
    events = [(0, SHIFT_L, True), (10, ord("H"), True), (20, ord("H"), False), (30, SHIFT_L, False)]
    assert _typed(events + _type("i", 40)) == [(10, "Hi")]


def test_shortcuts_type_nothing_but_altgr_does() -> None:
    events = [(0, CONTROL_L, True), (10, ord("c"), True), (20, CONTROL_L, False)]
    events += [(30, ALT_L, True), (40, ord("x"), True), (50, ALT_L, False)]
    events += [(60, ALTGR, True), (70, ord("@"), True), (80, ALTGR, False)]
    assert _typed(events) == [(70, "@")]


def test_backspace_corrects_what_was_typed() -> None:
    assert _typed(_type("passx\bword")) == [(0, "password")]
    assert _typed(_type("\b\bok")) == [(200, "ok")]  # nothing to remove: ignored


def test_runs_split_at_newlines_and_pauses_with_a_time_per_character() -> None:
    events = _type("ls\n") + _type("cat x", start=300) + _type("y", start=400 + 4 * 100 + RUN_GAP_MS + 1)
    builder = IndexBuilder(typed_text=True)
    for t, keysym, down in events:
        builder.key(t, keysym, down)
    index = builder.build(10_000)
    assert [(r.t, r.text) for r in index.typed or []] == [(0, "ls\n"), (300, "cat x"), (5801, "y")]
    assert index.find("x") == [700]  # the time the x itself was typed, not the run's start
    assert index.find("CAT") == [300]
    assert index.find("nothing") == [] and index.find("") == []


def test_no_typed_text_unless_input_is_recorded() -> None:
    builder = IndexBuilder(typed_text=False)
    builder.key(0, ord("a"), True)
    index = builder.build(0)
    assert index.typed is None and index.find("a") == []
    assert b"typed" not in index.to_bytes() and Index.from_bytes(index.to_bytes()).typed is None


def test_histogram_counts_per_second() -> None:
    builder = IndexBuilder(typed_text=False)
    builder.server(0, 100)
    builder.server(999, 50)
    builder.server(2500, 7)
    builder.input(1000)
    builder.input(1999)
    index = builder.build(3000)
    assert index.bytes_out == [150, 0, 7]
    assert index.inputs == [0, 2]


def test_typed_keys_tracks_modifiers_across_events() -> None:
    keys = TypedKeys()
    assert keys.press(CONTROL_L, True) == ""
    assert keys.press(ord("v"), True) == ""
    assert keys.press(CONTROL_L, False) == ""
    assert keys.press(ord("v"), True) == "v"


def test_index_survives_a_round_trip() -> None:
    builder = IndexBuilder(typed_text=True)
    for t, keysym, down in _type("héllo\n"):
        builder.key(t, keysym, down)
    builder.server(10, 5)
    builder.marker(20, {"kind": "opened"})
    index = builder.build(1000)
    assert Index.from_bytes(index.to_bytes()) == index


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1, "duration": -1, "segments": [], "bytes_out": [], "inputs": [], "markers": []}',
        b'{"v": 1, "duration": 0, "segments": [[0]], "bytes_out": [], "inputs": [], "markers": []}',
        b'{"v": 1, "duration": 0, "segments": [], "bytes_out": [1.5], "inputs": [], "markers": []}',
        b'{"v": 1, "duration": 0, "segments": [], "bytes_out": [], "inputs": [], "markers": [[0, 1]]}',
        b'{"v": 1, "duration": 0, "segments": [], "bytes_out": [], "inputs": [], "markers": [],'
        b' "typed": [[0, "ab", [0]]]}',
        b"[" * 100_000,
    ],
)
def test_a_malformed_index_is_refused_with_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="index"):
        Index.from_bytes(data)
