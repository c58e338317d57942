"""Identity from plain headers set by an authenticating proxy (oauth2-proxy's X-Auth-Request-*, ...).

Anyone can send such headers, so they count only when the TCP peer is in a configured trusted network.
From anywhere else they are a spoofing attempt: the app strips every name in IDENTITY_HEADERS from
untrusted requests and audits it (see `spoofed`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence

from .identity import AuthError, Identity, clean_text, parse_groups

log = logging.getLogger("gateway.auth")

IDENTITY_HEADERS: tuple[str, ...] = (
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "Remote-User",
    "Remote-Email",
    "Remote-Groups",
    "X-Remote-User",
)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_peer(peer: str | None) -> _Address | None:
    """The peer address as aiohttp reports it ("::ffff:10.0.0.1", "[::1]", "fe80::1%eth0"), normalised."""
    if not peer:
        return None
    text = peer.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedHeaders:
    def __init__(
        self,
        *,
        networks: Sequence[str],
        user_header: str = "X-Auth-Request-User",
        email_header: str = "X-Auth-Request-Email",
        groups_header: str = "X-Auth-Request-Groups",
        groups_separator: str = ",",
    ) -> None:
        parsed: list[_Network] = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy network {text!r} is not an IP address or CIDR") from None
        self.networks: tuple[_Network, ...] = tuple(parsed)
        self.user_header = user_header
        self.email_header = email_header
        self.groups_header = groups_header
        self.groups_separator = groups_separator
        names = dict.fromkeys(IDENTITY_HEADERS)
        names.update(dict.fromkeys((user_header, email_header, groups_header)))
        # Every header to strip from untrusted requests: the standard family plus the configured names.
        self.headers: tuple[str, ...] = tuple(names)
        self._lower = frozenset(name.lower() for name in self.headers)

    def trusted(self, peer: str | None) -> bool:
        address = parse_peer(peer)
        return address is not None and any(address in network for network in self.networks)

    def spoofed(self, peer: str | None, headers: Mapping[str, str]) -> bool:
        """True when an untrusted peer sent any identity header."""
        return not self.trusted(peer) and any(name.lower() in self._lower for name in headers)

    def identify(self, peer: str | None, headers: Mapping[str, str]) -> Identity | None:
        if not self.trusted(peer):
            if self.spoofed(peer, headers):
                log.warning("spoofed identity header from %s", parse_peer(peer) or "an unparsable peer")
            return None
        lower: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            if key in lower and key in self._lower:
                # Two values for one identity header: the proxy appended instead of replacing.
                log.warning(
                    "duplicate identity header %s from trusted proxy %s; ignoring identity", name, peer
                )
                return None
            lower[key] = value
        try:
            user = clean_text(lower.get(self.user_header.lower()), what=f"header {self.user_header}")
            if user is None:
                return None
            email = clean_text(lower.get(self.email_header.lower()), what=f"header {self.email_header}")
        except AuthError as exc:
            log.warning("unusable identity header from trusted proxy %s: %s", peer, exc.reason)
            return None
        groups = parse_groups(lower.get(self.groups_header.lower()), separators=self.groups_separator)
        return Identity(user=user, groups=groups, email=email, method="proxy-header")
