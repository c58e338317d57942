"""From an upstream target to an open WebSocket on its console proxy: host allowlist, TLS, connect.

Which console-URL forms a cloud returns is the provider's knowledge (`CloudProvider.console_target`,
`gateway/clouds/console_urls.py`). The target carries a one-time (Huawei) or short-lived (nova) token,
the only secret in this module: it never appears in a repr, an exception text or a log line;
`UpstreamTarget.safe_url()` is the form to log.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import re
import ssl
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import hdrs
from yarl import URL

__all__ = [
    "HostAllowlist",
    "UpstreamError",
    "UpstreamErrorKind",
    "UpstreamTarget",
    "UpstreamURLError",
    "build_ssl_context",
    "normalise_host",
    "open_upstream",
    "peer_address",
    "upstream_session",
]

log = logging.getLogger(__name__)

_DEFAULT_PORT = {"wss": 443, "ws": 80}
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


class UpstreamURLError(ValueError):
    """The console URL cannot be turned into an upstream target.

    The message says what is wrong; it never quotes the URL or the token.
    """


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where the gateway's upstream WebSocket goes. Its repr hides the token."""

    scheme: str  # "ws" | "wss"
    host: str  # lower case, IDNA (ASCII) form; IPv6 without brackets
    port: int
    path: str = "/"
    token: str = field(default="", repr=False)

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if _DEFAULT_PORT.get(self.scheme) == self.port:
            return host
        return f"{host}:{self.port}"

    def url(self) -> str:
        """The real URL, token included: pass it to the connector, nowhere else."""
        return f"{self.scheme}://{self._netloc()}{self.path}?token={quote(self.token, safe='')}"

    def safe_url(self) -> str:
        """The URL with the token masked, for logs and error texts."""
        return f"{self.scheme}://{self._netloc()}{self.path}?token=***"

    def __repr__(self) -> str:
        return f"UpstreamTarget({self.safe_url()!r})"

    __str__ = __repr__


def normalise_host(raw: str) -> str:
    """Lower-case, strip one trailing dot, IDNA-encode; IP literals in canonical form."""
    host = raw.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if not host:
        raise ValueError("empty host")
    if "%" in host:  # zone ids and percent tricks are not hosts we proxy to (ip_address accepts zones)
        raise ValueError("invalid host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise ValueError("host is not a valid international domain name") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError("invalid host name")
    # "127.1", "0x7f.1": resolvers read these as IP addresses; accept only canonical literals.
    if _NUMERIC_LABEL_RE.match(labels[-1]):
        raise ValueError("host looks like a non-canonical IP address")
    return ascii_host


@dataclass(frozen=True, slots=True)
class _Pattern:
    host: str  # for wildcards: the suffix without "*."
    wildcard: bool
    port: int | None


class HostAllowlist:
    """Which console proxies the gateway may connect to: the SSRF guard.

    "host.example.com" matches itself; "*.example.com" matches any depth of subdomain but not
    the apex; IP literals match themselves ("[v6]" to add a port); ":port" limits the port.
    """

    __slots__ = ("_patterns",)

    def __init__(self, patterns: Sequence[str]) -> None:
        if isinstance(patterns, str):
            raise TypeError("patterns must be a sequence of strings, not a string")
        self._patterns = tuple(self._parse(p) for p in patterns)

    @staticmethod
    def _parse(pattern: str) -> _Pattern:
        def bad(why: str) -> ValueError:
            return ValueError(f"invalid upstream host pattern {pattern!r}: {why}")

        text = pattern.strip()
        if not text:
            raise bad("empty")
        port: int | None = None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise bad("unclosed '['")
            host_part, rest = text[1:end], text[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise bad("junk after ']'")
                port = HostAllowlist._port(rest[1:], bad)
            try:
                return _Pattern(str(ipaddress.IPv6Address(host_part)), False, port)
            except ValueError:
                raise bad("not an IPv6 address") from None
        if text.count(":") > 1:
            try:
                return _Pattern(str(ipaddress.IPv6Address(text)), False, None)
            except ValueError:
                raise bad("not an IPv6 address (use [addr]:port)") from None
        if ":" in text:
            text, port_text = text.split(":", 1)
            port = HostAllowlist._port(port_text, bad)
        wildcard = text.startswith("*.")
        if wildcard:
            text = text[2:]
        if "*" in text:
            raise bad("'*' is only allowed as the whole first label, as in '*.example.com'")
        try:
            host = normalise_host(text)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if wildcard:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                pass
            else:
                raise bad("wildcards do not apply to IP addresses")
            if "." not in host:
                raise bad("a wildcard needs at least two labels after '*.'")
        return _Pattern(host, wildcard, port)

    @staticmethod
    def _port(text: str, bad: Callable[[str], ValueError]) -> int:
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise bad("invalid port")
        return int(text)

    def allows(self, host: str, port: int) -> bool:
        try:
            name = normalise_host(host)
        except ValueError:
            return False
        for pat in self._patterns:
            if pat.port is not None and pat.port != port:
                continue
            if pat.wildcard:
                if name.endswith("." + pat.host):
                    return True
            elif name == pat.host:
                return True
        return False

    def __repr__(self) -> str:
        shown = [
            ("*." if p.wildcard else "") + p.host + (f":{p.port}" if p.port else "") for p in self._patterns
        ]
        return f"HostAllowlist({shown!r})"


def build_ssl_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """TLS for the upstream. A `ca_file` replaces the system roots (pin a private CA)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UpstreamErrorKind(enum.Enum):
    NOT_ALLOWED = "not_allowed"
    REFUSED = "refused"
    TLS = "tls"
    TIMEOUT = "timeout"
    HANDSHAKE = "handshake"
    EXPIRED = "expired"
    REDIRECT = "redirect"


_USER_MESSAGES = {
    UpstreamErrorKind.NOT_ALLOWED: "the console proxy's address is not on the gateway's allow-list",
    UpstreamErrorKind.REFUSED: "the console proxy could not be reached",
    UpstreamErrorKind.TLS: "the console proxy's TLS certificate was not trusted",
    UpstreamErrorKind.TIMEOUT: "the console proxy did not answer in time",
    UpstreamErrorKind.HANDSHAKE: "the console proxy refused the WebSocket connection",
    UpstreamErrorKind.EXPIRED: "the console link expired or was already used",
    UpstreamErrorKind.REDIRECT: "the console proxy redirected the gateway elsewhere, which it refuses",
}


class UpstreamError(Exception):
    """Opening the upstream failed. `str()` is log-safe (masked URL, no causes with URLs)."""

    def __init__(self, kind: UpstreamErrorKind, target: UpstreamTarget, detail: str = "") -> None:
        self.kind = kind
        self.user_message = _USER_MESSAGES[kind]
        self.detail = detail
        text = f"{kind.value}: {target.safe_url()}"
        super().__init__(f"{text} ({detail})" if detail else text)


def _ssl_detail(exc: BaseException) -> str:
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
    return f"{type(cause).__name__}: {reason}" if reason else type(cause).__name__


class RedirectRefused(aiohttp.ClientError):
    """A console proxy answered a WebSocket handshake with a redirect (never followed)."""

    def __init__(self, status: int, location_host: str) -> None:
        super().__init__(f"HTTP {status} to {location_host}")
        self.status = status
        self.location_host = location_host


async def _refuse_redirects(
    request: aiohttp.ClientRequest, handler: Callable[[aiohttp.ClientRequest], Any]
) -> aiohttp.ClientResponse:
    """aiohttp's ws_connect follows redirects and has no switch for it; the allowlist is checked on the
    first URL only, so a redirect would carry the console (and the audit's belief about it) elsewhere.
    This client middleware runs for every hop and ends the handshake at the first 3xx."""
    response: aiohttp.ClientResponse = await handler(request)
    if 300 <= response.status < 400:
        location = response.headers.get(hdrs.LOCATION, "")
        response.close()
        raise RedirectRefused(response.status, _location_host(location))
    return response


def _location_host(location: str) -> str:
    """Only the host of a redirect target is logged: its query may carry a token of its own."""
    if not location:
        return "nowhere"
    try:
        return urlsplit(location).hostname or "the same host"
    except ValueError:
        return "an unparsable address"


_GUARDED: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()


def upstream_session() -> aiohttp.ClientSession:
    """The client session for console proxies: redirects refused, no cookies, no connection cap.

    No cookie jar: nova reads a `token` cookie as a fallback, and nothing we call needs cookies.
    No connection cap: every live console holds one upstream connection for its whole life, so
    aiohttp's default of 100 would make console 101 wait (limits.global_max is the real cap).
    """
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0),
        middlewares=(_refuse_redirects,),
    )
    _GUARDED.add(session)
    return session


def peer_address(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The address the bytes actually go to (`ip:port`), for the audit trail; None once closed."""
    peer = ws.get_extra_info("peername")
    if not isinstance(peer, tuple) or len(peer) < 2:
        return None
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def open_upstream(
    http: aiohttp.ClientSession,
    target: UpstreamTarget,
    *,
    allowlist: HostAllowlist,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    max_msg_size: int,
    autoping: bool = True,
) -> aiohttp.ClientWebSocketResponse:
    """Connect to the console proxy as a non-browser client: no Origin, subprotocol `binary`. No
    heartbeat: the relay's keep-alive pings (consoles/keepalive.py), and `autoping=False` leaves the
    pings and pongs to it.

    Errors surface as `UpstreamError` without their cause chained: aiohttp's exception texts
    quote the request URL, token included.
    """
    if not allowlist.allows(target.host, target.port):
        raise UpstreamError(UpstreamErrorKind.NOT_ALLOWED, target)
    if http not in _GUARDED:
        raise ValueError("the upstream client session must come from upstream_session() (redirects)")

    if target.scheme == "wss":
        ssl_param: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    else:
        ssl_param = True  # unused for ws://
    kind: UpstreamErrorKind
    detail: str
    try:
        async with asyncio.timeout(connect_timeout):
            return await http.ws_connect(
                URL(target.url(), encoded=True),
                protocols=("binary",),
                origin=None,
                ssl=ssl_param,
                compress=0,
                autoclose=True,
                autoping=autoping,
                max_msg_size=max_msg_size,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=connect_timeout),
            )
    except RedirectRefused as exc:
        kind, detail = UpstreamErrorKind.REDIRECT, str(exc)
    except TimeoutError:
        kind, detail = UpstreamErrorKind.TIMEOUT, f"no answer within {connect_timeout:g}s"
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
        kind, detail = UpstreamErrorKind.TLS, _ssl_detail(exc)
    except aiohttp.WSServerHandshakeError as exc:
        kind = UpstreamErrorKind.EXPIRED if exc.status in (401, 403, 410) else UpstreamErrorKind.HANDSHAKE
        detail = f"HTTP {exc.status}"
    except aiohttp.ClientConnectorError as exc:
        os_error = exc.os_error
        kind = UpstreamErrorKind.REFUSED
        detail = f"{type(os_error).__name__}: {os_error.strerror or os_error.errno}"
    except aiohttp.ServerDisconnectedError:
        # websockify's token plugins reject an unknown token by dropping the connection
        # before any HTTP response; nova checks later (after the 101), see relay.py.
        kind, detail = UpstreamErrorKind.EXPIRED, "disconnected during the handshake"
    except (aiohttp.ClientError, OSError) as exc:
        kind, detail = UpstreamErrorKind.HANDSHAKE, type(exc).__name__
    log.info("upstream connect failed: %s %s (%s)", kind.value, target.safe_url(), detail)
    raise UpstreamError(kind, target, detail) from None
