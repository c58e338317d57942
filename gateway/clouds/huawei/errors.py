"""Huawei Cloud error responses -> CloudError, sans-IO.

Two body shapes reach us: ECS's own `{"error": {"code", "message"}}` and the API gateway's
`{"error_code", "error_msg", "request_id"}` (IAM adds Keystone's `{"error": {"code": 401, ...}}`).
The raw code and request id go to the log line; the operator gets plain language.
"""

from __future__ import annotations

from datetime import datetime

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.wire import (
    ErrorBody,
    RawResponse,
    is_retryable_status,
    kind_by_status,
    parse_error_body,
    parse_retry_after,
    throttled_message,
)

__all__ = [
    "ErrorBody",
    "RawResponse",
    "error_from_response",
    "is_retryable_status",
    "parse_error_body",
    "parse_retry_after",
    "throttled_message",
]

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


def error_from_response(resp: RawResponse, *, now: datetime | None = None) -> CloudError:
    parsed = parse_error_body(resp.body)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    request_id = parsed.request_id or headers.get("x-request-id") or headers.get("x-openstack-request-id")
    retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    if resp.status == 429 or parsed.code == "APIGW.0308":
        kind, message = CloudErrorKind.THROTTLED, throttled_message(retry_after)
    elif parsed.code in _BY_CODE:
        kind, message = _BY_CODE[parsed.code]
    else:
        kind, message = kind_by_status(resp.status, _BY_STATUS)
    return CloudError(
        kind,
        message,
        code=parsed.code,
        request_id=request_id,
        status=resp.status,
        retry_after=retry_after,
        upstream_message=parsed.message,
    )
