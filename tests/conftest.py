"""Suite-wide: no console token, in any encoding, in anything the whole test run observed.

Every console URL the demo cloud issues (NovncProxy.issue) registers its token with one scanner; every
HTTP response and WebSocket message an in-process aiohttp server sends (gateway and sims alike; the
simulated ECS remote_console and Nova remote-consoles/action answers, the token's legitimate carriers,
excepted), everything an `Operator` received (including the relayed RFB frames, which the relay writes
past send_bytes), every log record, and at the end every file under the run's temporary directories
(audit trails, gateway process logs) are scanned as they pass, and so is every local recording under them,
decrypted and decompressed (tests/support/recordings.py). Nothing is kept but the tokens' forms.
A leak fails the session in teardown, naming where it was seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web_response, web_ws

from gateway.sim.novncproxy import NovncProxy
from tests.support import gateway as gateway_support
from tests.support.audit_schema import validate_line
from tests.support.recordings import decoded_recordings
from tests.support.token_scan import SCANNER, TokenScanner

_FORMATTER = logging.Formatter()


class _ScanHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + _FORMATTER.formatException(record.exc_info)
            SCANNER.scan(text, f"log record of {record.name}")
        except Exception:  # a handler must never break the code that logs
            self.handleError(record)


def _wrap(owner: Any, name: str, make: Any) -> tuple[Any, str, Any]:
    original = getattr(owner, name)
    setattr(owner, name, make(original))
    return owner, name, original


def _issue(original: Any) -> Any:
    def issue(self: NovncProxy, *args: Any, **kwargs: Any) -> str:
        url = original(self, *args, **kwargs)
        SCANNER.add_url(url)
        return url

    return issue


def _seen_add(original: Any) -> Any:
    def add(self: Any, item: object) -> None:
        SCANNER.scan(item if isinstance(item, bytes | str) else str(item), "what an Operator received")
        original(self, item)

    return add


def _prepare(original: Any) -> Any:
    async def prepare(self: web_response.StreamResponse, request: Any) -> Any:
        writer = await original(self, request)
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        SCANNER.scan(f"{self.status} {self.reason}\n{head}", f"response headers for {request.path}")
        return writer

    return prepare


def _carries_token(response: web_response.StreamResponse) -> bool:
    request = getattr(response, "_req", None)
    # ECS's remote_console, Nova's remote-consoles and its os-getVNCConsole server action.
    return request is not None and request.path.endswith(("/remote_console", "/remote-consoles", "/action"))


def _write(original: Any) -> Any:
    async def write(self: web_response.StreamResponse, data: Any = b"", *args: Any, **kwargs: Any) -> Any:
        if data and not _carries_token(self):
            SCANNER.scan(data, "a response body")
        return await original(self, data, *args, **kwargs)

    return write


def _ws_send(original: Any) -> Any:
    async def send(self: web_ws.WebSocketResponse, data: Any, *args: Any, **kwargs: Any) -> Any:
        SCANNER.scan(data, "a WebSocket message to a client")
        return await original(self, data, *args, **kwargs)

    return send


def _ws_close(original: Any) -> Any:
    async def close(self: web_ws.WebSocketResponse, *args: Any, **kwargs: Any) -> Any:
        message = kwargs.get("message", args[1] if len(args) > 1 else b"")
        SCANNER.scan(message or b"", "a WebSocket close reason")
        return await original(self, *args, **kwargs)

    return close


@pytest.fixture(scope="session", autouse=True)
def console_token_never_leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenScanner]:
    patched = [
        _wrap(NovncProxy, "issue", _issue),
        _wrap(gateway_support.Seen, "add", _seen_add),
        _wrap(web_response.StreamResponse, "prepare", _prepare),
        _wrap(web_response.StreamResponse, "write", _write),
        _wrap(web_response.StreamResponse, "write_eof", _write),
        _wrap(web_ws.WebSocketResponse, "send_str", _ws_send),
        _wrap(web_ws.WebSocketResponse, "send_bytes", _ws_send),
        _wrap(web_ws.WebSocketResponse, "close", _ws_close),
    ]
    handler = _ScanHandler(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    gateway_logger = logging.getLogger("gateway")
    old_level = gateway_logger.level
    gateway_logger.setLevel(logging.DEBUG)  # debug lines must be as clean as info lines
    try:
        yield SCANNER
    finally:
        gateway_logger.setLevel(old_level)
        root.removeHandler(handler)
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
        SCANNER.files = SCANNER.scan_tree(Path(tmp_path_factory.getbasetemp()))
        for where, plaintext in decoded_recordings(Path(tmp_path_factory.getbasetemp())):
            SCANNER.scan(plaintext, where)
    leaks = sorted({leak.where for leak in SCANNER.leaks})
    assert not leaks, f"a console token leaked into: {'; '.join(leaks)}"


AUDIT_SEEN: dict[str, int] = {}


@pytest.fixture(scope="session", autouse=True)
def every_audit_line_matches_the_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every audit trail any test wrote (in-process or by a gateway process) is checked at the end."""
    yield
    problems: list[str] = []
    for path in sorted(Path(tmp_path_factory.getbasetemp()).rglob("audit*.jsonl*")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                event = validate_line(line)["event"]
            except AssertionError as exc:
                problems.append(f"{path.name}:{number}: {exc}")
                continue
            AUDIT_SEEN[event] = AUDIT_SEEN.get(event, 0) + 1
    assert not problems, "audit lines off the documented schema:\n" + "\n".join(problems[:20])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if AUDIT_SEEN:
        seen = ", ".join(f"{event} {count}" for event, count in sorted(AUDIT_SEEN.items()))
        terminalreporter.write_line(f"audit schema check: {sum(AUDIT_SEEN.values())} lines valid ({seen})")
    if SCANNER.tokens:
        terminalreporter.write_line(
            f"console-token scan: {SCANNER.tokens} tokens issued, {SCANNER.scanned_items} items / "
            f"{SCANNER.scanned_bytes / 1e6:.1f} MB scanned, {SCANNER.files} files, "
            f"{len(SCANNER.leaks)} leaks"
        )
