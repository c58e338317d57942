"""Security checks that need no running gateway: the UI's DOM sinks and the token scanner itself."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.support.token_scan import TokenScanner


def test_pages_never_insert_markup() -> None:
    """Names and metadata reach the DOM as text: no script of ours uses an HTML sink."""
    static = Path(__file__).resolve().parents[2] / "static" / "js"
    for script in static.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in text, f"{script.name} uses {sink}"


# -- the token scan itself -----------------------------------------------------------------------


def test_the_token_scanner_finds_every_encoding_and_nothing_else() -> None:
    from urllib.parse import quote

    scanner = TokenScanner()
    token = "Ab3_-xY9" * 5 + "zzz"
    scanner.add_url(f"https://h:1/vnc_auto.html?token={token}&lang=EN")
    assert scanner.scan("nothing to see " * 1000, "clean")
    raw = token.encode()
    planted = [
        token,
        quote(quote(token, safe=""), safe=""),
        "x" + base64.b64encode(b"ab" + raw + b"cd").decode(),
        base64.urlsafe_b64encode(b"q" + raw).decode(),
        raw.hex(),
        ("\0" * 300_000 + token).encode(),
    ]
    for i, text in enumerate(planted):
        assert not scanner.scan(text, f"planted {i}"), f"planted form {i} not found"
    assert len(scanner.leaks) == len(planted)
    nova = TokenScanner()
    nova.add_url(f"http://h:1/vnc_auto.html?path={quote('?token=' + token, safe='')}")
    assert not nova.scan(f"log line {token}", "nova")


def test_the_suite_wide_scan_is_wired(tmp_path: Path) -> None:
    """The session fixture hooked the token's source: a URL issued now is registered at once."""
    from gateway.sim.certs import make_self_signed
    from gateway.sim.novncproxy import NovncProxy
    from tests.support.token_scan import SCANNER, token_of

    proxy = NovncProxy(workdir=tmp_path / "p", certs=make_self_signed(tmp_path / "c"))
    url = proxy.issue("127.0.0.1", 5900)
    assert token_of(url) in SCANNER.raw_tokens
