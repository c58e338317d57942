"""Validate audit lines as a log consumer would see them, against the schema in gateway/audit.py.

Written independently of the writer's own validation (it reads the spec, not `build_record`), so a
writer bug shows up here instead of being checked against itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from gateway.audit import COMMON_FIELDS, EVENTS, FIELDS, NULLABLE, WORD

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# A URL still carrying a query/fragment, or a token-like pair not yet blanked.
_LEAK = re.compile(r"://[^\s?#]*[?#](?!\[redacted\])|\btoken=(?!\[redacted\])", re.I)
_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list of strings"}


def _type_ok(kind: type, value: object) -> bool:
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def validate_line(line: str) -> dict:
    """The parsed record, or AssertionError saying what is wrong with which field of which event."""
    body = line[:-1] if line.endswith("\n") else line
    assert "\n" not in body, "an audit record spans more than one line"
    try:
        record = json.loads(body)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"audit line is not JSON: {exc}: {body[:200]!r}") from None
    assert isinstance(record, dict), f"audit line is not a JSON object: {body[:200]!r}"
    keys = list(record)
    assert keys[:2] == ["ts", "event"], f"audit line must start with ts, event; got {keys[:2]}"
    assert isinstance(record["ts"], str) and _TS.match(record["ts"]), f"bad ts {record['ts']!r}"
    event = record["event"]
    spec = EVENTS.get(event)
    assert spec is not None, f"unknown audit event {event!r}"
    for name in COMMON_FIELDS:
        assert name in record, f"{event}: common field {name} missing (write null when not applicable)"
    allowed = {"ts", "event", *COMMON_FIELDS, *spec.required, *spec.optional}
    unknown = sorted(set(record) - allowed)
    assert not unknown, f"{event}: fields not in the schema: {unknown}"
    missing = [name for name in spec.required if name not in record]
    assert not missing, f"{event}: required fields missing: {missing}"
    if spec.require_any:
        assert any(record.get(n) is not None for n in spec.require_any), (
            f"{event}: needs at least one of {list(spec.require_any)}"
        )
    for name, value in record.items():
        if name in ("ts", "event"):
            continue
        field = FIELDS[name]
        if value is None:
            assert name in NULLABLE, f"{event}: field {name} is null but may not be"
            continue
        assert _type_ok(field.type, value), f"{event}: field {name} should be a {_TYPES[field.type]}"
        if field.choices:
            assert value in field.choices, f"{event}: field {name}={value!r} not in {list(field.choices)}"
        if field.word:
            assert WORD.fullmatch(value), f"{event}: field {name}={value!r} is not one short lower-case word"
        texts = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        for text in texts:
            assert not _LEAK.search(text), f"{event}: field {name} looks like it carries a URL query or token"
    return record


def validate_lines(lines: Iterable[str]) -> list[dict]:
    """Every non-empty line of an audit file, validated."""
    return [validate_line(line) for line in lines if line.strip()]
