"""Cloud API responses from a hostile or broken API: wrong types, missing fields, junk and huge bodies,
invalid JSON, absurd Retry-After values, endless pagination. Every outcome is a parsed value or a
CloudError whose log line is one bounded line and never quotes a console URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.clouds.base import CloudError, CloudErrorKind, ConsoleURL, Server
from gateway.clouds.huawei.ecs import AKSKAuth, HuaweiECS, _json, parse_console, parse_server
from gateway.clouds.huawei.errors import RawResponse, error_from_response, parse_retry_after
from gateway.clouds.huawei.signer import Credentials
from tests.fuzz import tried

SECRET_URL = "https://127.0.0.1:8002/vnc_auto.html?token=SeCrEtToKeN-0123456789abcdefghijklmnopq"

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
SERVER_KEYS = [
    "id",
    "name",
    "status",
    "tags",
    "metadata",
    "locked",
    "OS-EXT-AZ:availability_zone",
    "enterprise_project_id",
]


@st.composite
def server_docs(draw: st.DrawFn) -> Any:
    """Mostly server-shaped objects whose fields are sometimes missing or of the wrong type."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    doc: dict[str, Any] = {}
    for key in SERVER_KEYS:
        choice = draw(st.integers(0, 4))
        if choice == 0:
            continue
        if choice == 1:
            doc[key] = draw(json_values)
        else:
            doc[key] = {
                "id": draw(st.text(min_size=1, max_size=20)),
                "name": draw(st.text(max_size=20)),
                "status": draw(st.sampled_from(["ACTIVE", "active", "SHUTOFF", "weird", ""])),
                "tags": draw(st.lists(st.text(max_size=8), max_size=3)),
                "metadata": draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)),
                "locked": draw(st.booleans()),
                "OS-EXT-AZ:availability_zone": draw(st.text(max_size=8)),
                "enterprise_project_id": draw(st.text(max_size=8)),
            }[key]
    return doc


@given(server_docs())
def test_server_objects(doc: Any) -> None:
    tried("cloud: server objects")
    try:
        server = parse_server(doc, cloud="c", project_id="p", region="r")
    except CloudError as exc:
        assert exc.kind is CloudErrorKind.INVALID_RESPONSE
        assert "\n" not in str(exc)
        return
    assert isinstance(server, Server) and server.id and isinstance(server.name, str)
    assert all(isinstance(t, str) for t in server.tags)


@given(
    st.one_of(
        json_values,
        st.builds(lambda v: {"remote_console": v}, json_values),
        st.builds(
            lambda v: {"remote_console": {"url": v, "protocol": "vnc"}},
            st.one_of(json_values, st.just(SECRET_URL), st.text().map(lambda t: t + SECRET_URL)),
        ),
    )
)
def test_console_objects_never_echo_the_url(doc: Any) -> None:
    tried("cloud: remote_console objects")
    try:
        console = parse_console(doc)
    except CloudError as exc:
        assert "SeCrEtToKeN" not in str(exc) and "SeCrEtToKeN" not in repr(exc)
        return
    assert isinstance(console, ConsoleURL)
    assert "SeCrEtToKeN" not in repr(console) and "SeCrEtToKeN" not in str(console)


_BODIES = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda n: b"[" * n),
    st.integers(1, 60_000).map(lambda n: b'{"a":' * n),
    st.sampled_from([b"\xff\xfe{}", b"NaN", b"1e999999", b"9" * 5000, b'"' + b"\\ud800" + b'"']),
)


@given(_BODIES)
def test_bodies_parse_or_fail_as_cloud_errors(body: bytes) -> None:
    tried("cloud: response bodies")
    try:
        doc = _json(RawResponse(200, {}, body), "op")
    except CloudError as exc:
        assert exc.kind is CloudErrorKind.INVALID_RESPONSE
        return
    assert isinstance(doc, dict)


_RETRY_AFTER = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e308",
            "inf",
            "nan",
            "30",
            " 7 ",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Mon, 31 Feb 2024 00:00:00 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
            "Sun, 06 Nov 0 08:49:37 GMT",
        ]
    ),
)


@given(st.integers(100, 599), _BODIES, _RETRY_AFTER, st.text(max_size=80))
def test_error_responses_always_become_one_bounded_line(
    status: int, body: bytes, retry_after: str | None, request_id: str
) -> None:
    tried("cloud: error responses")
    headers = {"X-Request-Id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    err = error_from_response(RawResponse(status, headers, body))
    assert isinstance(err, CloudError)
    line = str(err)
    assert "\n" not in line and "\r" not in line
    assert len(line) < 1200
    if err.retry_after is not None:
        assert 0 <= err.retry_after < float("inf")


@given(st.text(max_size=60))
def test_retry_after_is_none_or_a_finite_delay(value: str) -> None:
    tried("cloud: Retry-After")
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds < float("inf")


class _ScriptedECS(HuaweiECS):
    """The real client with its HTTP exchange replaced by scripted answers (no retries, no sleeps)."""

    def __init__(self, answers: list[RawResponse]) -> None:
        super().__init__(
            name="c",
            region="r",
            project_id="p",
            auth=AKSKAuth(Credentials("AK", "SK")),
            retries=0,
            page_size=2,
        )
        self._answers = answers
        self.requests = 0
        self._api.request = self._request  # type: ignore[method-assign]

    async def _request(  # type: ignore[override]
        self, op: str, method: str, url: str, headers: Mapping[str, str], body: bytes, **_: Any
    ) -> RawResponse:
        self.requests += 1
        resp = self._answers[min(self.requests - 1, len(self._answers) - 1)]
        if not 200 <= resp.status < 300:
            raise error_from_response(resp)
        return resp


_PAGES = st.lists(
    st.builds(
        lambda servers, count, status: RawResponse(
            status, {}, json.dumps({"servers": servers, "count": count}).encode()
        ),
        st.lists(server_docs(), max_size=3) | json_values,
        st.one_of(st.none(), st.integers(-3, 10), st.text(max_size=3), st.booleans()),
        st.sampled_from([200, 200, 200, 429, 500]),
    ),
    min_size=1,
    max_size=6,
)


@given(_PAGES)
def test_listing_ends_with_servers_or_a_cloud_error_never_a_loop(pages: list[RawResponse]) -> None:
    """The last answer repeats forever: a listing must still end (the page cap), not spin."""
    tried("cloud: paginated listings")
    client = _ScriptedECS(pages)
    try:
        servers = asyncio.run(client.list_servers())
    except CloudError:
        return
    finally:
        assert client.requests <= 10_001
    assert len({s.id for s in servers}) == len(servers)
