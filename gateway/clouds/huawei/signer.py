"""Huawei Cloud API Gateway AK/SK signing (SDK-HMAC-SHA256), sans-IO.

Both sides live here: `sign_request` for the client and `verify_request` for the simulator, built
on the same canonical-request functions so the two cannot drift apart.

Canonical request = METHOD, URI, QUERY, HEADERS, SIGNED, hex(sha256(body)), joined by newlines.
The URI is every path segment percent-encoded (only `~` and unreserved characters kept) and always
ends in `/`; the query is sorted and sent on the wire exactly as it was signed, because the gateway
re-derives it from what it receives.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from gateway.clouds.wire import SignedRequest

__all__ = [
    "ALGORITHM",
    "DATE_FORMAT",
    "DATE_HEADER",
    "AuthorizationHeader",
    "Credentials",
    "SignatureError",
    "SignedRequest",
    "authorization_value",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "encode",
    "format_sdk_date",
    "parse_authorization",
    "parse_query",
    "parse_sdk_date",
    "sign_request",
    "signature",
    "string_to_sign",
    "verify_request",
    "wire_path",
]

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_HASH = hashlib.sha256(b"").hexdigest()

# Besides host and x-sdk-date, the headers the official SDK signs when a request carries them.
OPTIONAL_SIGNED = ("content-type", "x-project-id", "x-security-token")


@dataclass(frozen=True)
class Credentials:
    """An access key pair; `security_token` is set for temporary (STS) credentials."""

    access_key: str
    secret_key: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise ValueError("access_key and secret_key must both be non-empty")


class SignatureError(Exception):
    """Verification failed; `code` is the API gateway error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(text: str) -> str:
    """Percent-encode everything but RFC 3986 unreserved characters (`~` included)."""
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Decode, re-encode each segment, and end with `/` whatever the wire path does."""
    uri = "/".join(encode(segment) for segment in unquote(path or "/").split("/"))
    return uri if uri.endswith("/") else uri + "/"


def wire_path(path: str) -> str:
    """The path to send: the canonical segments, without the forced trailing slash."""
    return "/".join(encode(segment) for segment in unquote(path or "/").split("/")) or "/"


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Split a raw query into decoded pairs; `a` and `a=` both mean an empty value.

    `+` is taken literally (not as a space): the signer encodes spaces as `%20`, so a `+` on the
    wire only ever comes from a literal plus.
    """
    pairs: list[tuple[str, str]] = []
    for item in raw.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Sorted by key, then value (as the official SDK does), each side encoded."""
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(pairs))


def _hash_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if data else EMPTY_BODY_HASH


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """`headers` maps lowercase names to values; `signed_headers` are lowercase and sorted."""
    lines = []
    for name in signed_headers:
        if name not in headers:
            raise SignatureError("APIGW.0301", f"signed header {name!r} is missing")
        lines.append(f"{name}:{headers[name].strip()}\n")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            "".join(lines),
            ";".join(signed_headers),
            _hash_hex(body),
        ]
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_value(access_key: str, signed_headers: Sequence[str], sig: str) -> str:
    return f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed_headers)}, Signature={sig}"


def format_sdk_date(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(DATE_FORMAT)


def parse_sdk_date(value: str) -> datetime:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)


def _host_of(url_host: str | None, port: int | None, scheme: str) -> str:
    if not url_host:
        raise ValueError("the URL has no host")
    host = f"[{url_host}]" if ":" in url_host else url_host
    if port is not None and port != {"https": 443, "http": 80}.get(scheme):
        host = f"{host}:{port}"
    return host


def sign_request(
    creds: Credentials,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
) -> SignedRequest:
    """Sign one request. Headers other than the signable ones pass through unsigned.

    An `X-Sdk-Date` or `Host` already in `headers` is used as given (that is how the published
    test vector fixes the date); otherwise they are derived from `now` and the URL.
    """
    parts = urlsplit(url)
    out: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in ("authorization", "x-security-token"):
            continue  # ours to set
        out[name] = value.strip()
        lowered[name.lower()] = value.strip()
    if "host" not in lowered:
        out["Host"] = lowered["host"] = _host_of(parts.hostname, parts.port, parts.scheme)
    if "x-sdk-date" not in lowered:
        out[DATE_HEADER] = lowered["x-sdk-date"] = format_sdk_date(now or datetime.now(UTC))
    if creds.security_token is not None:
        out["X-Security-Token"] = lowered["x-security-token"] = creds.security_token.strip()

    signed = sorted({"host", "x-sdk-date", *(h for h in OPTIONAL_SIGNED if h in lowered)})
    pairs = parse_query(parts.query)
    canonical = canonical_request(method, parts.path, pairs, lowered, signed, body)
    sig = signature(creds.secret_key, string_to_sign(canonical, lowered["x-sdk-date"]))
    out["Authorization"] = authorization_value(creds.access_key, signed, sig)
    wire = urlunsplit((parts.scheme, parts.netloc, wire_path(parts.path), canonical_query(pairs), ""))
    return SignedRequest(method=method.upper(), url=wire, headers=out, body=body)


@dataclass(frozen=True)
class AuthorizationHeader:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


_AUTH_RE = re.compile(
    rf"^{re.escape(ALGORITHM)} Access=(?P<ak>[^,\s]+), ?"
    r"SignedHeaders=(?P<sh>[^,\s]+), ?Signature=(?P<sig>[0-9a-f]+)$"
)


def parse_authorization(value: str) -> AuthorizationHeader:
    match = _AUTH_RE.match(value.strip())
    if not match:
        raise SignatureError("APIGW.0301", "malformed Authorization header")
    return AuthorizationHeader(match["ak"], tuple(match["sh"].split(";")), match["sig"])


def verify_request(
    lookup_secret: Callable[[str], str | None],
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
) -> str:
    """Check a received request's signature; returns the access key or raises SignatureError.

    `raw_path` is the path and query exactly as received; `headers` is case-insensitive or
    lowercase-keyed. Codes follow the API gateway: APIGW.0301 for a bad or unknown key or
    signature, APIGW.0303 for a date too far from `now`.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    auth = parse_authorization(lowered.get("authorization", ""))
    signed = auth.signed_headers
    if list(signed) != sorted(signed) or not {"host", "x-sdk-date"} <= set(signed):
        raise SignatureError("APIGW.0301", "SignedHeaders must be sorted and include host and x-sdk-date")
    try:
        sent_at = parse_sdk_date(lowered.get("x-sdk-date", ""))
    except ValueError:
        raise SignatureError("APIGW.0301", "missing or malformed X-Sdk-Date") from None
    if abs(now - sent_at) > max_skew:
        raise SignatureError("APIGW.0303", "the request's X-Sdk-Date is too far from the server's clock")
    secret = lookup_secret(auth.access_key)
    if secret is None:
        raise SignatureError("APIGW.0301", "unknown access key")
    path, _, query = raw_path.partition("?")
    canonical = canonical_request(method, path, parse_query(query), lowered, signed, body)
    expected = signature(secret, string_to_sign(canonical, lowered["x-sdk-date"]))
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("APIGW.0301", "signature mismatch")
    return auth.access_key
