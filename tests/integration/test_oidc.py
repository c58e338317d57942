"""OIDCClient against the real oidc-provider (node) on loopback: discovery, the full code flow, refusals."""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import aiohttp
import jwt
import pytest

from gateway.auth.identity import AuthError
from gateway.auth.oidc import OIDCClient, OIDCSettings, safe_return_to
from tests.support.oidc import OIDCProvider, sign_in, start_oidc_provider

# Nothing listens here: the flow stops at the redirect, as a browser would hand it to the gateway.
REDIRECT_URI = "http://127.0.0.1:9/oidc/callback"
POST_LOGOUT_URI = "http://127.0.0.1:9/signed-out"
SCOPES = ("openid", "profile", "email", "groups")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    handle = start_oidc_provider(
        redirect_uris=[REDIRECT_URI],
        post_logout_redirect_uris=[POST_LOGOUT_URI],
        id_token_alg="ES256",
        log_dir=tmp_path_factory.mktemp("oidc"),
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def userinfo_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """Standard-conforming: scope claims only at userinfo; client authenticates with client_secret_post."""
    handle = start_oidc_provider(
        redirect_uris=[REDIRECT_URI],
        claims_in_userinfo_only=True,
        auth_method="client_secret_post",
        log_dir=tmp_path_factory.mktemp("oidc"),
    )
    yield handle
    handle.stop()


def test_a_client_secret_that_begins_with_a_dash_starts_the_provider(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """token_urlsafe gives such a secret one time in 64; the provider then refused to start."""
    handle = start_oidc_provider(
        redirect_uris=[REDIRECT_URI], client_secret="-dash-first", log_dir=tmp_path_factory.mktemp("oidc")
    )
    try:
        assert handle.client_secret == "-dash-first" and handle.issuer.startswith("http://127.0.0.1:")
    finally:
        handle.stop()


def settings_for(provider: OIDCProvider, **overrides: object) -> OIDCSettings:
    base = OIDCSettings(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        redirect_uri=REDIRECT_URI,
        scopes=SCOPES,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_discovery_reads_the_provider_metadata(
    provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    assert client.metadata is not None
    assert client.metadata["issuer"] == provider.issuer
    assert client.jwks is not None and client.jwks.url.startswith(provider.issuer)
    url, pending = client.begin("/servers/42", now=time.time())
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith(client.metadata["authorization_endpoint"])
    assert query["code_challenge_method"] == "S256" and query["state"] == pending.state
    assert query["nonce"] == pending.nonce and query["redirect_uri"] == REDIRECT_URI
    assert pending.return_to == "/servers/42"
    assert provider.client_secret not in repr(client.settings) + repr(client) + repr(pending)
    assert pending.nonce not in repr(pending) and pending.code_verifier not in repr(pending)


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/servers/1?x=1", "/servers/1?x=1"),
        ("//evil.test/", "/"),
        ("https://evil.test/", "/"),
        ("/\\evil.test", "/"),
        ("/a b", "/"),
        ("", "/"),
        ("servers", "/"),
    ],
)
def test_return_to_is_local_only(asked: str, kept: str) -> None:
    assert safe_return_to(asked) == kept


async def test_discovery_refuses_an_issuer_that_differs(
    provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(provider, issuer=provider.issuer + "/"), http)
    with pytest.raises(AuthError, match=r"does not equal the configured issuer"):
        await client.discover()


async def test_code_flow_yields_identity_with_nested_groups(
    provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(provider, groups_claim="org.roles"), http)
    await client.discover()
    url, pending = client.begin("/console", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI, login="alice")
    assert callback["iss"] == provider.issuer  # RFC 9207 parameter, checked by finish()
    identity, id_token, _ = await client.finish(callback, pending, now=time.time())
    assert identity.user == "alice"
    assert identity.email == "alice@example.test"
    assert identity.groups == ("vm-admin", "viewer")
    assert identity.method == "oidc"
    assert jwt.get_unverified_header(id_token)["alg"] == "ES256"
    # The code is single-use: replaying the same callback fails at the token endpoint.
    with pytest.raises(AuthError, match=r"token endpoint returned HTTP 400"):
        await client.finish(callback, pending, now=time.time())
    logout = client.logout_url(id_token_hint=id_token, post_logout_redirect_uri=POST_LOGOUT_URI)
    assert logout is not None and logout.startswith(provider.issuer)
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(logout).query))["id_token_hint"] == id_token


async def test_flat_groups_string_is_split(provider: OIDCProvider, http: aiohttp.ClientSession) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    identity, _, _ = await client.finish(
        await sign_in(url, redirect_uri=REDIRECT_URI, login="bob"), pending, now=time.time()
    )
    assert (identity.user, identity.groups) == ("bob", ("viewers", "auditors"))


async def test_unverified_email_is_dropped(provider: OIDCProvider, http: aiohttp.ClientSession) -> None:
    client = OIDCClient(settings_for(provider, use_userinfo=False), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI, login="carol")
    identity, _, _ = await client.finish(callback, pending, now=time.time())
    assert (identity.user, identity.email, identity.groups) == ("carol", None, ())


async def test_state_mismatch_is_refused_before_the_code_is_used(
    provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI)
    forged = {**callback, "state": callback["state"][:-1] + ("A" if callback["state"][-1] != "A" else "B")}
    with pytest.raises(AuthError, match=r"state mismatch"):
        await client.finish(forged, pending, now=time.time())
    # The code was not spent by the refused attempt.
    identity, _, _ = await client.finish(callback, pending, now=time.time())
    assert identity.user == "alice"


async def test_nonce_mismatch_is_refused(provider: OIDCProvider, http: aiohttp.ClientSession) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI)
    other = dataclasses.replace(pending, nonce="not-the-nonce-sent-to-the-provider")
    with pytest.raises(AuthError, match=r"nonce mismatch"):
        await client.finish(callback, other, now=time.time())


async def test_pkce_verifier_must_match(provider: OIDCProvider, http: aiohttp.ClientSession) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI)
    other = dataclasses.replace(pending, code_verifier="x" * 64)
    with pytest.raises(AuthError, match=r"token endpoint returned HTTP 400 \(invalid_grant\)"):
        await client.finish(callback, other, now=time.time())


async def test_wrong_client_secret_is_refused(provider: OIDCProvider, http: aiohttp.ClientSession) -> None:
    client = OIDCClient(settings_for(provider, client_secret="wrong"), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI)
    with pytest.raises(AuthError, match=r"HTTP 401 \(invalid_client\)") as caught:
        await client.finish(callback, pending, now=time.time())
    assert "wrong" not in caught.value.reason


async def test_id_token_checked_against_our_clock(
    provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    callback = await sign_in(url, redirect_uri=REDIRECT_URI)
    # A gateway clock far behind the provider: the token looks issued in the future.
    with pytest.raises(AuthError, match=r"id token not yet valid"):
        await client.finish(
            callback, dataclasses.replace(pending, created=time.time() - 3600), now=time.time() - 3600 + 1
        )


async def test_provider_error_is_reported(provider: OIDCProvider, http: aiohttp.ClientSession) -> None:
    client = OIDCClient(settings_for(provider), http)
    await client.discover()
    _, pending = client.begin("/", now=time.time())
    query = {
        "state": pending.state,
        "error": "access_denied",
        "error_description": "End-User aborted",
        "iss": provider.issuer,
    }
    with pytest.raises(AuthError, match=r"returned error 'access_denied'") as caught:
        await client.finish(query, pending, now=time.time())
    assert caught.value.user_message == "Your identity provider refused the sign-in."


async def test_groups_from_userinfo_when_id_token_lacks_them(
    userinfo_provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(userinfo_provider), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    identity, id_token, _ = await client.finish(
        await sign_in(url, redirect_uri=REDIRECT_URI), pending, now=time.time()
    )
    assert "groups" not in jwt.decode(id_token, options={"verify_signature": False})
    assert identity == identity.__class__(
        user="alice", groups=("console-users", "ops"), email="alice@example.test", method="oidc"
    )


async def test_without_userinfo_a_missing_username_claim_fails(
    userinfo_provider: OIDCProvider, http: aiohttp.ClientSession
) -> None:
    client = OIDCClient(settings_for(userinfo_provider, use_userinfo=False), http)
    await client.discover()
    url, pending = client.begin("/", now=time.time())
    with pytest.raises(AuthError, match=r"lacks the username claim 'preferred_username'"):
        await client.finish(await sign_in(url, redirect_uri=REDIRECT_URI), pending, now=time.time())
