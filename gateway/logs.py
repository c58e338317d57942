"""Logging set-up: plain or JSON lines, request ids from a context variable, tokens masked on the way out."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Defence in depth: whatever a message says, query parameters named like credentials never reach a sink.
_SECRET_PARAM = re.compile(
    r"(?i)((?:token|path|signature|secret|password|x-auth-token)(?:=|%3D|:\s*))[^&\s\"',;]+"
)


# What a reader could take for the end of a line or a terminal could act on: C0 (LF, CR, ESC, ...), DEL, C1
# (NEL, ...), and the Unicode line and paragraph separators (str.splitlines() breaks on all of these).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Of those, what json.dumps(ensure_ascii=False) leaves raw; it can only occur inside a JSON string.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def scrub(text: str) -> str:
    return _SECRET_PARAM.sub(r"\1***", text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(text: str) -> str:
    """`text` with every control character escaped (`\\n`, `\\x1b`, `\\u2028`): one record, one line,
    whatever a user put into a value (a close reason, a server id from the URL)."""
    return _CONTROL.sub(_escape, text)


def json_line(text: str) -> str:
    """A `json.dumps(..., ensure_ascii=False)` result with the line breaks it leaves raw (NEL, U+2028,
    U+2029) and the other C1 controls written as `\\uXXXX` escapes: still the same JSON, on one line."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class PlainFormatter(logging.Formatter):
    """One line per record, control characters escaped; a traceback follows on lines of its own, each
    indented, so every line that starts at column 0 starts a record the gateway wrote."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # Not super().format(): it caches the traceback text on the record, shared with other handlers.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = one_line(self.formatMessage(record))
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            text += "".join(f"\n    {one_line(line)}" for line in block.split("\n"))
        return scrub(text)


class JSONFormatter(logging.Formatter):
    """One JSON object per line. Values are masked before encoding: masking the encoded text could take
    the backslash of an escaped quote and leave the line unparseable."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json_line(json.dumps(entry, ensure_ascii=False))


def setup_logging(fmt: str = "plain", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    handler.setFormatter(JSONFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats request lines (with query strings); ours is the audit trail.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
