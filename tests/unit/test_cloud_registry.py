"""Providers by name: every `provider` value the config accepts has a builder, and the builder is used."""

from __future__ import annotations

import typing

from gateway.clouds.huawei import HuaweiECS
from gateway.clouds.registry import PROVIDERS, build_provider
from gateway.config import CloudSection


def test_every_configurable_provider_has_a_builder_and_no_more() -> None:
    accepted = set(typing.get_args(CloudSection.model_fields["provider"].annotation))
    assert accepted == set(PROVIDERS)


def test_provider_defaults_to_huawei_so_existing_configs_keep_working() -> None:
    cfg = CloudSection.model_validate(
        {"name": "hw", "region": "ap-southeast-1", "project_id": "p1", "access_key": "AK", "secret_key": "SK"}
    )
    assert cfg.provider == "huawei"
    provider = build_provider(cfg)
    assert isinstance(provider, HuaweiECS)
    assert (provider.name, provider.region, provider.project_id) == ("hw", "ap-southeast-1", "p1")
