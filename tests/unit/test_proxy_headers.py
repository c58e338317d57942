from __future__ import annotations

import logging

import pytest
from multidict import CIMultiDict

from gateway.auth.identity import Identity
from gateway.auth.proxy_headers import IDENTITY_HEADERS, TrustedHeaders, parse_peer

HEADERS = {
    "X-Auth-Request-User": "alice",
    "X-Auth-Request-Email": "alice@example.test",
    "X-Auth-Request-Groups": "ops, console-users,,ops",
}


@pytest.fixture
def trusted() -> TrustedHeaders:
    return TrustedHeaders(networks=["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


@pytest.mark.parametrize(
    "peer", ["10.1.2.3", "127.0.0.1", "::ffff:10.9.9.9", "fd00::5", "[fd00::5]", "fd12::1%eth0"]
)
def test_trusted_peer_yields_identity(trusted: TrustedHeaders, peer: str) -> None:
    identity = trusted.identify(peer, HEADERS)
    assert identity == Identity(
        user="alice", groups=("ops", "console-users"), email="alice@example.test", method="proxy-header"
    )
    assert not trusted.spoofed(peer, HEADERS)


@pytest.mark.parametrize(
    "peer", ["192.0.2.1", "11.0.0.1", "::1", "fe80::1", "2001:db8::1", "", "not-an-ip", None]
)
def test_untrusted_peer_is_ignored_and_logged(
    trusted: TrustedHeaders, peer: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.auth"):
        assert trusted.identify(peer, HEADERS) is None
    assert trusted.spoofed(peer, HEADERS)
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.auth"] == [
        f"spoofed identity header from {parse_peer(peer) or 'an unparsable peer'}"
    ]


def test_untrusted_peer_without_identity_headers_is_quiet(
    trusted: TrustedHeaders, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.auth"):
        assert trusted.identify("192.0.2.1", {"Accept": "text/html"}) is None
    assert not trusted.spoofed("192.0.2.1", {"Accept": "text/html"})
    assert not caplog.records


def test_any_family_header_counts_as_spoofing(trusted: TrustedHeaders) -> None:
    for name in IDENTITY_HEADERS:
        assert trusted.spoofed("192.0.2.1", {name.lower(): "mallory"})


def test_header_names_are_case_insensitive(trusted: TrustedHeaders) -> None:
    headers = {"x-auth-request-user": "alice", "X-AUTH-REQUEST-GROUPS": "ops"}
    assert trusted.identify("10.0.0.1", headers) == Identity(
        user="alice", groups=("ops",), method="proxy-header"
    )
    assert trusted.identify("10.0.0.1", CIMultiDict(headers)) is not None


def test_trusted_peer_without_user_is_anonymous(trusted: TrustedHeaders) -> None:
    assert trusted.identify("10.0.0.1", {"X-Auth-Request-Email": "alice@example.test"}) is None
    assert trusted.identify("10.0.0.1", {"X-Auth-Request-User": "   "}) is None


def test_unusable_values_are_refused(trusted: TrustedHeaders) -> None:
    assert trusted.identify("10.0.0.1", {"X-Auth-Request-User": "alice\r\nX-Evil: 1"}) is None
    assert trusted.identify("10.0.0.1", {"X-Auth-Request-User": "a" * 1000}) is None
    duplicated = CIMultiDict([("X-Auth-Request-User", "alice"), ("X-Auth-Request-User", "mallory")])
    assert trusted.identify("10.0.0.1", duplicated) is None


def test_custom_header_names_and_separator() -> None:
    custom = TrustedHeaders(
        networks=["192.168.0.0/16"],
        user_header="Remote-User",
        email_header="Remote-Email",
        groups_header="Remote-Groups",
        groups_separator="|",
    )
    identity = custom.identify("192.168.1.1", {"Remote-User": "bob", "Remote-Groups": "a b|c"})
    assert identity == Identity(user="bob", groups=("a b", "c"), method="proxy-header")
    assert {"Remote-User", "Remote-Groups", "X-Forwarded-User"} <= set(custom.headers)


def test_identity_headers_cover_the_family() -> None:
    for name in (
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Preferred-Username",
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
    ):
        assert name in IDENTITY_HEADERS


def test_networks_are_validated() -> None:
    with pytest.raises(ValueError, match=r"'10.0.0.300/8' is not an IP address or CIDR"):
        TrustedHeaders(networks=["10.0.0.300/8"])
    assert TrustedHeaders(networks=["10.1.2.3/8"]).trusted("10.200.0.1")  # host bits tolerated
