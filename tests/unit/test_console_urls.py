"""Console page URLs -> upstream targets: the forms clouds return, parsed by the shared parser and by
each provider's `console_target`."""

from __future__ import annotations

import pytest

from gateway.clouds.base import ConsoleURL
from gateway.clouds.console_urls import novnc_page_target
from gateway.clouds.huawei import AKSKAuth, Credentials, HuaweiECS
from gateway.upstream import UpstreamURLError

SECRET = "S3cr3tT0ken-1234"

# --- novnc_page_target -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("console_url", "ws_url"),
    [
        # Huawei
        (
            f"https://ecs-console.example.com:8002/vnc_auto.html?token={SECRET}&lang=EN&tLength=70",
            f"wss://ecs-console.example.com:8002/websockify?token={SECRET}",
        ),
        # nova >= 2.6 default
        (
            f"http://nova.example.com:6080/vnc_auto.html?path=%3Ftoken%3D{SECRET}",
            f"ws://nova.example.com:6080/?token={SECRET}",
        ),
        # nova with a websockify path, default https port
        (
            f"https://nova.example.com/vnc_lite.html?path=websockify%3Ftoken%3D{SECRET}",
            f"wss://nova.example.com/websockify?token={SECRET}",
        ),
        # default http port, host case and trailing dot normalised
        (
            f"http://NoVa.Example.COM./vnc_auto.html?token={SECRET}",
            f"ws://nova.example.com/websockify?token={SECRET}",
        ),
        # IP literals
        (
            f"https://[2001:db8::1]:6080/vnc.html?path=%3Ftoken%3D{SECRET}",
            f"wss://[2001:db8::1]:6080/?token={SECRET}",
        ),
        (f"http://10.0.0.5:6080/vnc.html?token={SECRET}", f"ws://10.0.0.5:6080/websockify?token={SECRET}"),
        # international host name -> IDNA
        (
            f"https://bücher.example/vnc.html?token={SECRET}",
            f"wss://xn--bcher-kva.example/websockify?token={SECRET}",
        ),
        # token re-encoded for the wire ('+' was %2B in the page URL)
        ("https://h.example/vnc.html?token=a%2Bb%3D", "wss://h.example/websockify?token=a%2Bb%3D"),
        # the same token twice (top level and in path) is not a conflict
        (
            f"https://h.example/vnc.html?token={SECRET}&path=websockify%3Ftoken%3D{SECRET}",
            f"wss://h.example/websockify?token={SECRET}",
        ),
        # path without a token, token at the top level
        (
            f"https://h.example/vnc.html?path=ws%2Fconsole&token={SECRET}",
            f"wss://h.example/ws/console?token={SECRET}",
        ),
    ],
)
def test_novnc_page_target_forms(console_url: str, ws_url: str) -> None:
    target = novnc_page_target(console_url)
    assert target.url() == ws_url
    assert target.safe_url() == ws_url.replace(target.url().rsplit("=", 1)[1], "***")
    assert target.scheme in ("ws", "wss")


def test_novnc_page_target_fields_and_defaults() -> None:
    t = novnc_page_target(f"https://h.example/vnc_lite.html?path=websockify%3Ftoken%3D{SECRET}")
    assert (t.scheme, t.host, t.port, t.path, t.token) == ("wss", "h.example", 443, "/websockify", SECRET)
    t = novnc_page_target(f"http://h.example/vnc_auto.html?path=%3Ftoken%3D{SECRET}")
    assert (t.scheme, t.port, t.path) == ("ws", 80, "/")


def test_target_repr_and_str_hide_the_token() -> None:
    t = novnc_page_target(f"https://h.example:8002/vnc_auto.html?token={SECRET}")
    for text in (repr(t), str(t), f"{t}", t.safe_url()):
        assert SECRET not in text
    assert "token=***" in t.safe_url()
    assert SECRET in t.url()


@pytest.mark.parametrize(
    ("console_url", "why"),
    [
        (f"ftp://h.example/x?token={SECRET}", "http or https"),
        (f"javascript:alert(1)//?token={SECRET}", "http or https"),
        (f"wss://h.example/websockify?token={SECRET}", "http or https"),
        (f"https:///vnc.html?token={SECRET}", "no host"),
        (f"https://user:pw@h.example/vnc.html?token={SECRET}", "user information"),
        (f"https://user@h.example/vnc.html?token={SECRET}", "user information"),
        ("https://h.example/vnc_auto.html?lang=EN", "no token"),
        ("https://h.example/vnc_auto.html?token=", "token"),
        (f"https://h.example/vnc_auto.html#token={SECRET}", "fragment"),
        (f"https://h.example/vnc_auto.html?path=%3Flang%3DEN#token={SECRET}", "no token"),
        (f"https://h.example/vnc.html?path=..%2Fadmin%3Ftoken%3D{SECRET}", "escapes"),
        (f"https://h.example/vnc.html?path=a%2F%252e%252e%2Fb%3Ftoken%3D{SECRET}", "escapes"),
        (f"https://h.example/vnc.html?path=%2F%2Fevil.example%2Fx%3Ftoken%3D{SECRET}", "relative"),
        (f"https://h.example/vnc.html?path=https%3A%2F%2Fevil.example%2F%3Ftoken%3D{SECRET}", "relative"),
        (f"https://h.example/vnc.html?path=a%20b%3Ftoken%3D{SECRET}", "invalid characters"),
        (f"https://h.example/../vnc.html?token={SECRET}", "escapes"),
        (f"https://h.example/vnc.html?token={SECRET}&token=other", "more than one"),
        (f"https://h.example/vnc.html?token=other&path=%3Ftoken%3D{SECRET}", "two different tokens"),
        (f"https://h.example/vnc.html?token={SECRET}%20x", "invalid characters"),
        (f"https://h.example:99999/vnc.html?token={SECRET}", "port"),
        (f"https://h.example:0/vnc.html?token={SECRET}", "port"),
        (f"https://127.1/vnc.html?token={SECRET}", "IP"),
        (f"https://0x7f000001/vnc.html?token={SECRET}", "IP"),
        (f"https://h.example/vnc.html?token={SECRET}\r\nX: y", "control"),
        ("", "empty"),
    ],
)
def test_novnc_page_target_rejects(console_url: str, why: str) -> None:
    with pytest.raises(UpstreamURLError) as info:
        novnc_page_target(console_url)
    text = str(info.value)
    assert why in text
    assert SECRET not in text
    assert "h.example" not in text and "evil" not in text  # no URL echoed
    assert info.value.__cause__ is None


# --- the Huawei provider's console_target ------------------------------------------------------


def _huawei() -> HuaweiECS:
    return HuaweiECS(
        name="hw", region="ap-southeast-1", project_id="p1", auth=AKSKAuth(Credentials("AK", "SK"))
    )


@pytest.mark.parametrize(
    ("console_url", "ws_url"),
    [
        (
            f"https://ecs-console.example.com:8002/vnc_auto.html?token={SECRET}&lang=EN&tLength=70",
            f"wss://ecs-console.example.com:8002/websockify?token={SECRET}",
        ),
        (
            f"https://nova.example.com:6080/vnc_auto.html?path=%3Ftoken%3D{SECRET}",
            f"wss://nova.example.com:6080/?token={SECRET}",
        ),
    ],
)
def test_huawei_console_target_maps_the_forms_ecs_returns(console_url: str, ws_url: str) -> None:
    assert _huawei().console_target(ConsoleURL(console_url)).url() == ws_url


def test_huawei_console_target_refuses_without_quoting_the_url() -> None:
    with pytest.raises(UpstreamURLError) as info:
        _huawei().console_target(ConsoleURL(f"ftp://h.example/vnc_auto.html?token={SECRET}"))
    assert "http or https" in str(info.value)
    assert SECRET not in str(info.value) and "h.example" not in str(info.value)
