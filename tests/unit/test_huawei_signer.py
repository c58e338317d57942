"""Our AK/SK signer against the official huaweicloudsdkcore Signer, plus our verifier."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

import pytest

from gateway.clouds.huawei.signer import (
    Credentials,
    SignatureError,
    parse_authorization,
    sign_request,
    verify_request,
)

DATE = "20200608T023900Z"
HOST = "ecs.cn-north-4.myhuaweicloud.com"
PROJECT = "13c67a214ced4afb88d911ae4bd5721a"
JSON = "application/json;charset=UTF-8"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_type: str | None = None
    project_id: str | None = None
    token: str | None = None
    host: str = HOST
    raw_query: str | None = None  # what we put in our URL, when not the encoded `query`


CONSOLE_BODY = b'{"remote_console": {"protocol": "vnc", "type": "novnc"}}'

CASES = [
    Case("list-detail", "GET", f"/v1/{PROJECT}/cloudservers/detail",
         [("offset", "1"), ("limit", "1000")], project_id=PROJECT),
    Case("show", "GET", f"/v1/{PROJECT}/cloudservers/47bc79ae-df61-4ade-9197-283a74e5d70e",
         project_id=PROJECT),
    Case("remote-console", "POST", f"/v1/{PROJECT}/cloudservers/47bc79ae/remote_console",
         body=CONSOLE_BODY, content_type=JSON, project_id=PROJECT),
    Case("post-empty-body", "POST", "/v1/p/action", content_type="application/json"),
    Case("put-unicode-json", "PUT", "/v1/p/servers/x",
         body=json.dumps({"name": "büro-服务器"}, ensure_ascii=False).encode(), content_type=JSON),
    Case("delete", "DELETE", "/v1/p/servers/x", project_id=PROJECT),
    Case("patch", "PATCH", "/v1/p/servers/x", body=b'{"a": 1}', content_type="application/json"),
    Case("head", "HEAD", "/v1/p/servers"),
    Case("lowercase-method", "get", "/v1/p/servers"),
    Case("path-spaces", "GET", "/v1/my folder/a b"),
    Case("path-unicode", "GET", "/v1/服务器/ünïcode"),
    Case("path-tilde", "GET", "/v1/~user/x~y"),
    Case("path-pre-encoded", "GET", "/v1/a%20b/c%2Bd"),
    Case("path-trailing-slash", "GET", "/v1/p/"),
    Case("path-root", "GET", "/"),
    Case("query-repeated", "GET", "/v1/p/servers", [("tag", "b"), ("tag", "a"), ("a", "z")]),
    Case("query-empty-value", "GET", "/v1/p/servers", [("name", ""), ("status", "ACTIVE")]),
    Case("query-key-only", "GET", "/v1/p/servers", [("flag", ""), ("x", "1")], raw_query="x=1&flag"),
    Case("query-space-plus-tilde", "GET", "/v1/p/servers", [("name", "web server"), ("x", "a+b~c/d")]),
    Case("query-unicode", "GET", "/v1/p/servers", [("name", "服务器-ü")]),
    Case("query-reserved", "GET", "/v1/p/servers", [("filter", "a=b&c"), ("q", "1;2,3")]),
    Case("security-token-get", "GET", f"/v1/{PROJECT}/cloudservers/detail", [("limit", "1")],
         project_id=PROJECT, token="sts-token-" + "x" * 40),
    Case("security-token-post", "POST", f"/v1/{PROJECT}/cloudservers/i/remote_console",
         body=CONSOLE_BODY, content_type=JSON, project_id=PROJECT, token="tmp/+=token"),
    Case("host-with-port", "GET", "/v1/p/servers", [("a", "1")], host="127.0.0.1:8443"),
    Case("content-type-whitespace", "POST", "/v1/p/x", body=b"{}", content_type="application/json  "),
]  # fmt: skip


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The official SDK, imported with HOME pointed at a temp dir (it writes a file there)."""
    home = tmp_path_factory.mktemp("sdk-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        creds = importlib.import_module("huaweicloudsdkcore.auth.credentials")
        req = importlib.import_module("huaweicloudsdkcore.sdk_request")
        signer = importlib.import_module("huaweicloudsdkcore.signer.signer")
        yield SimpleNamespace(
            BasicCredentials=creds.BasicCredentials, SdkRequest=req.SdkRequest, Signer=signer.Signer
        )
    assert os.environ.get("HOME") != str(home)


def _our_url(case: Case) -> str:
    query = case.raw_query
    if query is None:
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in case.query)
    return f"https://{case.host}{case.path}" + (f"?{query}" if query else "")


def _our_headers(case: Case) -> dict[str, str]:
    headers = {"X-Sdk-Date": DATE}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.project_id is not None:
        headers["X-Project-Id"] = case.project_id
    return headers


def _sdk_sign(sdk: SimpleNamespace, case: Case, ak: str, sk: str):
    creds = sdk.BasicCredentials(ak, sk, case.project_id)
    if case.token is not None:
        creds = creds.with_security_token(case.token)
    headers = {"X-Sdk-Date": DATE}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    request = sdk.SdkRequest(
        method=case.method,
        schema="https",
        host=case.host,
        resource_path=case.path,
        query_params=list(case.query),
        header_params=headers,
        body=case.body,
    )
    return creds.sign_request(request)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_signature_equals_official_sdk(sdk: SimpleNamespace, case: Case) -> None:
    creds = Credentials("AKIDEXAMPLE", "s3cr3t/key+value", security_token=case.token)
    ours = sign_request(creds, case.method, _our_url(case), _our_headers(case), case.body)
    theirs = _sdk_sign(sdk, case, "AKIDEXAMPLE", "s3cr3t/key+value")

    assert ours.headers["Authorization"] == theirs.header_params["Authorization"]
    # The query goes on the wire exactly as both sides signed it.
    their_query = theirs.uri.partition("?")[2]
    assert urlsplit(ours.url).query == their_query
    if case.token is not None:
        assert ours.headers["X-Security-Token"] == case.token
        assert "x-security-token" in ours.headers["Authorization"]
    else:
        assert "X-Security-Token" not in ours.headers


def test_published_vector() -> None:
    signed = sign_request(
        Credentials("AccessKey", "SecretKey"),
        "GET",
        "https://service.endpoint.myhuaweicloud.com/resources?size=1",
        {"X-Sdk-Date": "20200608T023900Z"},
        b"",
    )
    assert signed.headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, "
        "Signature=cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842"
    )


def test_published_vector_with_official_sdk(sdk: SimpleNamespace) -> None:
    request = sdk.SdkRequest(
        method="GET",
        schema="https",
        host="service.endpoint.myhuaweicloud.com",
        resource_path="/resources",
        query_params=[("size", "1")],
        header_params={"X-Sdk-Date": "20200608T023900Z"},
        body=b"",
    )
    sdk.Signer(SimpleNamespace(ak="AccessKey", sk="SecretKey")).sign(request)
    assert request.header_params["Authorization"].endswith(
        "Signature=cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842"
    )


def test_wire_url_is_canonical_and_unsigned_headers_pass_through() -> None:
    signed = sign_request(
        Credentials("ak", "sk"),
        "GET",
        "https://h.example/v1/a b/~x?z=1&a=2&a=1&e",
        {"User-Agent": "t", "X-Sdk-Date": DATE},
        b"",
    )
    assert signed.url == "https://h.example/v1/a%20b/~x?a=1&a=2&e=&z=1"
    assert signed.headers["User-Agent"] == "t"
    assert parse_authorization(signed.headers["Authorization"]).signed_headers == ("host", "x-sdk-date")


def test_date_comes_from_now_in_utc() -> None:
    moment = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)
    signed = sign_request(Credentials("ak", "sk"), "GET", "https://h/x", {}, b"", now=moment)
    assert signed.headers["X-Sdk-Date"] == "20240229T235958Z"
    assert signed.headers["Host"] == "h"


def test_secrets_not_in_reprs() -> None:
    creds = Credentials("AKID", "the-secret", security_token="the-token")
    signed = sign_request(creds, "POST", "https://h/x", {}, b"body-secret")
    for text in (repr(creds), repr(signed)):
        assert "the-secret" not in text and "the-token" not in text and "body-secret" not in text
    assert "AKID" in repr(creds)


# -- verification (the simulator's side) ------------------------------------------------------


def _signed(body: bytes = b'{"a": 1}', **kw: object):
    creds = Credentials("AKID", "SK", security_token=kw.pop("token", None))  # type: ignore[arg-type]
    now = kw.pop("now", datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    return sign_request(
        creds,
        "POST",
        "https://127.0.0.1:9999/v1/p/servers/x y/remote_console?b=2&a=1",
        {"Content-Type": "application/json", "X-Project-Id": "p"},
        body,
        now=now,  # type: ignore[arg-type]
    )


def _verify(signed, *, body=None, raw_path=None, headers=None, now=None, keys=None) -> str:
    parts = urlsplit(signed.url)
    return verify_request(
        (keys or {"AKID": "SK"}).get,
        signed.method,
        raw_path or f"{parts.path}?{parts.query}",
        headers or signed.headers,
        signed.body if body is None else body,
        now=now or datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
    )


def test_verify_accepts_what_we_sign() -> None:
    assert _verify(_signed()) == "AKID"
    assert _verify(_signed(token="sts")) == "AKID"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param({"body": b'{"a": 2}'}, id="body"),
        pytest.param({"raw_path": "/v1/p/servers/x%20y/remote_console?a=1&b=3"}, id="query"),
        pytest.param({"raw_path": "/v1/q/servers/x%20y/remote_console?a=1&b=2"}, id="path"),
        pytest.param({"keys": {"AKID": "other"}}, id="secret"),
        pytest.param({"keys": {"OTHER": "SK"}}, id="unknown-key"),
    ],
)
def test_verify_rejects_tampering(tamper: dict) -> None:
    with pytest.raises(SignatureError) as info:
        _verify(_signed(), **tamper)
    assert info.value.code == "APIGW.0301"


def test_verify_rejects_changed_signed_header() -> None:
    signed = _signed()
    headers = dict(signed.headers) | {"X-Project-Id": "someone-else"}
    with pytest.raises(SignatureError):
        _verify(signed, headers=headers)


def test_verify_rejects_clock_skew() -> None:
    signed = _signed()
    with pytest.raises(SignatureError) as info:
        _verify(signed, now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=16))
    assert info.value.code == "APIGW.0303"


def test_verify_rejects_missing_authorization() -> None:
    signed = _signed()
    headers = {k: v for k, v in signed.headers.items() if k != "Authorization"}
    with pytest.raises(SignatureError):
        _verify(signed, headers=headers)
