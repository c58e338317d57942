"""Huawei Cloud error responses -> CloudError, sans-IO.

Two body shapes reach us: ECS's own `{"error": {"code", "message"}}` and the API gateway's
`{"error_code", "error_msg", "request_id"}` (IAM adds Keystone's `{"error": {"code": 401, ...}}`).
The raw code and request id go to the log line; the operator gets plain language.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from gateway.clouds.base import CloudError, CloudErrorKind

__all__ = [
    "ErrorBody",
    "RawResponse",
    "error_from_response",
    "is_retryable_status",
    "parse_error_body",
    "parse_retry_after",
    "throttled_message",
]

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


# code -> (kind, operator message)
_BY_CODE: dict[str, tuple[CloudErrorKind, str]] = {
    "Ecs.0114": (CloudErrorKind.NOT_FOUND, "no such server in this project"),
    "Ecs.0614": (CloudErrorKind.NOT_FOUND, "no such server in this project"),
    "Ecs.0003": (CloudErrorKind.FORBIDDEN, "the gateway has no permission in this project"),
    "Ecs.0005": (CloudErrorKind.BAD_REQUEST, "the cloud API rejected the request as invalid"),
    "Ecs.0100": (CloudErrorKind.BAD_STATE, "the server's current state does not allow a console"),
    "Ecs.0605": (CloudErrorKind.LOCKED, "the server is locked"),
    "APIGW.0101": (
        CloudErrorKind.BAD_REQUEST,
        "the cloud endpoint does not offer this API (check the configured endpoint and region)",
    ),
    "APIGW.0301": (CloudErrorKind.AUTH, "the gateway's cloud credentials were rejected"),
    "APIGW.0302": (CloudErrorKind.FORBIDDEN, "the gateway has no permission in this project"),
    "APIGW.0303": (
        CloudErrorKind.AUTH,
        "the cloud API rejected the request signature as expired (check the gateway's clock)",
    ),
}

_BY_STATUS: dict[int, tuple[CloudErrorKind, str]] = {
    400: (CloudErrorKind.BAD_REQUEST, "the cloud API rejected the request as invalid"),
    401: (CloudErrorKind.AUTH, "the gateway's cloud credentials were rejected"),
    403: (CloudErrorKind.FORBIDDEN, "the gateway has no permission in this project"),
    404: (CloudErrorKind.NOT_FOUND, "no such server in this project"),
    409: (CloudErrorKind.BAD_STATE, "the server's current state does not allow a console"),
    502: (CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
    503: (CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
    504: (CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
}


def is_retryable_status(status: int) -> bool:
    """Only throttling and server-side failures: a 4xx will fail the same way again, and
    repeated 401s lock the access key for five minutes."""
    return status == 429 or 500 <= status <= 599


def error_from_response(resp: RawResponse, *, now: datetime | None = None) -> CloudError:
    parsed = parse_error_body(resp.body)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    request_id = parsed.request_id or headers.get("x-request-id") or headers.get("x-openstack-request-id")
    retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    if resp.status == 429 or parsed.code == "APIGW.0308":
        kind, message = CloudErrorKind.THROTTLED, throttled_message(retry_after)
    elif parsed.code in _BY_CODE:
        kind, message = _BY_CODE[parsed.code]
    elif resp.status in _BY_STATUS:
        kind, message = _BY_STATUS[resp.status]
    elif resp.status >= 500:
        kind, message = CloudErrorKind.INTERNAL, "the cloud API failed with an internal error"
    else:
        kind, message = CloudErrorKind.INVALID_RESPONSE, f"the cloud API answered with HTTP {resp.status}"
    return CloudError(
        kind,
        message,
        code=parsed.code,
        request_id=request_id,
        status=resp.status,
        retry_after=retry_after,
        upstream_message=parsed.message,
    )
