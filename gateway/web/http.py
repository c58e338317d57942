"""Small request helpers shared by the handlers: client address, origins, redirects, JSON errors."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import web

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def in_networks(address: str | None, networks: Sequence[IPNetwork]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def client_address(request: web.Request, trusted: Sequence[IPNetwork]) -> str:
    """The peer, or the right-most X-Forwarded-For hop not added by one of our trusted proxies."""
    peer = request.remote or "-"
    if not trusted or not in_networks(peer, trusted):
        return peer
    hops = [
        h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()
    ]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


def origin_allowed(request: web.Request, allowed: Sequence[str]) -> bool:
    origin = request.headers.get("Origin")
    return origin is not None and origin.lower() in allowed


def same_origin_post(request: web.Request, allowed: Sequence[str]) -> bool:
    """A state change is accepted only with an Origin (or, failing that, Referer) of our own."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.lower() in allowed
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() in allowed
    return False


def safe_next(target: str | None, default: str = "/servers") -> str:
    """Only local absolute paths: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 0x20 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def json_error(status: int, message: str, *, code: str | None = None, **extra: object) -> web.Response:
    body: dict[str, object] = {"error": message}
    if code:
        body["code"] = code
    body.update(extra)
    return web.json_response(body, status=status)


def json_refusal(
    refusal: type[web.HTTPClientError], message: str, *, code: str, **extra: object
) -> web.HTTPClientError:
    """`json_error` as an exception to raise: the request ends here, before the handler, and no
    middleware it passes on the way out touches the response (the sign-in cookie stays as it came)."""
    body: dict[str, object] = {"error": message, "code": code, **extra}
    return refusal(text=json.dumps(body), content_type="application/json")
