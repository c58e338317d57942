"""Console URL -> upstream target (the providers' shared noVNC page parser): any string either maps to a
safe target or fails with UpstreamURLError, and neither the target's printable forms nor the error ever
carry the token."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.clouds.console_urls import novnc_page_target
from gateway.upstream import HostAllowlist, UpstreamTarget, UpstreamURLError
from tests.fuzz import tried

TOKEN_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
# Real tokens are long and random; a long marker keeps "the token appears in the error" meaningful.
tokens = st.text(TOKEN_CHARS, min_size=12, max_size=80).filter(lambda t: "%" not in t)
hosts = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "localhost",
            "novnc.example.com",
            "NoVnC.Example.COM.",
            "[::1]",
            "[fe80::1%25eth0]",
            "127.1",
            "0x7f.0.0.1",
            "xn--bcher-kva.example",
            "bücher.example",
            "a..b",
            "-bad-.example",
            "",
            "user@host",
            "host:99999",
            "[::1",
        ]
    ),
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True),
    st.text(max_size=30),
)
schemes = st.sampled_from(["http", "https", "HTTPS", "ws", "wss", "ftp", "javascript", ""])
ports = st.one_of(st.none(), st.integers(min_value=-5, max_value=70000).map(str), st.text(max_size=6))
paths = st.one_of(
    st.sampled_from(["/vnc_auto.html", "/vnc_lite.html", "/", "", "/../x", "/a/./b"]),
    st.text(max_size=30).map(lambda p: "/" + p),
)


def _query_values() -> st.SearchStrategy[str]:
    return st.one_of(
        tokens,
        st.text(max_size=40),
        tokens.map(lambda t: quote("?token=" + t, safe="")),
        tokens.map(lambda t: quote("websockify?token=" + t, safe="")),
        tokens.map(lambda t: quote("../../etc?token=" + t, safe="")),
        tokens.map(lambda t: quote("//evil.example/?token=" + t, safe="")),
    )


@st.composite
def console_urls(draw: st.DrawFn) -> tuple[str, str | None]:
    """A URL assembled from hostile parts, and the token marker it carries (if any)."""
    scheme, host, port, path = draw(schemes), draw(hosts), draw(ports), draw(paths)
    params = draw(
        st.lists(
            st.tuples(st.sampled_from(["token", "path", "lang", "tLength", "TOKEN", "x"]), _query_values()),
            max_size=4,
        )
    )
    netloc = host + (f":{port}" if port is not None else "")
    query = "&".join(f"{k}={v}" for k, v in params)
    fragment = draw(st.sampled_from(["", "#token=abc", "#x"]))
    url = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "") + fragment
    marker = next((v for k, v in params if k == "token" and len(v) >= 12), None)
    return url, marker


def _check_target(target: UpstreamTarget) -> None:
    assert target.scheme in ("ws", "wss")
    assert 0 < target.port < 65536
    assert target.path.startswith("/") and ".." not in target.path.split("/")
    assert "?" not in target.path and "#" not in target.path
    assert 0 < len(target.token) <= 512 and target.token.isascii() and target.token.isprintable()
    # The wire URL carries exactly this token, once, in the query.
    wire = urlsplit(target.url())
    assert wire.hostname is not None
    assert parse_qs(wire.query, keep_blank_values=True) == {"token": [target.token]}
    # The printable forms are the wire URL's public parts (scheme, host, port, path) and a fixed mask,
    # nothing else. Stated so, a token that merely occurs in them ("0" in 127.0.0.1) is no leak, and
    # any other appearance of the token in a printable form is one.
    public = wire._replace(query="").geturl()
    assert target.safe_url() == public + "?token=***"
    assert repr(target) == str(target) == f"UpstreamTarget({target.safe_url()!r})"


@given(console_urls())
# `make fuzz` found the first: the old property took the token "0" inside "127.0.0.1" for a leak.
@example(("http://127.0.0.1/vnc_auto.html?token=0", None))
@example(("https://novnc.example.com/vnc_auto.html?token=t", None))
# ... and the second: a host spelled like the 12-character token, taken for the token shown.
@example(("http://00000000000_/vnc_auto.html?token=00000000000_", "00000000000_"))
def test_any_assembled_console_url_maps_safely_or_fails_cleanly(case: tuple[str, str | None]) -> None:
    url, marker = case
    tried("novnc_page_target: assembled URLs")
    try:
        target = novnc_page_target(url)
    except UpstreamURLError as exc:
        if marker is not None:
            assert marker not in str(exc), "an error text quotes the token"
        assert url not in str(exc)
        return
    _check_target(target)
    if marker is not None:  # a realistic token (12 characters or more) shows nowhere but where the URL's
        # public parts happen to spell it (a host named like the token is the host, not a leak)
        public = target.safe_url().removesuffix("?token=***")
        printable = (repr(target), target.safe_url())
        assert not [shown for shown in printable if marker in shown.replace(public, "")]
    assert (target.scheme == "wss") == url.lower().startswith("https:")


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    tried("novnc_page_target: arbitrary text")
    try:
        target = novnc_page_target(text)
    except UpstreamURLError:
        return
    _check_target(target)


_HOST_NAME = st.from_regex(
    r"[a-z][a-z0-9-]{0,15}[a-z0-9](\.[a-z][a-z0-9-]{0,15}[a-z0-9]){1,3}", fullmatch=True
)
_URLSAFE_TOKENS = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
    min_size=1,
    max_size=64,
)


@given(_HOST_NAME, st.integers(1, 65535), _URLSAFE_TOKENS, st.booleans())
def test_well_formed_urls_of_both_styles_map_exactly(host: str, port: int, token: str, huawei: bool) -> None:
    """The positive side: every real-looking URL of either documented style is accepted as documented."""
    tried("novnc_page_target: well-formed URLs")
    if huawei:
        target = novnc_page_target(f"https://{host}:{port}/vnc_auto.html?token={token}&lang=EN&tLength=70")
        expected = ("wss", "/websockify")
    else:
        target = novnc_page_target(
            f"http://{host}:{port}/vnc_auto.html?path={quote('?token=' + token, safe='')}"
        )
        expected = ("ws", "/")
    assert (target.scheme, target.path) == expected
    assert (target.host, target.port, target.token) == (host, port, token)


@given(st.lists(st.text(max_size=40), max_size=4), st.text(max_size=60), st.integers(-1, 70000))
def test_allowlist_never_crashes_and_never_widens(patterns: list[str], host: str, port: int) -> None:
    tried("HostAllowlist")
    try:
        allowlist = HostAllowlist(patterns)
    except ValueError:
        return
    result = allowlist.allows(host, port)
    assert isinstance(result, bool)
    if not patterns:
        assert result is False


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8002/vnc_auto.html?token=" + "T" * 600,
        "https://127.0.0.1:8002/vnc_auto.html?token=a&token=b",
        "http://h:1/vnc_auto.html?path=%3Ftoken%3Da&token=b",
        "https://[fe80::1%25eth0]:1/?token=abc",
        "https://0x7f.1:1/?token=abc",
        "https://h:1/x?path=%2F%2Fevil.example%2F%3Ftoken%3Dabc",
        "https://h:1/x?path=..%2F..%3Ftoken%3Dabc",
    ],
)
def test_known_hostile_urls_are_refused(url: str) -> None:
    with pytest.raises(UpstreamURLError) as refused:
        novnc_page_target(url)
    assert "token=" not in str(refused.value)
