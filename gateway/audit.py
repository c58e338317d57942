"""The audit trail: one JSON object per line, a stable schema, and never a secret.

The schema below (FIELDS and EVENTS) is the single source of truth: `emit` enforces it, the test suite's
checker (tests/support/audit_schema.py) validates lines against it, and a test checks that docs/audit.md
describes every event and field it lists.

Each line is one unbuffered write(2) under a lock. A line is a few hundred bytes, so on a local file this
costs microseconds and does not noticeably block the event loop; a slow disk or a blocked stdout pipe
would, which is why the documented deployment writes to a local file or to journald via stdout.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.auth.identity import METHODS
from gateway.logs import json_line

__all__ = ["COMMON_FIELDS", "EVENTS", "FIELDS", "AuditLog", "EventSpec", "FieldSpec", "format_ts", "scrub"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    type: type  # str, int, float, bool, or list (a list of strings)
    description: str
    choices: tuple[str, ...] = ()  # a closed set: anything else is refused
    word: bool = False  # an open set of short lower-case words (known values documented, new ones allowed)


@dataclass(frozen=True, slots=True)
class EventSpec:
    description: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    require_any: tuple[str, ...] = ()  # at least one of these (all listed in optional) must be given


FIELDS: dict[str, FieldSpec] = {
    # -- written by the log itself
    "ts": FieldSpec(str, "when, RFC 3339 UTC with milliseconds: 2024-05-01T12:00:00.123Z"),
    "event": FieldSpec(str, "the event name (see the events below)"),
    # -- common: present on every line, null when not applicable
    "request_id": FieldSpec(str, "the HTTP request's id (X-Request-Id), to join with access logs"),
    "user": FieldSpec(str, "who acted (the signed-in user; for login_failed the name that was tried)"),
    "groups": FieldSpec(list, "the user's groups at the time"),
    "client": FieldSpec(str, "the client's address (after trusted-proxy handling)"),
    # -- the server and the decision
    "server_id": FieldSpec(str, "the cloud's server id"),
    "server_name": FieldSpec(str, "the server's name at the time"),
    "project_id": FieldSpec(str, "the cloud project the server belongs to"),
    "region": FieldSpec(str, "the cloud region"),
    "cloud": FieldSpec(str, "the configured cloud name"),
    "permission": FieldSpec(str, "the permission granted", ("view", "control")),
    "requested": FieldSpec(str, "the permission asked for", ("view", "control")),
    "rule": FieldSpec(str, "the policy rule that decided (null: no rule matched, default deny)"),
    "console_id": FieldSpec(str, "the gateway's id for one console session (not the cloud's token)"),
    "justification": FieldSpec(str, "the reason the user gave for opening a console (when a rule asks)"),
    "access_request": FieldSpec(str, "the id of a just-in-time access request"),
    "watching": FieldSpec(str, "an observer's console: the console_id of the live console it watches"),
    "watch_id": FieldSpec(str, "the id of one request to watch a live console (shadowing)"),
    "grant_seconds": FieldSpec(float, "how long the access asked for (and, approved, granted) lasts"),
    "method": FieldSpec(str, "sign-in method", METHODS),
    # -- outcomes
    "reason": FieldSpec(str, "why, in words"),
    "closed_by": FieldSpec(str, "what ended the session, one word (browser, upstream, ...)", word=True),
    "close_code": FieldSpec(int, "the WebSocket close code seen"),
    "duration": FieldSpec(float, "how long the session lasted, in seconds"),
    "bytes_to_browser": FieldSpec(int, "payload bytes relayed upstream -> browser"),
    "bytes_to_upstream": FieldSpec(int, "payload bytes relayed browser -> upstream"),
    "messages_to_browser": FieldSpec(int, "WebSocket messages relayed upstream -> browser"),
    "messages_to_upstream": FieldSpec(int, "WebSocket messages relayed browser -> upstream"),
    "dropped_messages": FieldSpec(int, "client messages dropped by the view-only filter"),
    "paste_denied": FieldSpec(int, "clipboard transfers browser -> console the policy dropped"),
    "paste_denied_bytes": FieldSpec(int, "their total length in bytes, as sent (never the content)"),
    "copy_denied": FieldSpec(int, "clipboard transfers console -> browser the policy dropped"),
    "copy_denied_bytes": FieldSpec(int, "their total length in bytes, as sent (never the content)"),
    "upstream": FieldSpec(str, "the upstream host:port (never the URL: it carries the token)"),
    "upstream_address": FieldSpec(str, "the address the upstream connection actually reached, ip:port"),
    "failure": FieldSpec(str, "what stopped a console from opening, one word (cloud_error, ...)", word=True),
    "connect_duration": FieldSpec(float, "seconds to obtain the console URL and connect upstream"),
    "limit": FieldSpec(str, "which limit refused, one word (per_user, global, rate, ...)", word=True),
    "current": FieldSpec(int, "the count at the time of the refusal"),
    "maximum": FieldSpec(int, "the configured limit"),
    "target_user": FieldSpec(str, "the user an admin action was aimed at"),
    "terminated": FieldSpec(int, "how many live sessions the action ended"),
    "outcome": FieldSpec(str, "whether it worked", ("ok", "error")),
    "error": FieldSpec(str, "what went wrong, in words"),
    "changes": FieldSpec(list, "the config sections that changed"),
    # -- session recording
    "recording": FieldSpec(str, "a recording's id (the console_id of the console it recorded)"),
    "reviewers": FieldSpec(list, "the [[policy.reviewers]] entries that let the user watch the recording"),
    "typed_text": FieldSpec(bool, "whether the user may read the recording's typed text"),
    "filters": FieldSpec(list, "which search filters were given (id, user, server, since, until, text)"),
    "results": FieldSpec(int, "how many recordings the search returned"),
    "size": FieldSpec(int, "bytes sent: the recording as stored"),
    "record": FieldSpec(str, "what the policy says of recording the console", ("required", "optional")),
    "record_input": FieldSpec(bool, "whether the console's input (and typed text) is recorded too"),
    "store": FieldSpec(str, "the recording store, one word (local, s3)", word=True),
    # -- moderated consoles
    "moderation": FieldSpec(
        str,
        "a moderated console's state: input held (waiting, paused, leaving), released (moderated), or ended",
        ("waiting", "moderated", "paused", "leaving", "ended"),
    ),
    "moderators": FieldSpec(list, "the moderators watching at the time (display names)"),
}

COMMON_FIELDS: tuple[str, ...] = ("request_id", "user", "groups", "client")
_SERVER = ("server_name", "project_id", "region")
_ACCESS = (
    "access_request",
    "target_user",
    "cloud",
    "server_id",
    "server_name",
    "rule",
    "permission",
    "grant_seconds",
    "justification",
)

EVENTS: dict[str, EventSpec] = {
    "login": EventSpec("a user signed in", required=("user", "method")),
    "login_failed": EventSpec("a sign-in attempt failed", required=("method", "reason")),
    "identity_changed": EventSpec(
        "the identity source now gives a signed-in user other groups or e-mail (groups: the new ones); "
        "their session was updated and their live consoles re-decided",
        required=("user", "method"),
    ),
    "logout": EventSpec(
        "a user signed out (or the session was ended)",
        required=("user",),
        optional=("method", "reason", "terminated"),
    ),
    "console_requested": EventSpec(
        "a user asked for a console (before policy and limits are checked)",
        required=("server_id", "cloud"),
        optional=(*_SERVER, "requested", "justification", "watching"),
    ),
    "console_opened": EventSpec(
        "the relay is up: browser and upstream connected",
        required=("console_id", "server_id", "cloud", "permission", "rule"),
        optional=(*_SERVER, "upstream", "upstream_address", "connect_duration", "justification", "watching"),
    ),
    "console_failed": EventSpec(
        "a console that policy and limits allowed did not open (cloud, upstream, lock or sign-out)",
        required=("console_id", "server_id", "cloud", "failure", "close_code", "reason"),
        optional=(*_SERVER, "permission", "rule", "upstream", "watching"),
    ),
    "console_closed": EventSpec(
        "a console session ended, with its totals",
        required=(
            "console_id",
            "server_id",
            "cloud",
            "permission",
            "duration",
            "bytes_to_browser",
            "bytes_to_upstream",
            "messages_to_browser",
            "messages_to_upstream",
            "closed_by",
            "reason",
        ),
        optional=(
            *_SERVER,
            "rule",
            "close_code",
            "dropped_messages",
            "paste_denied",
            "paste_denied_bytes",
            "copy_denied",
            "copy_denied_bytes",
            "watching",
            "recording",
        ),
    ),
    "console_denied": EventSpec(
        "policy refused a console (rule null: default deny)",
        required=("server_id", "cloud", "rule", "reason"),
        optional=(*_SERVER, "requested", "permission", "console_id", "watching"),
    ),
    "limit_refused": EventSpec(
        "a console was refused by a limit",
        required=("limit", "reason"),
        optional=(
            "server_id",
            "cloud",
            *_SERVER,
            "console_id",
            "permission",
            "rule",
            "current",
            "maximum",
            "watching",
        ),
    ),
    "admin_terminate": EventSpec(
        "an admin ended one console session (console_id) or all of a user's (target_user)",
        optional=("console_id", "target_user", "server_id", "cloud", *_SERVER, "reason", "terminated"),
        require_any=("console_id", "target_user"),
    ),
    "admin_lock": EventSpec(
        "an admin locked a server or a user out of consoles",
        required=("reason",),
        optional=("server_id", "cloud", *_SERVER, "target_user", "terminated"),
        require_any=("server_id", "target_user"),
    ),
    "admin_unlock": EventSpec(
        "an admin lifted a lock",
        optional=("server_id", "cloud", *_SERVER, "target_user", "reason"),
        require_any=("server_id", "target_user"),
    ),
    "access_requested": EventSpec(
        "a user asked for just-in-time access to a server (target_user: the requester)",
        required=_ACCESS,
    ),
    "access_approved": EventSpec(
        "an approver approved an access request: a grant until grant_seconds from now", required=_ACCESS
    ),
    "access_denied": EventSpec("an approver denied an access request", required=_ACCESS),
    "console_moderation": EventSpec(
        "a moderated console changed state (user: the owner; when a moderator ended it, the moderator)",
        required=("console_id", "server_id", "cloud", "moderation", "moderators", "reason"),
        optional=(*_SERVER, "rule", "target_user"),
    ),
    "join_requested": EventSpec(
        "a user asked to watch a live console (watching: it; target_user: its owner); rule null: admin",
        required=("watching", "watch_id", "target_user", "server_id", "cloud", "rule", "reason"),
        optional=(*_SERVER, "console_id"),
    ),
    "join_approved": EventSpec(
        "the owner approved a request to watch their console (user: the owner; target_user: the observer)",
        required=("watching", "watch_id", "target_user"),
        optional=("server_id", "cloud", *_SERVER),
    ),
    "join_refused": EventSpec(
        "a request to watch was refused by the owner (user: the owner) or timed out (closed_by: timeout)",
        required=("watching", "watch_id", "target_user", "closed_by"),
        optional=("server_id", "cloud", *_SERVER),
    ),
    "observer_joined": EventSpec(
        "an observer's view of a live console is up (console_id: the observer's; target_user: the owner)",
        required=("console_id", "watching", "watch_id", "target_user", "server_id", "cloud"),
        optional=_SERVER,
    ),
    "observer_left": EventSpec(
        "an observer's view ended (closed_by: browser, owner_closed, ...)",
        required=("console_id", "watching", "watch_id", "target_user", "closed_by", "duration"),
        optional=("server_id", "cloud", *_SERVER, "reason"),
    ),
    "recording_started": EventSpec(
        "a console's recording began: its header is in the store (recording: its id, the console's)",
        required=("console_id", "recording", "server_id", "cloud", "record", "record_input", "store"),
        optional=_SERVER,
    ),
    "recording_failed": EventSpec(
        "a console's recording could not start or could not go on (reason); a required one's console "
        "did not open or closed with 4534, an optional one's went on unrecorded",
        required=("console_id", "server_id", "cloud", "record", "store", "reason"),
        optional=(*_SERVER, "recording"),
    ),
    "recording_deleted": EventSpec(
        "the gateway deleted a recording whose retention ran out (target_user: who was recorded)",
        required=("recording", "reason"),
        optional=("target_user", "server_id", "cloud", "server_name"),
    ),
    "recording_played": EventSpec(
        "a reviewer opened a recording in the player (target_user: who was recorded); once per user and "
        "recording per 15 minutes",
        required=("recording", "target_user", "cloud", "server_id", "reviewers", "typed_text"),
        optional=("server_name",),
    ),
    "recording_downloaded": EventSpec(
        "a reviewer downloaded a recording as stored (target_user: who was recorded)",
        required=("recording", "target_user", "cloud", "server_id", "reviewers", "size"),
        optional=("server_name",),
    ),
    "recording_searched": EventSpec(
        "a reviewer listed or searched recordings (the typed text searched for is never written)",
        required=("filters", "results"),
    ),
    "config_reloaded": EventSpec(
        "the configuration was reloaded (SIGHUP or admin)",
        required=("outcome",),
        optional=("changes", "terminated", "error"),
    ),
}

# Fields that may be null when required: a default deny has no rule.
NULLABLE: frozenset[str] = frozenset({"rule", *COMMON_FIELDS})

_URL_QUERY = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)[?#]\S*")
_SECRET_PARAM = re.compile(
    r"\b((?:access_|id_|refresh_)?token|code|password|passwd|secret|signature|sig|key)=[^&\s]+", re.I
)
REDACTED = "[redacted]"
WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def scrub(text: str) -> str:
    """Cut query strings off URLs and blank `token=...`-like pairs: a leak in a reason string stops here."""
    text = _URL_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


def format_ts(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _check_value(event: str, name: str, value: object) -> object:
    spec = FIELDS[name]
    if value is None:
        if name in NULLABLE:
            return None
        raise ValueError(f"audit event {event}: field {name} must not be null")
    if spec.type is list:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
            raise ValueError(f"audit event {event}: field {name} must be a list of strings")
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if not all(isinstance(item, str) for item in items):
            raise ValueError(f"audit event {event}: field {name} must be a list of strings")
        return [scrub(item) for item in items]
    if spec.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"audit event {event}: field {name} must be a finite number")
        return round(float(value), 3)
    if spec.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"audit event {event}: field {name} must be an integer")
        return value
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"audit event {event}: field {name} must be true or false")
        return value
    if not isinstance(value, str):  # StrEnum members pass and are written as their value
        raise ValueError(f"audit event {event}: field {name} must be a string")
    value = str(value)
    if spec.choices and value not in spec.choices:
        raise ValueError(f"audit event {event}: field {name} must be one of {', '.join(spec.choices)}")
    if spec.word and not WORD.fullmatch(value):
        raise ValueError(f"audit event {event}: field {name} must be one short lower-case word")
    return scrub(value)


def build_record(event: str, ts: str, fields: dict[str, object]) -> dict[str, object]:
    """Validate and order one record; ValueError names the event and the field (never echoes a value)."""
    spec = EVENTS.get(event)
    if spec is None:
        raise ValueError(f"unknown audit event {event!r}")
    allowed = {*COMMON_FIELDS, *spec.required, *spec.optional}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"audit event {event}: unknown field(s) {', '.join(unknown)}")
    missing = [name for name in spec.required if name not in fields]
    if missing:
        raise ValueError(f"audit event {event}: missing field(s) {', '.join(missing)}")
    if spec.require_any and all(fields.get(name) is None for name in spec.require_any):
        raise ValueError(f"audit event {event}: give at least one of {', '.join(spec.require_any)}")
    record: dict[str, object] = {"ts": ts, "event": event}
    for name in COMMON_FIELDS:
        record[name] = _check_value(event, name, fields.get(name))
    for name in (*spec.required, *spec.optional):
        if name in fields and name not in COMMON_FIELDS:
            value = fields[name]
            if value is None and name not in spec.required:
                continue  # an optional field given as None is simply left out
            record[name] = _check_value(event, name, value)
    return record


class AuditLog:
    """Append-only JSON lines to a file, or to stdout with target "-".

    A file is opened with O_APPEND (mode 0640 when created) and each line goes out in one unbuffered
    write: nothing sits in a buffer to be lost or half-written later, and writers in several processes
    never interleave within a line. `reopen()` starts a new file after logrotate moved the old one away
    (the app calls it on SIGHUP).
    I/O errors are logged and counted in `write_errors`, not raised: losing a line must not kill a session.
    Schema errors (ValueError) are raised: they are programming errors and tests must see them.
    """

    def __init__(self, target: str = "-", *, clock: Callable[[], float] = time.time) -> None:
        self.target = target
        self.write_errors = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
        if target != "-":
            self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _write(self, line: str) -> None:
        if self._fd is None:
            # stdout is looked up per write so a replaced sys.stdout (tests, daemons) is honoured.
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        data = memoryview(line.encode("utf-8"))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def emit(self, event: str, **fields: object) -> dict[str, object]:
        record = build_record(event, format_ts(self._clock()), fields)
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        line = json_line(text) + "\n"  # one line even for NEL / U+2028 in a reason
        with self._lock:
            if self._closed:  # late events during shutdown: say so, do not crash the caller
                self.write_errors += 1
                log.error("audit: event %s after close, not written", event)
                return record
            try:
                self._write(line)
            except (OSError, ValueError) as exc:  # ValueError: a closed sys.stdout
                self.write_errors += 1
                log.error("audit: cannot write event %s to %s: %s", event, self.target, exc)
        return record

    def reopen(self) -> None:
        """Start a new file at the same path (after rotation); a no-op for stdout."""
        if self.target == "-":
            return
        with self._lock:
            if self._closed:
                return
            old = self._fd
            try:
                self._fd = self._open()
            except OSError as exc:
                self.write_errors += 1
                log.error("audit: cannot reopen %s: %s (still writing to the old file)", self.target, exc)
                return
            if old is not None:
                os.close(old)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
