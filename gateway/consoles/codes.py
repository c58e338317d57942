"""Every WebSocket close code the gateway sends the browser, defined once: its name, the title the console
page shows (static/js/console.js `CLOSE_TITLES`) and the default reason (the text under the title; a
caller may send a more precise one, such as the cloud's own cause). README's close-code table is this
table too; tests/unit/test_close_codes.py checks the page and the README against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["CODES", "CloseCode"]


@dataclass(frozen=True, slots=True)
class CloseCode:
    code: int
    name: str
    title: str  # the console page's heading for it
    reason: str  # the reason sent when the caller has no more precise one


CODES: Final[dict[int, CloseCode]] = {}


def _define(code: int, name: str, title: str, reason: str) -> int:
    CODES[code] = CloseCode(code, name, title, reason)
    return code


CLOSE_NORMAL: Final = _define(1000, "normal", "Console closed", "")
CLOSE_GOING_AWAY: Final = _define(1001, "going_away", "Console closed", "The gateway is shutting down")
CLOSE_INTERNAL: Final = _define(1011, "internal", "Gateway error", "Internal gateway error")
CLOSE_TERMINATED: Final = _define(
    4000, "terminated", "Closed by an administrator", "An administrator closed this console"
)
CLOSE_LOGGED_OUT: Final = _define(
    4001, "logged_out", "You signed out", "You signed out; the console was closed"
)
CLOSE_LOCKED: Final = _define(4002, "locked", "Account locked", "Your account was locked by an administrator")
CLOSE_POLICY: Final = _define(
    4003, "policy", "Permission changed", "Your permission on this server changed; reopen the console"
)
CLOSE_SIGNIN_EXPIRED: Final = _define(
    4004, "signin_expired", "Sign-in expired", "Your sign-in expired; sign in again to reopen the console"
)
CLOSE_MODERATION: Final = _define(  # a moderator ended it, or its moderators left (on_leave = "terminate")
    4005, "moderation", "Closed by moderation", "This console needs a moderator watching; it was closed"
)
CLOSE_OWNER_CLOSED: Final = _define(  # an observer's view ends with the console it watched
    4006, "owner_closed", "The watched console ended", "The console you were watching ended"
)
CLOSE_DRAINING: Final = _define(
    4012, "draining", "Gateway restarting", "The gateway is restarting; reconnect in a moment"
)
CLOSE_PROTOCOL_ERROR: Final = _define(4400, "protocol_error", "Protocol error", "protocol error")
CLOSE_UNAUTHENTICATED: Final = _define(
    4401, "unauthenticated", "Not signed in", "Your sign-in has expired; sign in again"
)
CLOSE_DENIED: Final = _define(4403, "denied", "Not allowed", "You may not open this console")
CLOSE_NOT_FOUND: Final = _define(4404, "not_found", "No such server", "No such cloud is configured")
CLOSE_STEP_UP: Final = _define(
    4407, "step_up", "Fresh sign-in required", "This console needs a more recent or stronger sign-in"
)
CLOSE_IDLE: Final = _define(4408, "idle", "Closed after inactivity", "Closed after a time without input")
CLOSE_MAX_DURATION: Final = _define(
    4409, "max_duration", "Maximum session length reached", "The console reached its maximum duration"
)
CLOSE_LINK_EXPIRED: Final = _define(
    4410,
    "link_expired",
    "Console link expired",
    "The console link expired or was already used; reconnect for a new one",
)
CLOSE_UNAVAILABLE: Final = _define(
    4423, "unavailable", "Server not available", "The console cannot open: the server is not available"
)
CLOSE_JUSTIFICATION: Final = _define(
    4428, "justification", "A reason is required", "Give a reason to open this console"
)
CLOSE_JOIN_REFUSED: Final = _define(
    4431, "join_refused", "Join refused", "The console's owner refused your request to watch"
)
CLOSE_JOIN_TIMEOUT: Final = _define(
    4432, "join_timeout", "No answer to the join request", "The console's owner did not answer in time"
)
CLOSE_LIMIT: Final = _define(4429, "limit", "Limit reached", "A console limit was reached; try again later")
CLOSE_UPSTREAM_CODE: Final = _define(  # the upstream closed with a code that is not ours to repeat
    4500, "upstream_code", "Console proxy closed", "The console proxy closed the connection"
)
CLOSE_UPSTREAM_LOST: Final = _define(
    4502, "upstream_lost", "Connection to the console lost", "The console connection was lost"
)
CLOSE_CLOUD: Final = _define(4520, "cloud", "Cloud API problem", "The cloud API did not answer as expected")
CLOSE_UPSTREAM_UNREACHABLE: Final = _define(
    4530, "upstream_unreachable", "Console proxy unreachable", "The console proxy cannot be reached"
)
CLOSE_UPSTREAM_TLS: Final = _define(
    4531, "upstream_tls", "Console proxy TLS failure", "The console proxy's certificate is not trusted"
)
CLOSE_UPSTREAM_URL: Final = _define(
    4532,
    "upstream_url",
    "Console address refused",
    "The cloud returned a console address the gateway cannot use",
)
CLOSE_RECORDING: Final = _define(  # required recording could not start, or its store failed mid-console
    4534,
    "recording",
    "Recording failed",
    "This console must be recorded and the recording store is not accepting recordings",
)

REASON_LOGGED_OUT: Final = CODES[CLOSE_LOGGED_OUT].reason
REASON_LOCKED: Final = CODES[CLOSE_LOCKED].reason
REASON_EXPIRED: Final = CODES[CLOSE_LINK_EXPIRED].reason
REASON_LOST: Final = CODES[CLOSE_UPSTREAM_LOST].reason
REASON_MAX_DURATION: Final = CODES[CLOSE_MAX_DURATION].reason
REASON_PROTOCOL: Final = CODES[CLOSE_PROTOCOL_ERROR].reason
REASON_DRAINING: Final = CODES[CLOSE_DRAINING].reason
REASON_STATE_DOWN: Final = "The gateway cannot check limits right now; try again shortly"
