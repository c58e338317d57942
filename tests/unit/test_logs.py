"""Log output: JSON lines with request ids, and credentials masked whatever a message says."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.logs import JSONFormatter, PlainFormatter, _Context, request_id, scrub


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wss://h:8002/websockify?token=abc-123&x=1", "wss://h:8002/websockify?token=***&x=1"),
        ("http://h/vnc_auto.html?path=%3Ftoken%3Dabc", "http://h/vnc_auto.html?path=***"),
        ("password: hunter2", "password: ***"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_scrub_masks_credentials(text: str, expected: str) -> None:
    assert scrub(text) == expected


def _emit(formatter: logging.Formatter, message: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_Context())
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.logs")
    logger.propagate = False
    logger.addHandler(handler)
    token = request_id.set("req-42")
    try:
        logger.warning(message, *args)
    finally:
        request_id.reset(token)
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_request_id_and_no_token() -> None:
    line = _emit(JSONFormatter(), "upstream %s failed", "wss://h/websockify?token=SECRET")
    entry = json.loads(line)
    assert entry["request_id"] == "req-42"
    assert entry["level"] == "warning"
    assert entry["logger"] == "test.logs"
    assert "SECRET" not in line
    assert entry["ts"].endswith("Z")


def test_plain_lines_carry_request_id_and_no_token() -> None:
    line = _emit(PlainFormatter(), "connect to %s", "https://h/vnc_auto.html?token=SECRET&lang=EN")
    assert "[req-42]" in line
    assert "SECRET" not in line


def test_plain_tracebacks_cannot_start_a_line_of_their_own() -> None:
    """Exception text is indented under its record, so a line break in its message forges nothing."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_Context())
    handler.setFormatter(PlainFormatter())
    logger = logging.getLogger("test.logs.exc")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        raise ValueError("bad id x\n2026-01-01 00:00:00,000 INFO gateway forged\r\x1b[2K")
    except ValueError:
        logger.exception("refused %s", "y\u2028z")
    finally:
        logger.removeHandler(handler)
    first, *rest = stream.getvalue().rstrip("\n").split("\n")
    assert first.endswith("refused y\\u2028z")
    assert rest and all(line.startswith("    ") for line in rest), rest
    assert any("forged\\r\\x1b[2K" in line for line in rest)


def test_json_lines_stay_one_valid_object_whatever_the_message() -> None:
    line = _emit(JSONFormatter(), "id %s", 'token=abc"x\u2028y\x85z\n')
    assert len(line.splitlines()) == 1
    assert json.loads(line)["message"] == 'id token=***"x\u2028y\x85z\n'
