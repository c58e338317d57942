"""Console page URLs as clouds return them, parsed into the WebSocket the console proxy serves.

Sans-IO and shared by the providers: each provider's `console_target` says which of these forms its
cloud returns (design notes §2). The console URL carries the token, so no message here quotes it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.upstream import UpstreamTarget, UpstreamURLError, normalise_host

__all__ = ["novnc_page_target"]

_WS_SCHEME = {"https": "wss", "http": "ws"}
_DEFAULT_PORT = {"wss": 443, "ws": 80}
_MAX_TOKEN_LEN = 512
_MAX_URL_LEN = 4096
# vnc_auto.html?token=T (Huawei, plain websockify): the page opens the socket at /websockify.
_WEBSOCKIFY_PATH = "/websockify"
# A path segment we are willing to put on the wire: RFC 3986 pchar, well-formed escapes only.
_SEGMENT_RE = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*")


def _valid_token(token: str) -> bool:
    return 0 < len(token) <= _MAX_TOKEN_LEN and token.isascii() and token.isprintable() and " " not in token


def _split_path_param(value: str) -> tuple[str, list[tuple[str, str]]]:
    """Nova's `path` parameter, already URL-decoded once: 'websockify?token=T' or '?token=T'."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value) or "\\" in value:
        raise UpstreamURLError("the console URL's path parameter contains invalid characters")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        raise UpstreamURLError("the console URL's path parameter must be a relative path")
    if parts.fragment:
        raise UpstreamURLError("the console URL's path parameter must not carry a fragment")
    segments = parts.path.lstrip("/").split("/") if parts.path.lstrip("/") else []
    for segment in segments:
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise UpstreamURLError("the console URL's path parameter escapes its directory")
        if not _SEGMENT_RE.fullmatch(segment):
            raise UpstreamURLError("the console URL's path parameter contains invalid characters")
    path = "/" + "/".join(segments)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise UpstreamURLError("the console URL's path parameter has a malformed query") from None
    return path, query


def _single(pairs: list[tuple[str, str]], name: str, where: str) -> str | None:
    values = [v for k, v in pairs if k == name]
    if len(values) > 1:
        raise UpstreamURLError(f"the console URL has more than one '{name}' parameter {where}")
    return values[0] if values else None


def novnc_page_target(console_url: str) -> UpstreamTarget:
    """A noVNC page URL (`vnc_auto.html`, `vnc_lite.html`, ...) -> the WebSocket its page would open.

    Two shapes: `?path=<relative path with ?token=T>` (nova's default, URL-decoded and joined to `/`)
    and `?token=T` alone, whose page opens websockify's `/websockify` (Huawei's form).
    `https` pages give `wss`, `http` pages `ws`; host and port are kept.
    """
    if not isinstance(console_url, str) or not console_url.strip():
        raise UpstreamURLError("the console URL is empty")
    if len(console_url) > _MAX_URL_LEN:
        raise UpstreamURLError("the console URL is too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in console_url):
        raise UpstreamURLError("the console URL contains control characters")
    try:
        parts = urlsplit(console_url.strip())
        raw_port = parts.port
    except ValueError:
        raise UpstreamURLError("the console URL has an invalid host or port") from None
    scheme = _WS_SCHEME.get(parts.scheme.lower())
    if scheme is None:
        raise UpstreamURLError("the console URL must use http or https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UpstreamURLError("the console URL must not contain user information")
    if not parts.hostname:
        raise UpstreamURLError("the console URL has no host")
    try:
        host = normalise_host(parts.hostname)
    except ValueError as exc:
        raise UpstreamURLError(f"the console URL's host is not valid ({exc})") from None
    port = raw_port if raw_port is not None else _DEFAULT_PORT[scheme]
    if not 0 < port < 65536:
        raise UpstreamURLError("the console URL's port is out of range")
    if ".." in parts.path.split("/"):
        raise UpstreamURLError("the console URL's path escapes its directory")

    pairs = parse_qsl(parts.query, keep_blank_values=True)
    top_token = _single(pairs, "token", "in its query")
    path_param = _single(pairs, "path", "in its query")

    if path_param is not None:
        ws_path, inner = _split_path_param(path_param)
        inner_token = _single(inner, "token", "inside its path parameter")
        if inner_token is not None and top_token is not None and inner_token != top_token:
            raise UpstreamURLError("the console URL carries two different tokens")
        token = inner_token if inner_token is not None else top_token
    else:
        ws_path = _WEBSOCKIFY_PATH
        token = top_token

    if token is None:
        hint = " (a token in the fragment is not used)" if "token" in parts.fragment else ""
        raise UpstreamURLError(f"the console URL has no token{hint}")
    if not _valid_token(token):
        raise UpstreamURLError("the console URL's token is empty, too long or has invalid characters")
    return UpstreamTarget(scheme=scheme, host=host, port=port, path=ws_path, token=token)
