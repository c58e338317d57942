"""Identity and Nova responses are hostile input too: token responses, catalogs, Nova fault bodies and
version documents either parse or fail as a bounded CloudError; an error text never quotes the token."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.clouds.base import CloudError
from gateway.clouds.identity import choose_endpoint, identity_error, parse_token_response
from gateway.clouds.openstack.errors import ApiVersions, conflict_reason, nova_error, parse_versions
from gateway.clouds.wire import RawResponse
from tests.fuzz import tried

TOKEN = "gAAAAAB-fuzz-token-marker-0123456789"
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
endpoint = st.fixed_dictionaries(
    {},
    optional={
        "interface": values | st.sampled_from(["public", "internal"]),
        "region_id": values,
        "url": values,
    },
)
catalogs = st.lists(
    st.fixed_dictionaries(
        {},
        optional={"type": values | st.just("compute"), "endpoints": st.lists(endpoint, max_size=3) | values},
    ),
    max_size=3,
)
token_docs = st.fixed_dictionaries(
    {},
    optional={
        "expires_at": values | st.just("2030-01-01T00:00:00Z"),
        "project": values | st.fixed_dictionaries({"id": values}),
        "catalog": catalogs | values,
    },
)


@given(st.one_of(token_docs.map(lambda t: {"token": t}), values), st.booleans())
def test_token_responses_parse_or_fail_cleanly(doc: Any, with_header: bool) -> None:
    tried("identity: token responses")
    headers = {"X-Subject-Token": TOKEN} if with_header else {}
    try:
        issued = parse_token_response(headers, json.dumps(doc).encode())
    except CloudError as err:
        assert TOKEN not in str(err) and "\n" not in str(err)
        return
    assert issued.token == TOKEN and TOKEN not in repr(issued)
    try:
        choose_endpoint(issued.catalog, service_type="compute", interface="public", region="R")
    except CloudError as err:
        assert "\n" not in str(err)


@given(
    st.integers(100, 599), st.one_of(values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200))
)
def test_identity_and_nova_errors_never_raise(status: int, body: bytes) -> None:
    tried("identity/nova: error bodies")
    for mapper in (identity_error, nova_error):
        err = mapper(RawResponse(status, {"Retry-After": "3"}, body))
        assert isinstance(err, CloudError) and "\n" not in str(err)
        assert err.code is None or len(err.code) <= 40


servers = st.fixed_dictionaries(
    {},
    optional={
        "OS-EXT-STS:task_state": values
        | st.sampled_from(["migrating", "deleting", "x\ny", "image_snapshot"]),
        "OS-EXT-STS:vm_state": values | st.just("building"),
        "status": values,
    },
)
version_docs = st.fixed_dictionaries(
    {},
    optional={
        "version": st.fixed_dictionaries(
            {},
            optional={
                "version": values | st.from_regex(r"\d\.\d{1,3}", fullmatch=True),
                "min_version": values,
            },
        )
    },
)


@given(st.one_of(values, version_docs), st.one_of(values, servers))
def test_version_documents_and_409_explanations_never_raise(doc: Any, server: Any) -> None:
    tried("nova: version documents, 409 servers")
    versions = parse_versions(json.dumps(doc).encode())
    assert isinstance(versions, ApiVersions) and versions.minimum <= versions.maximum
    reason = conflict_reason(server if isinstance(server, dict) else None)
    assert reason.startswith("the server") and reason.isprintable() and len(reason) < 100
