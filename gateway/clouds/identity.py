"""Keystone v3 identity, sans-IO: request bodies, token responses, the catalog, errors and backoff.

Both Huawei IAM and OpenStack Keystone speak Keystone v3 (`POST /v3/auth/tokens`, token in the
`X-Subject-Token` header). Their failures are the gateway's own credential problems, so they have a table of
their own (never the compute API's "no such server"), and after the identity service rejects the gateway's
password or application credential the gateway waits before trying again: identity services lock accounts
after repeated failures, and one attempt per user action would get there quickly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.wire import RawResponse, parse_error_body, parse_retry_after, throttled_message

__all__ = [
    "CatalogEndpoint",
    "IdentityBackoff",
    "IssuedToken",
    "application_credential_body",
    "choose_endpoint",
    "identity_error",
    "normalise_identity_url",
    "parse_token_response",
    "password_body",
]

REJECTED = "the cloud identity service rejected the gateway's own credentials (not yours)"
WRONG_URL = "the gateway's identity service address is wrong (no /v3/auth/tokens there)"

# status -> (kind, what the operator reads)
_BY_STATUS: dict[int, tuple[CloudErrorKind, str]] = {
    400: (CloudErrorKind.AUTH, "the identity service refused the gateway's sign-in request as malformed"),
    401: (CloudErrorKind.AUTH, REJECTED),
    403: (CloudErrorKind.AUTH, "the gateway's cloud account may not sign in to the configured project"),
    404: (CloudErrorKind.AUTH, WRONG_URL),
    405: (CloudErrorKind.AUTH, WRONG_URL),
}


def normalise_identity_url(url: str) -> str:
    """The identity service's base URL: `https://h`, `https://h/`, `https://h/v3` and `https://h/v3/` are
    all written in the wild; the gateway appends `/v3/auth/tokens` itself."""
    url = url.strip().rstrip("/")
    if url.endswith("/v3"):
        url = url[: -len("/v3")].rstrip("/")
    return url


def identity_error(resp: RawResponse) -> CloudError:
    """A failed identity request as the gateway's credential problem (sans-IO)."""
    parsed = parse_error_body(resp.body)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    request_id = headers.get("x-openstack-request-id") or headers.get("x-request-id") or parsed.request_id
    retry_after = parse_retry_after(headers.get("retry-after"))
    if resp.status == 429:
        kind, message = CloudErrorKind.THROTTLED, throttled_message(retry_after)
    elif resp.status in _BY_STATUS:
        kind, message = _BY_STATUS[resp.status]
    elif resp.status >= 500:
        kind, message = CloudErrorKind.UNREACHABLE, "the cloud identity service is unavailable"
    else:
        kind = CloudErrorKind.INVALID_RESPONSE
        message = f"the cloud identity service answered with HTTP {resp.status}"
    return CloudError(
        kind,
        message,
        code=f"identity_{resp.status}",
        request_id=request_id,
        status=resp.status,
        retry_after=retry_after,
        upstream_message=parsed.message,
    )


def _invalid(what: str) -> CloudError:
    return CloudError(
        CloudErrorKind.INVALID_RESPONSE,
        "the cloud identity service sent a response the gateway cannot use",
        upstream_message=what,
    )


def password_body(*, user: str, password: str, user_domain: str, project_id: str) -> bytes:
    """Password method, project-scoped by id; the user's domain by name (IAM: the account name)."""
    doc = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": password, "domain": {"name": user_domain}}},
            },
            "scope": {"project": {"id": project_id}},
        }
    }
    return json.dumps(doc).encode()


def application_credential_body(*, credential_id: str, secret: str) -> bytes:
    """Application-credential method; the credential carries its own project scope (none may be given)."""
    doc = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": credential_id, "secret": secret},
            }
        }
    }
    return json.dumps(doc).encode()


@dataclass(frozen=True, slots=True)
class CatalogEndpoint:
    service_type: str
    interface: str
    region: str
    url: str


@dataclass(frozen=True)
class IssuedToken:
    """A token as issued. Its repr never shows the token."""

    token: str = field(repr=False)
    expires_at: datetime
    project_id: str | None
    catalog: tuple[CatalogEndpoint, ...] = ()


def parse_token_response(headers: Mapping[str, str], body: bytes) -> IssuedToken:
    """`201` + `X-Subject-Token` + `{"token": {"expires_at", "project", "catalog"}}` -> IssuedToken."""
    token = next((v for k, v in headers.items() if k.lower() == "x-subject-token"), "").strip()
    if not token:
        raise _invalid("no X-Subject-Token header")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _invalid("token response is not valid JSON") from None
    token_doc = doc.get("token") if isinstance(doc, dict) else None
    if not isinstance(token_doc, dict):
        token_doc = {}
    expires_raw = token_doc.get("expires_at")
    if not isinstance(expires_raw, str):
        raise _invalid("token.expires_at is missing or not a string")
    try:
        expires_at = datetime.fromisoformat(expires_raw)
    except ValueError:
        raise _invalid("token.expires_at is not an ISO 8601 time") from None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    project = token_doc.get("project")
    project_id = project.get("id") if isinstance(project, dict) else None
    return IssuedToken(
        token=token,
        expires_at=expires_at,
        project_id=project_id if isinstance(project_id, str) else None,
        catalog=_parse_catalog(token_doc.get("catalog")),
    )


def _parse_catalog(raw: object) -> tuple[CatalogEndpoint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _invalid("token.catalog is not a list")
    out: list[CatalogEndpoint] = []
    for service in raw:
        if not isinstance(service, dict) or not isinstance(service.get("endpoints"), list):
            raise _invalid("token.catalog has an entry without an endpoints list")
        kind = service.get("type")
        for ep in service["endpoints"]:
            if not isinstance(ep, dict):
                raise _invalid("token.catalog has an endpoint that is not an object")
            url, interface = ep.get("url"), ep.get("interface")
            region = ep.get("region_id") or ep.get("region") or ""
            if isinstance(kind, str) and isinstance(url, str) and isinstance(interface, str):
                out.append(CatalogEndpoint(kind, interface, region if isinstance(region, str) else "", url))
    return tuple(out)


def choose_endpoint(
    catalog: tuple[CatalogEndpoint, ...], *, service_type: str, interface: str, region: str
) -> str:
    """The one `service_type` endpoint with this interface in this region; an AUTH error naming what the
    catalog lacks otherwise (the fix is in the gateway's configuration, so it is the operator's to see)."""
    of_type = [e for e in catalog if e.service_type == service_type]
    if not of_type:
        raise CloudError(
            CloudErrorKind.AUTH,
            f"the cloud's service catalog has no {service_type} service for the gateway's account",
        )
    matches = [e for e in of_type if e.interface == interface and e.region == region]
    if not matches:
        offered = sorted({f"{e.interface}@{e.region or '-'}" for e in of_type})
        raise CloudError(
            CloudErrorKind.AUTH,
            f"the cloud's service catalog has no {interface} {service_type} endpoint in region {region}",
            upstream_message="offered: " + ", ".join(offered),
        )
    return matches[0].url


class IdentityBackoff:
    """After the identity service rejects the gateway's credentials: wait `base`, then twice as long after
    each further rejection, at most `cap`; any accepted sign-in resets it. Sans-IO: the caller passes the
    time (monotonic seconds)."""

    def __init__(self, *, base: float = 30.0, cap: float = 900.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.until = 0.0

    def remaining(self, now: float) -> float:
        """Seconds before the next sign-in attempt is allowed; 0 when it is."""
        return max(0.0, self.until - now) if self.failures else 0.0

    def rejected(self, now: float) -> float:
        """Record a rejection; returns the wait before the next attempt."""
        self.failures += 1
        wait = min(self.cap, self.base * (2 ** min(self.failures - 1, 30)))
        self.until = now + wait
        return wait

    def accepted(self) -> None:
        self.failures = 0
        self.until = 0.0

    @staticmethod
    def describe(wait: float) -> str:
        return f"{REJECTED}; the gateway waits {max(1, math.ceil(wait))} s before signing in again"
