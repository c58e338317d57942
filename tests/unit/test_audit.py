from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from gateway.audit import COMMON_FIELDS, EVENTS, FIELDS, AuditLog, format_ts, scrub
from gateway.policy import Permission
from tests.support.audit_schema import validate_line, validate_lines

DOCS = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
T0 = 1_714_564_800.1234  # 2024-05-01T12:00:00.123Z

WHO = {"request_id": "req-1", "user": "alice", "groups": ["ops", "dev"], "client": "192.0.2.7"}


def sample(name: str) -> object:
    spec = FIELDS[name]
    if spec.choices:
        return spec.choices[0]
    return {str: f"{name}-value", int: 3, float: 1.5, bool: True, list: ["a", "b"]}[spec.type]


def sample_fields(event: str) -> dict[str, object]:
    spec = EVENTS[event]
    fields = {name: sample(name) for name in spec.required if name not in COMMON_FIELDS}
    if spec.require_any:
        fields[spec.require_any[0]] = sample(spec.require_any[0])
    return {**WHO, **fields}


CLOSED = sample_fields("console_closed")
OPENED = sample_fields("console_opened")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def audit(path: Path):
    log = AuditLog(str(path), clock=lambda: T0)
    yield log
    log.close()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


# --- the writer --------------------------------------------------------------------------------------


def test_one_json_line_per_event_in_a_stable_order(audit, path):
    record = audit.emit(
        "console_denied",
        server_id="srv-1",
        cloud="hw",
        rule=None,
        reason="no rule grants alice access to web-1 (default deny)",
        requested=Permission.CONTROL,
        **WHO,
    )
    written = lines(path)
    assert len(written) == 1 and written[0].endswith("\n")
    parsed = validate_line(written[0])
    assert parsed == record
    assert list(parsed) == [
        "ts",
        "event",
        "request_id",
        "user",
        "groups",
        "client",
        "server_id",
        "cloud",
        "rule",
        "reason",
        "requested",
    ]
    assert parsed["ts"] == "2024-05-01T12:00:00.123Z"
    assert parsed["rule"] is None and parsed["requested"] == "control"


def test_common_fields_are_always_present_null_when_unknown(audit, path):
    audit.emit("config_reloaded", outcome="ok", changes=["policy"])
    record = validate_line(lines(path)[0])
    assert {name: record[name] for name in COMMON_FIELDS} == dict.fromkeys(COMMON_FIELDS)
    assert record["changes"] == ["policy"]


def test_optional_field_given_as_none_is_left_out(audit):
    record = audit.emit("logout", user="alice", reason=None)
    assert "reason" not in record


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_event_round_trips_through_the_checker(audit, path, event):
    audit.emit(event, **sample_fields(event))
    assert validate_line(lines(path)[-1])["event"] == event


def test_console_closed_carries_the_totals(audit, path):
    audit.emit(
        "console_closed",
        console_id="c-1",
        server_id="srv-1",
        cloud="hw",
        permission="view",
        duration=12.34567,
        bytes_to_browser=10_000,
        bytes_to_upstream=120,
        messages_to_browser=40,
        messages_to_upstream=6,
        dropped_messages=2,
        closed_by="browser",
        reason="the browser closed the tab",
        close_code=1001,
        **WHO,
    )
    rec = validate_line(lines(path)[0])
    assert rec["duration"] == 12.346  # milliseconds are plenty
    assert (rec["bytes_to_browser"], rec["messages_to_upstream"], rec["closed_by"]) == (10_000, 6, "browser")


def test_appends_to_an_existing_file(path):
    path.write_text('{"earlier": 1}\n')
    log = AuditLog(str(path), clock=lambda: T0)
    log.emit("login", user="alice", method="oidc")
    log.close()
    assert lines(path)[0] == '{"earlier": 1}\n' and len(lines(path)) == 2


def test_a_new_file_is_not_world_readable(audit, path):
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0


def test_reopen_after_rotation_writes_to_a_new_file(audit, path):
    audit.emit("login", user="alice", method="local")
    rotated = path.with_suffix(".1")
    path.rename(rotated)
    audit.emit("logout", user="alice")  # still the old (renamed) file, as with logrotate before SIGHUP
    audit.reopen()
    audit.emit("login", user="bob", method="local")
    assert [validate_line(x)["event"] for x in lines(rotated)] == ["login", "logout"]
    assert [validate_line(x)["user"] for x in lines(path)] == ["bob"]


def test_stdout_target(capsys):
    log = AuditLog("-", clock=lambda: T0)
    log.emit("login", user="alice", method="proxy-jwt", client="10.0.0.1")
    log.reopen()  # no-op for stdout
    log.close()  # must not close the process's stdout
    out = capsys.readouterr().out
    assert validate_line(out)["method"] == "proxy-jwt"


def test_write_errors_are_counted_not_raised(caplog):
    log = AuditLog("/dev/full", clock=lambda: T0)
    log.emit("login", user="alice", method="local")
    assert log.write_errors == 1
    assert "cannot write event login" in caplog.text
    log.close()


def test_emit_after_close_is_dropped_and_counted(audit, path):
    audit.close()
    audit.emit("login", user="alice", method="local")
    assert audit.write_errors == 1 and lines(path) == []


def test_concurrent_writers_never_interleave(audit, path):
    def burst(n: int) -> None:
        for i in range(200):
            audit.emit("login", user=f"user-{n}-{i}", method="local", groups=["g"] * 20)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(validate_lines(lines(path))) == 800


# --- refusing what is not in the schema ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "fields", "message"),
    [
        ("logon", {}, "unknown audit event 'logon'"),
        ("login", {"user": "a", "method": "local", "token": "SECRET-T"}, "unknown field.s. token"),
        ("login", {"user": "a", "method": "local", "password": "SECRET-P"}, "unknown field.s. password"),
        ("login", {"user": "a"}, "missing field.s. method"),
        ("login", {"user": "a", "method": "kerberos"}, "method must be one of"),
        ("login", {"user": None, "method": "local"}, None),  # common fields may be null: accepted
        ("console_closed", {**CLOSED, "bytes_to_browser": True}, "bytes_to_browser must be an integer"),
        ("console_closed", {**CLOSED, "bytes_to_browser": "9"}, "bytes_to_browser must be an integer"),
        ("console_closed", {**CLOSED, "duration": float("nan")}, "duration must be a finite number"),
        ("console_closed", {**CLOSED, "closed_by": "Aliens!"}, "closed_by must be one short lower-case word"),
        ("console_closed", {**CLOSED, "closed_by": "x" * 33}, "closed_by must be one short lower-case word"),
        ("limit_refused", {"limit": "per user", "reason": "x"}, "limit must be one short lower-case word"),
        ("admin_terminate", {"console_id": None}, "at least one of console_id, target_user"),
        ("console_opened", {**OPENED, "server_id": None}, "server_id must not be null"),
        ("login", {"user": "a", "method": "local", "groups": "ops"}, "groups must be a list of strings"),
        ("login", {"user": "a", "method": "local", "groups": ["ops", 1]}, "groups must be a list of strings"),
        ("login", {"user": 7, "method": "local"}, "user must be a string"),
        ("admin_lock", {"reason": "x", "cloud": "hw"}, "at least one of server_id, target_user"),
    ],
)
def test_schema_violations_raise_and_write_nothing(audit, path, event, fields, message):
    if message is None:
        audit.emit(event, **fields)
        assert len(lines(path)) == 1
        return
    with pytest.raises(ValueError, match=message) as info:
        audit.emit(event, **fields)
    assert "SECRET" not in str(info.value)  # errors name fields, never echo values
    assert lines(path) == []


# --- scrubbing (defence in depth) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstream closed wss://h.example:8002/websockify?token=abc123 early",
            "upstream closed wss://h.example:8002/websockify?[redacted] early",
        ),
        ("see https://h/vnc_auto.html?path=%3Ftoken%3Dxyz", "see https://h/vnc_auto.html?[redacted]"),
        ("http://h/#access_token=zzz", "http://h/?[redacted]"),
        ("bad token=abc&lang=EN", "bad token=[redacted]&lang=EN"),
        ("id_token=eyJ.x.y and password=hunter2", "id_token=[redacted] and password=[redacted]"),
        ("plain reason, no secrets: close_code=1006", "plain reason, no secrets: close_code=1006"),
        ("https://h.example:8002/websockify", "https://h.example:8002/websockify"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_emitted_strings_and_lists_are_scrubbed(audit, path):
    audit.emit(
        "console_closed",
        **{**sample_fields("console_closed"), "reason": "failed: wss://h/websockify?token=T0KEN"},
    )
    audit.emit("login_failed", method="oidc", reason="x", groups=["https://idp/cb?code=C0DE"])
    text = path.read_text()
    assert "T0KEN" not in text and "C0DE" not in text
    validate_lines(lines(path))


def test_format_ts_is_rfc3339_utc_milliseconds():
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(T0) == "2024-05-01T12:00:00.123Z"
    assert format_ts(T0 + 0.8769) == "2024-05-01T12:00:01.000Z"


# --- the checker itself must catch bad lines ---------------------------------------------------------------


def good_line() -> dict:
    return {"ts": "2024-05-01T12:00:00.123Z", "event": "login", **WHO, "user": "alice", "method": "local"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("client"), "common field client missing"),
        (lambda r: r.update(token="x"), r"fields not in the schema: \['token'\]"),
        (lambda r: r.pop("method"), r"required fields missing: \['method'\]"),
        (lambda r: r.update(ts="2024-05-01 12:00:00"), "bad ts"),
        (lambda r: r.update(event="nope"), "unknown audit event"),
        (lambda r: r.update(method="ldap"), "method='ldap' not in"),
        (
            lambda r: (r.pop("method"), r.update(event="limit_refused", limit="Per User", reason="x")),
            "limit='Per User' is not one short lower-case word",
        ),
        (lambda r: r.update(groups="ops"), "groups should be a list of strings"),
        (lambda r: r.update(user="https://x/?token=abc"), "carries a URL query or token"),
        (lambda r: r.update(user="token=abc"), "carries a URL query or token"),
    ],
)
def test_checker_rejects(mutate, message):
    record = good_line()
    mutate(record)
    with pytest.raises(AssertionError, match=message):
        validate_line(json.dumps(record) + "\n")


def test_checker_rejects_non_json_multiline_and_reordered():
    validate_line(json.dumps(good_line()))
    with pytest.raises(AssertionError, match="not JSON"):
        validate_line("login alice\n")
    with pytest.raises(AssertionError, match="more than one line"):
        validate_line(json.dumps(good_line(), indent=1))
    reordered = good_line()
    reordered = {"event": reordered.pop("event"), **reordered}
    with pytest.raises(AssertionError, match="must start with ts, event"):
        validate_line(json.dumps(reordered))


# --- docs/audit.md describes the schema in the code ------------------------------------------------------


def doc_sections() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^### `([a-z_]+)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_docs_describe_every_event_and_its_fields():
    sections = doc_sections()
    assert sorted(sections) == sorted(EVENTS), "docs/audit.md: one '### `event`' section per event"
    for event, spec in EVENTS.items():
        listed = set(re.findall(r"^\| `([a-z_]+)` \|", sections[event], flags=re.M))
        expected = {*spec.required, *spec.optional}
        assert listed == expected, f"docs/audit.md, {event}: fields differ: {sorted(listed ^ expected)}"
        for name in spec.required:
            assert re.search(rf"^\| `{name}` \| yes \|", sections[event], flags=re.M), (
                f"docs/audit.md, {event}: {name} should be marked required"
            )


def test_docs_list_every_field_with_its_type():
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("## Fields", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([a-z ]+?) \|", table, flags=re.M))
    names = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list of strings"}
    assert rows == {name: names[spec.type] for name, spec in FIELDS.items()}


def test_docs_examples_are_valid_lines():
    text = DOCS.read_text(encoding="utf-8")
    examples = [line for line in text.splitlines() if line.startswith('{"ts":')]
    assert len(examples) >= 5
    for line in examples:
        validate_line(line)
