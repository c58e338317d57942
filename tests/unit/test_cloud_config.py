"""`[[clouds]]` entries per provider: which credentials go with which provider, and identity URLs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import CloudSection

BASE = {"name": "lab", "region": "RegionOne", "project_id": "p1"}
KEYSTONE = {"url": "https://keystone.example:5000/v3", "user": "gw", "password": "pw"}


def cloud(**kw: Any) -> CloudSection:
    return CloudSection.model_validate(BASE | kw)


@pytest.mark.parametrize(
    "written",
    ["https://iam.example/v3", "https://iam.example/v3/", "https://iam.example/", "https://iam.example"],
)
def test_identity_urls_written_with_or_without_v3_mean_the_same(written: str) -> None:
    iam = cloud(iam={"domain": "d", "user": "u", "password": "p", "endpoint": written}).iam
    assert iam is not None and iam.endpoint == "https://iam.example"
    keystone = cloud(provider="openstack", keystone=KEYSTONE | {"url": written}).keystone
    assert keystone is not None and keystone.url == "https://iam.example"


@pytest.mark.parametrize("bad", ["iam.example/v3", "ftp://iam.example", "https://iam.example/v3?x=1"])
def test_identity_url_must_be_an_absolute_http_url(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        cloud(provider="openstack", keystone=KEYSTONE | {"url": bad})
    assert "absolute http(s) URL" in str(info.value)


def test_openstack_with_password_or_application_credential() -> None:
    assert cloud(provider="openstack", keystone=KEYSTONE).interface == "public"
    app = {
        "url": "https://k.example",
        "application_credential_id": "id",
        "application_credential_secret": "s",
    }
    keystone = cloud(provider="openstack", keystone=app, interface="internal").keystone
    assert keystone is not None and keystone.user_domain == "Default"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"provider": "openstack"}, "credentials missing: set keystone"),
        ({"provider": "openstack", "access_key": "AK", "secret_key": "SK"}, "endpoint: required"),
        ({"provider": "openstack", "keystone": KEYSTONE, "access_key": "AK", "secret_key": "SK"}, "not both"),
        ({"provider": "openstack", "iam": {"domain": "d", "user": "u", "password": "p"}}, "iam is for"),
        ({"keystone": KEYSTONE, "access_key": "AK", "secret_key": "SK"}, "keystone is for"),
        (
            {"provider": "openstack", "keystone": {"url": "https://k.example", "user": "u"}},
            "must both be set",
        ),
        (
            {"provider": "openstack", "keystone": KEYSTONE | {"application_credential_id": "i"}},
            "not both",
        ),
    ],
)
def test_credentials_that_do_not_fit_the_provider_are_refused(entry: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError) as info:
        cloud(**entry)
    assert why in str(info.value)


def test_open_telekom_cloud_with_aksk_on_the_nova_path() -> None:
    otc = cloud(
        provider="openstack",
        region="eu-de",
        endpoint="https://ecs.eu-de.otc.t-systems.com/v2.1/{project_id}",
        access_key="AK",
        secret_key="SK",
    )
    assert otc.keystone is None and otc.endpoint.endswith("{project_id}")
