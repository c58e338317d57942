"""Sans-IO parts of the identity and Nova layers: token responses, the catalog, identity errors, the
sign-in backoff, Nova's fault bodies, 409 explanations and microversion negotiation."""

from __future__ import annotations

import json

import pytest

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.identity import (
    CatalogEndpoint,
    IdentityBackoff,
    choose_endpoint,
    identity_error,
    parse_token_response,
)
from gateway.clouds.openstack.errors import ApiVersions, conflict_reason, nova_error, parse_versions
from gateway.clouds.wire import RawResponse

CATALOG = (
    CatalogEndpoint("identity", "public", "RegionOne", "https://k.example/v3"),
    CatalogEndpoint("compute", "public", "RegionOne", "https://nova.example/v2.1"),
    CatalogEndpoint("compute", "internal", "RegionOne", "http://nova.internal/v2.1"),
    CatalogEndpoint("compute", "public", "RegionTwo", "https://nova2.example/v2.1"),
)


def test_token_response_gives_token_expiry_project_and_catalog() -> None:
    body = {
        "token": {
            "expires_at": "2030-01-01T00:00:00.000000Z",
            "project": {"id": "p1"},
            "catalog": [
                {
                    "type": "compute",
                    "endpoints": [{"interface": "public", "region_id": "R", "url": "https://n/v2.1"}],
                }
            ],
        }
    }
    issued = parse_token_response({"X-Subject-Token": "gAAAA-secret"}, json.dumps(body).encode())
    assert (issued.token, issued.project_id) == ("gAAAA-secret", "p1")
    assert issued.catalog == (CatalogEndpoint("compute", "public", "R", "https://n/v2.1"),)
    assert "gAAAA-secret" not in repr(issued)


@pytest.mark.parametrize(
    ("interface", "region", "url"),
    [
        ("public", "RegionOne", "https://nova.example/v2.1"),
        ("internal", "RegionOne", "http://nova.internal/v2.1"),
        ("public", "RegionTwo", "https://nova2.example/v2.1"),
    ],
)
def test_catalog_choice_by_interface_and_region(interface: str, region: str, url: str) -> None:
    assert choose_endpoint(CATALOG, service_type="compute", interface=interface, region=region) == url


def test_catalog_without_the_endpoint_names_what_is_offered() -> None:
    with pytest.raises(CloudError) as info:
        choose_endpoint(CATALOG, service_type="compute", interface="admin", region="RegionOne")
    assert info.value.kind is CloudErrorKind.AUTH
    assert "public@RegionOne" in str(info.value) and "internal@RegionOne" in str(info.value)


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (401, CloudErrorKind.AUTH, "rejected the gateway's own credentials"),
        (404, CloudErrorKind.AUTH, "identity service address is wrong"),
        (403, CloudErrorKind.AUTH, "may not sign in"),
        (429, CloudErrorKind.THROTTLED, "throttling"),
        (503, CloudErrorKind.UNREACHABLE, "identity service is unavailable"),
    ],
)
def test_identity_failures_are_never_about_the_server(status: int, kind: CloudErrorKind, words: str) -> None:
    body = json.dumps({"error": {"code": status, "title": "x", "message": "m"}}).encode()
    err = identity_error(RawResponse(status, {}, body))
    assert err.kind is kind and words in err.user_message
    assert "server" not in err.user_message


def test_backoff_doubles_to_its_cap_and_resets_on_success() -> None:
    backoff = IdentityBackoff(base=30, cap=100)
    assert backoff.remaining(0) == 0
    assert backoff.rejected(0) == 30 and backoff.remaining(10) == 20
    assert backoff.rejected(30) == 60 and backoff.rejected(90) == 100
    backoff.accepted()
    assert backoff.remaining(91) == 0


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (
            404,
            {"itemNotFound": {"code": 404, "message": "Instance x could not be found."}},
            "NOT_FOUND",
            "itemNotFound",
        ),
        (
            409,
            {"conflictingRequest": {"code": 409, "message": "not ready"}},
            "BAD_STATE",
            "conflictingRequest",
        ),
        (400, {"badRequest": {"code": 400, "message": "type unavailable"}}, "BAD_REQUEST", "badRequest"),
        (
            501,
            {"notImplemented": {"code": 501, "message": "Feature not supported."}},
            "BAD_REQUEST",
            "notImplemented",
        ),
        (403, {"forbidden": {"code": 403, "message": "Policy doesn't allow"}}, "FORBIDDEN", "forbidden"),
        (413, {"overLimit": {"code": 413, "message": "rate"}}, "THROTTLED", "overLimit"),
        (
            406,
            {"computeFault": {"code": 406, "message": "Version 2.6 is not supported"}},
            "BAD_REQUEST",
            "computeFault",
        ),
    ],
)
def test_nova_faults(status: int, body: dict, kind: str, code: str) -> None:
    err = nova_error(RawResponse(status, {"x-openstack-request-id": "req-1"}, json.dumps(body).encode()))
    assert (err.kind.name, err.code, err.request_id) == (kind, code, "req-1")


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ({"OS-EXT-STS:task_state": "migrating"}, "the server is being migrated"),
        ({"OS-EXT-STS:task_state": "deleting"}, "the server is being deleted"),
        (
            {"OS-EXT-STS:task_state": None, "OS-EXT-STS:vm_state": "building"},
            "the server is still being built",
        ),
        ({"OS-EXT-STS:task_state": "image_snapshot"}, "the server is busy (image snapshot)"),
        (
            {"OS-EXT-STS:task_state": None, "status": "ACTIVE"},
            "the server has no compute host to serve a console yet",
        ),
        (None, "the server is not ready for a console"),
    ],
)
def test_409_explained_from_the_task_state(server: dict | None, reason: str) -> None:
    assert conflict_reason(server) == reason


def test_microversion_negotiation() -> None:
    modern = parse_versions(b'{"version": {"version": "2.96", "min_version": "2.1"}}')
    assert modern.remote_consoles and modern.best((2, 73)) == (2, 73)
    old = parse_versions(b'{"version": {"version": "2.5", "min_version": "2.1"}}')
    assert not old.remote_consoles and old.best((2, 73)) == (2, 5)
    assert parse_versions(b'{"version": {"version": "", "min_version": ""}}') == ApiVersions()
    assert parse_versions(b"not json") == ApiVersions()
