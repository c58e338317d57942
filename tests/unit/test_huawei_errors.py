"""Error bodies -> CloudError, response validation, and the secret-keeping value types."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

import pytest

from gateway.clouds.base import CloudError, CloudErrorKind, ConsoleURL, Server
from gateway.clouds.huawei.ecs import parse_console, parse_server
from gateway.clouds.huawei.errors import (
    RawResponse,
    error_from_response,
    is_retryable_status,
    parse_error_body,
    parse_retry_after,
)
from gateway.clouds.retry import full_jitter


def ecs_body(code: str, message: str = "upstream says no") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def apigw_body(code: str, request_id: str = "rid-body") -> bytes:
    return json.dumps({"error_code": code, "error_msg": "gateway says no", "request_id": request_id}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (404, ecs_body("Ecs.0114"), CloudErrorKind.NOT_FOUND, "no such server in this project"),
        (404, ecs_body("Ecs.0614"), CloudErrorKind.NOT_FOUND, "no such server in this project"),
        (403, ecs_body("Ecs.0003"), CloudErrorKind.FORBIDDEN,
         "the gateway has no permission in this project"),
        (400, ecs_body("Ecs.0005"), CloudErrorKind.BAD_REQUEST,
         "the cloud API rejected the request as invalid"),
        (400, ecs_body("Ecs.0100"), CloudErrorKind.BAD_STATE,
         "the server's current state does not allow a console"),
        (400, ecs_body("Ecs.0605"), CloudErrorKind.LOCKED, "the server is locked"),
        (401, apigw_body("APIGW.0301"), CloudErrorKind.AUTH, "the gateway's cloud credentials were rejected"),
        (401, apigw_body("APIGW.0303"), CloudErrorKind.AUTH,
         "the cloud API rejected the request signature as expired (check the gateway's clock)"),
        (429, apigw_body("APIGW.0308"), CloudErrorKind.THROTTLED,
         "the cloud API is throttling, retry in a few seconds"),
        (500, b"", CloudErrorKind.INTERNAL, "the cloud API failed with an internal error"),
        (502, b"<html>bad gateway</html>", CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
        (503, b"", CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
        (401, json.dumps({"error": {"code": 401, "title": "Unauthorized"}}).encode(), CloudErrorKind.AUTH,
         "the gateway's cloud credentials were rejected"),
        (404, json.dumps({"itemNotFound": {"code": 404, "message": "x"}}).encode(), CloudErrorKind.NOT_FOUND,
         "no such server in this project"),
        (418, b"", CloudErrorKind.INVALID_RESPONSE, "the cloud API answered with HTTP 418"),
    ],
    ids=lambda v: v if isinstance(v, str | int) and not isinstance(v, bool) else None,
)  # fmt: skip
def test_error_mapping(status: int, body: bytes, kind: CloudErrorKind, message: str) -> None:
    err = error_from_response(RawResponse(status, {"X-Request-Id": "rid-header"}, body))
    assert err.kind is kind
    assert err.user_message == message
    assert err.status == status
    assert err.request_id in ("rid-body", "rid-header")


def test_log_line_has_code_request_id_and_upstream_message() -> None:
    body = ecs_body("Ecs.0114", "Instance gone")
    err = error_from_response(RawResponse(404, {"x-request-id": "abc123"}, body))
    line = str(err)
    assert "NOT_FOUND" in line and "http=404" in line and "code=Ecs.0114" in line
    assert "request_id=abc123" in line and "Instance gone" in line
    assert err.code == "Ecs.0114"


def test_request_id_prefers_body_over_header() -> None:
    err = error_from_response(RawResponse(401, {"X-Request-Id": "hdr"}, apigw_body("APIGW.0301", "body")))
    assert err.request_id == "body"


def test_throttled_message_uses_retry_after() -> None:
    err = error_from_response(RawResponse(429, {"Retry-After": "29.2"}, apigw_body("APIGW.0308")))
    assert err.kind is CloudErrorKind.THROTTLED
    assert err.retry_after == pytest.approx(29.2)
    assert err.user_message == "the cloud API is throttling, retry in 30 s"


def test_upstream_message_is_bounded_and_single_line() -> None:
    err = error_from_response(RawResponse(400, {}, ecs_body("Ecs.0005", "line1\nline2" + "x" * 5000)))
    assert "\n" not in str(err)
    assert len(str(err)) < 600


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1,2]", b'"str"', b"\xff\xfe", b'{"error": "flat"}', b'{"error_code": 5}'],
)
def test_parse_error_body_never_raises(body: bytes) -> None:
    parsed = parse_error_body(body)
    assert parsed.code is None or isinstance(parsed.code, str)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_only_throttling_and_server_errors_are_retryable(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry


def test_full_jitter_bounds() -> None:
    assert full_jitter(0, base=0.5, cap=8, rand=lambda lo, hi: hi) == 0.5
    assert full_jitter(3, base=0.5, cap=8, rand=lambda lo, hi: hi) == 4.0
    assert full_jitter(10, base=0.5, cap=8, rand=lambda lo, hi: hi) == 8.0
    assert full_jitter(10, base=0.5, cap=8, rand=lambda lo, hi: lo) == 0.0


# -- response validation ----------------------------------------------------------------------

SECRET_URL = "https://novnc.example:8002/vnc_auto.html?token=SECRET-TOKEN-123&lang=EN&tLength=70"


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        (None, "remote_console"),
        ([], "remote_console"),
        ({}, "remote_console"),
        ({"remote_console": "x"}, "remote_console"),
        ({"remote_console": {}}, "remote_console.url"),
        ({"remote_console": {"url": 5}}, "remote_console.url"),
        ({"remote_console": {"url": ""}}, "remote_console.url"),
        ({"remote_console": {"url": "javascript:alert(1)?token=SECRET-TOKEN-123"}}, "remote_console.url"),
        ({"remote_console": {"url": "/relative?token=SECRET-TOKEN-123"}}, "remote_console.url"),
        ({"remote_console": {"url": SECRET_URL + "x" * 9000}}, "remote_console.url"),
        ({"remote_console": {"url": SECRET_URL, "type": 3}}, "remote_console.type"),
    ],
)
def test_parse_console_rejects_and_names_the_field(doc: object, names: str) -> None:
    with pytest.raises(CloudError) as info:
        parse_console(doc)
    assert info.value.kind is CloudErrorKind.INVALID_RESPONSE
    assert names in str(info.value)
    assert "SECRET-TOKEN" not in str(info.value) and "SECRET-TOKEN" not in repr(info.value)


def test_parse_console_ok() -> None:
    url = parse_console({"remote_console": {"url": SECRET_URL, "protocol": "vnc", "type": "novnc"}})
    assert url.reveal() == SECRET_URL
    assert (url.protocol, url.type) == ("vnc", "novnc")


def _server(**over: object) -> dict:
    doc = {
        "id": "i-1",
        "name": "web",
        "status": "ACTIVE",
        "OS-EXT-AZ:availability_zone": "az1",
        "locked": False,
        "tags": ["env=prod"],
        "metadata": {"owner": "ops"},
        "enterprise_project_id": "0",
    }
    doc.update(over)
    return doc


def test_parse_server_maps_fields() -> None:
    server = parse_server(_server(), cloud="c", project_id="p", region="r")
    assert server == Server(
        cloud="c", id="i-1", name="web", status="ACTIVE", project_id="p", region="r",
        availability_zone="az1", locked=False, tags=("env=prod",), metadata={"owner": "ops"},
        enterprise_project_id="0",
    )  # fmt: skip
    with pytest.raises(TypeError):
        server.metadata["owner"] = "me"  # type: ignore[index]
    assert len({server, parse_server(_server(), cloud="c", project_id="p", region="r")}) == 1


def test_parse_server_tolerates_absent_optional_fields() -> None:
    doc = {"id": "i-2", "name": "", "status": "shutoff"}
    server = parse_server(doc, cloud="c", project_id="p", region="r")
    assert (server.status, server.tags, dict(server.metadata), server.locked) == ("SHUTOFF", (), {}, False)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"id": None}, "srv.id"),
        ({"id": ""}, "srv.id"),
        ({"status": 1}, "srv.status"),
        ({"locked": "no"}, "srv.locked"),
        ({"tags": "a"}, "srv.tags"),
        ({"tags": [1]}, "srv.tags"),
        ({"metadata": []}, "srv.metadata"),
        ({"metadata": {"a": 1}}, "srv.metadata"),
        ({"OS-EXT-AZ:availability_zone": 3}, "srv.OS-EXT-AZ:availability_zone"),
    ],
)
def test_parse_server_names_wrong_field(over: dict, field: str) -> None:
    with pytest.raises(CloudError) as info:
        parse_server(_server(**over), cloud="c", project_id="p", region="r", where="srv")
    assert info.value.kind is CloudErrorKind.INVALID_RESPONSE
    assert field in str(info.value)


# -- value types ------------------------------------------------------------------------------


def test_console_url_is_redacted_everywhere() -> None:
    url = ConsoleURL(SECRET_URL)
    texts = (str(url), repr(url), f"{url}", "%s" % url, repr([url]), repr({"u": url}))  # noqa: UP031
    for text in texts:
        assert "SECRET-TOKEN" not in text
        assert "redacted" in text
    assert url.reveal() == SECRET_URL
    with pytest.raises(TypeError):
        pickle.dumps(url)


@pytest.mark.parametrize(
    ("status", "locked", "reason"),
    [
        ("ACTIVE", False, None),
        ("SHUTOFF", False, "the server is stopped"),
        ("BUILD", False, "the server is still being built"),
        ("ERROR", False, "the server is in an error state"),
        ("REBOOT", False, "the server is rebooting"),
        ("ACTIVE", True, "the server is locked"),
        ("WEIRD", False, "the server is not running (status WEIRD)"),
    ],
)
def test_unavailable_reason(status: str, locked: bool, reason: str | None) -> None:
    server = Server(
        cloud="c", id="i", name="n", status=status, project_id="p", region="r",
        availability_zone="az", locked=locked, tags=(), metadata={},
    )  # fmt: skip
    assert server.unavailable_reason() == reason
