"""What crosses the wire to and from a cloud API, sans-IO and provider-neutral: the request as sent, the
response as read, error bodies (Huawei's and OpenStack's shapes), Retry-After and which statuses a retry
can help."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from gateway.clouds.base import CloudErrorKind

__all__ = [
    "ErrorBody",
    "RawResponse",
    "SignedRequest",
    "is_retryable_status",
    "kind_by_status",
    "parse_error_body",
    "parse_retry_after",
    "throttled_message",
]


@dataclass(frozen=True)
class SignedRequest:
    """What to put on the wire. `url` is already percent-encoded: send it without re-encoding."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


# Error bodies are small; anything we keep of one for the log is bounded again in CloudError.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class RawResponse:
    """An HTTP response as read from the wire (body already capped)."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class ErrorBody:
    code: str | None = None
    message: str | None = None
    request_id: str | None = None


def _str_or_none(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_error_body(body: bytes) -> ErrorBody:
    """Best effort: an unparseable body yields an empty ErrorBody, never an exception."""
    if not body or len(body) > _MAX_ERROR_BODY:
        return ErrorBody()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return ErrorBody()
    if not isinstance(doc, dict):
        return ErrorBody()
    code = _str_or_none(doc.get("error_code"))
    message = _str_or_none(doc.get("error_msg"))
    request_id = _str_or_none(doc.get("request_id"))
    inner = doc.get("error")
    if code is None and isinstance(inner, dict):
        code = _str_or_none(inner.get("code"))
        message = message or _str_or_none(inner.get("message"))
    if code is None and len(doc) == 1:
        # OpenStack style: {"itemNotFound": {"code": 404, "message": "..."}}
        (only,) = doc.values()
        if isinstance(only, dict):
            message = message or _str_or_none(only.get("message"))
    return ErrorBody(code=code, message=message, request_id=request_id)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None if absent or nonsense."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def throttled_message(retry_after: float | None) -> str:
    if retry_after is None:
        return "the cloud API is throttling, retry in a few seconds"
    return f"the cloud API is throttling, retry in {max(1, math.ceil(retry_after))} s"


def kind_by_status(
    status: int, table: Mapping[int, tuple[CloudErrorKind, str]]
) -> tuple[CloudErrorKind, str]:
    """A compute API's failure by its status: the provider's table, else an internal failure (5xx) or an
    answer the gateway cannot use; one fallback so both providers explain unknown statuses alike."""
    if status in table:
        return table[status]
    if status >= 500:
        return CloudErrorKind.INTERNAL, "the cloud API failed with an internal error"
    return CloudErrorKind.INVALID_RESPONSE, f"the cloud API answered with HTTP {status}"


def is_retryable_status(status: int) -> bool:
    """Only throttling and server-side failures: a 4xx will fail the same way again, and
    repeated 401s lock the access key for five minutes."""
    return status == 429 or 500 <= status <= 599
