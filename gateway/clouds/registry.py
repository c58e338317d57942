"""Providers by name: `[[clouds]] provider = "..."` picks the builder that turns the entry into a provider.

A new cloud family is one builder here and one `Literal` value in `CloudSection.provider`
(a unit test keeps the two in step). `huawei`: ECS v1 with AK/SK or an IAM token; `openstack`: Nova's
compute API with a Keystone token, or AK/SK on a Huawei-stack cloud's Nova-style paths.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping

import aiohttp

from gateway.clouds.base import ApiObserver, CloudProvider
from gateway.clouds.http import HttpOptions
from gateway.clouds.huawei.ecs import AKSKAuth, HuaweiECS
from gateway.clouds.huawei.iam import IAMTokenAuth
from gateway.clouds.huawei.signer import Credentials
from gateway.clouds.keystone import KeystoneAuth
from gateway.clouds.openstack.nova import NovaCompute
from gateway.config import CloudSection
from gateway.upstream import build_ssl_context

__all__ = ["PROVIDERS", "Builder", "api_ssl", "build_provider"]

# (the [[clouds]] entry, the API-call observer, a shared HTTP session or None for the provider's own)
Builder = Callable[[CloudSection, ApiObserver | None, aiohttp.ClientSession | None], CloudProvider]


def api_ssl(cfg: CloudSection) -> ssl.SSLContext | bool:
    """TLS for the cloud API: the system roots unless the entry names a CA file or turns checks off."""
    if cfg.ca_file or not cfg.verify_tls:
        return build_ssl_context(verify=cfg.verify_tls, ca_file=str(cfg.ca_file) if cfg.ca_file else None)
    return True


def _http(
    cfg: CloudSection, observe: ApiObserver | None, session: aiohttp.ClientSession | None
) -> HttpOptions:
    """What every provider's HTTP side takes from its cloud entry."""
    return HttpOptions(
        ssl=api_ssl(cfg),
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        retries=cfg.retries,
        observe=observe,
        session=session,
    )


def _aksk(cfg: CloudSection) -> AKSKAuth:
    token = cfg.security_token.get_secret_value() or None
    return AKSKAuth(Credentials(cfg.access_key.get_secret_value(), cfg.secret_key.get_secret_value(), token))


def _huawei(
    cfg: CloudSection, observe: ApiObserver | None, session: aiohttp.ClientSession | None
) -> CloudProvider:
    auth: AKSKAuth | IAMTokenAuth
    if cfg.iam is not None:
        auth = IAMTokenAuth(
            region=cfg.region,
            project_id=cfg.project_id,
            domain=cfg.iam.domain,
            user=cfg.iam.user,
            password=cfg.iam.password.get_secret_value(),
            endpoint=cfg.iam.endpoint or None,
        )
    else:
        auth = _aksk(cfg)
    return HuaweiECS(
        name=cfg.name,
        region=cfg.region,
        project_id=cfg.project_id,
        auth=auth,
        endpoint=cfg.endpoint or None,
        **_http(cfg, observe, session),
    )


def _openstack(
    cfg: CloudSection, observe: ApiObserver | None, session: aiohttp.ClientSession | None
) -> CloudProvider:
    """Nova with Keystone sign-in; or a Huawei-stack cloud's Nova-style API (Open Telekom Cloud) with
    AK/SK, where `endpoint` names the compute API since there is no catalog."""
    auth: KeystoneAuth | AKSKAuth
    if cfg.keystone is not None:
        k = cfg.keystone
        auth = KeystoneAuth(
            url=k.url,
            user=k.user,
            password=k.password.get_secret_value(),
            user_domain=k.user_domain,
            project_id=cfg.project_id,
            application_credential_id=k.application_credential_id,
            application_credential_secret=k.application_credential_secret.get_secret_value(),
        )
    else:
        auth = _aksk(cfg)
    return NovaCompute(
        name=cfg.name,
        region=cfg.region,
        project_id=cfg.project_id,
        auth=auth,
        endpoint=cfg.endpoint or None,
        interface=cfg.interface,
        **_http(cfg, observe, session),
    )


PROVIDERS: Mapping[str, Builder] = {"huawei": _huawei, "openstack": _openstack}


def build_provider(
    cfg: CloudSection, *, observe: ApiObserver | None = None, session: aiohttp.ClientSession | None = None
) -> CloudProvider:
    """The provider for one `[[clouds]]` entry, chosen by its `provider` key."""
    return PROVIDERS[cfg.provider](cfg, observe, session)
