"""Signed proxy assertions and the JWKS cache, against keys made here and a JWKS served on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth.assertion import AssertionVerifier
from gateway.auth.identity import AuthError, Identity
from gateway.auth.jwks import JWKSCache

ISSUER = "https://sso.example.test"
AUDIENCE = "novnc-gateway"
NOW = 1_700_000_000


@dataclass
class Key:
    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        data = algorithm.to_jwk(self.private.public_key(), as_dict=True)  # type: ignore[attr-defined]
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = "default", **header: Any) -> str:
        headers = {"kid": self.kid if kid == "default" else kid, **header}
        if headers["kid"] is None:
            del headers["kid"]
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


@pytest.fixture(scope="module")
def es_key() -> Key:
    return Key("es-1", "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def rs_key() -> Key:
    return Key("rs-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1",
        "email": "alice@example.test",
        "groups": ["ops", "console-users"],
        "iat": NOW - 5,
        "nbf": NOW - 5,
        "exp": NOW + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@dataclass
class JWKSServer:
    url: str
    keys: list[dict[str, Any]]
    requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def jwks_server(es_key: Key, rs_key: Key) -> AsyncIterator[JWKSServer]:
    state = JWKSServer(url="", keys=[es_key.jwk, rs_key.jwk])

    async def handler(_request: web.Request) -> web.Response:
        state.requests += 1
        return web.json_response({"keys": state.keys})

    async def huge(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [], "pad": "x" * 600_000})

    app = web.Application()
    app.router.add_get("/jwks", handler)
    app.router.add_get("/huge", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/jwks"
    yield state
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(jwks_server: JWKSServer, http: aiohttp.ClientSession, clock: Clock) -> AssertionVerifier:
    cache = JWKSCache(jwks_server.url, http, min_refetch=30, clock=clock)
    return AssertionVerifier(header="X-Pomerium-Jwt-Assertion", issuer=ISSUER, audience=AUDIENCE, jwks=cache)


EXPECTED = Identity(
    user="alice@example.test", groups=("ops", "console-users"), email="alice@example.test", method="proxy-jwt"
)


@pytest.mark.parametrize("which", ["es", "rs"])
async def test_valid_assertion_via_jwks(
    verifier: AssertionVerifier, es_key: Key, rs_key: Key, jwks_server: JWKSServer, which: str
) -> None:
    key = es_key if which == "es" else rs_key
    assert await verifier.verify(key.sign(claims()), now=NOW) == EXPECTED
    assert await verifier.verify(key.sign(claims()), now=NOW) == EXPECTED
    assert jwks_server.requests == 1  # cached


async def test_valid_assertion_via_pem(es_key: Key, rs_key: Key) -> None:
    for key in (es_key, rs_key):
        pem = AssertionVerifier(
            header="Cf-Access-Jwt-Assertion", issuer=ISSUER, audience=AUDIENCE, public_key_pem=key.public_pem
        )
        assert await pem.verify(key.sign(claims(), kid=None), now=NOW) == EXPECTED
    wrong = AssertionVerifier(header="h", issuer=ISSUER, audience=AUDIENCE, public_key_pem=rs_key.public_pem)
    with pytest.raises(AuthError, match=r"^the configured public key cannot verify ES256$"):
        await wrong.verify(es_key.sign(claims()), now=NOW)


async def test_nested_claims_and_string_groups(
    jwks_server: JWKSServer, http: aiohttp.ClientSession, es_key: Key
) -> None:
    nested = AssertionVerifier(
        header="h",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=JWKSCache(jwks_server.url, http),
        username_claim="user.name",
        groups_claim="https://example.test/roles",
    )
    token = es_key.sign(claims(user={"name": "alice"}, **{"https://example.test/roles": "a b,c"}))
    identity = await nested.verify(token, now=NOW)
    assert (identity.user, identity.groups) == ("alice", ("a", "b", "c"))


def forged_hs256(pem: str, payload: dict[str, Any], kid: str) -> str:
    """The classic confusion attack: HMAC with the verifier's own public key as the secret."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        + "."
        + b64(json.dumps(payload).encode())
    )
    signature = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def tamper(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


async def test_each_bad_assertion_has_its_own_reason(
    verifier: AssertionVerifier, es_key: Key, rs_key: Key
) -> None:
    other_signed = es_key.sign(claims(email="mallory@example.test"))
    cases = {
        "wrong issuer": (es_key.sign(claims(iss="https://evil.test")), "assertion issuer mismatch"),
        "wrong audience": (es_key.sign(claims(aud="another-app")), "assertion audience mismatch"),
        "expired": (es_key.sign(claims(exp=NOW - 61)), "assertion expired 61 s ago"),
        "not yet valid": (
            es_key.sign(claims(nbf=NOW + 120)),
            "assertion not yet valid (nbf 120 s in the future",
        ),
        "issued in future": (es_key.sign(claims(iat=NOW + 120)), "assertion not yet valid (issued 120 s"),
        "alg none": (jwt.encode(claims(), None, algorithm="none"), "assertion algorithm 'none' not allowed"),
        "hs256 confusion": (
            forged_hs256(rs_key.public_pem, claims(), rs_key.kid),
            "assertion algorithm 'HS256' not allowed",
        ),
        "tampered signature": (tamper(es_key.sign(claims())), "assertion signature invalid"),
        "no exp": (es_key.sign(claims(exp=None)), "assertion lacks the 'exp' claim"),
        "no email": (es_key.sign(claims(email=None)), "token lacks the username claim 'email'"),
        "not a jwt": ("abc.def", "assertion is not a compact JWS"),
        "garbage header": ("!!!.e30.sig", "assertion is malformed (header)"),
    }
    reasons = {}
    for name, (token, reason) in cases.items():
        with pytest.raises(AuthError) as caught:
            await verifier.verify(token, now=NOW)
        assert caught.value.reason.startswith(reason), (name, caught.value.reason)
        assert caught.value.user_message != caught.value.reason
        reasons[name] = caught.value.reason
    assert len(set(reasons.values())) == len(reasons)
    genuine = es_key.sign(claims()).split(".")
    swapped = f"{genuine[0]}.{other_signed.split('.')[1]}.{genuine[2]}"  # another payload, our signature
    with pytest.raises(AuthError, match=r"^assertion signature invalid$"):
        await verifier.verify(swapped, now=NOW)
    assert await verifier.verify(es_key.sign(claims(exp=NOW - 59)), now=NOW)  # within the skew


async def test_hs256_refused_even_with_pem_verifier(rs_key: Key) -> None:
    pem = AssertionVerifier(
        header="h", issuer=ISSUER, audience=AUDIENCE, public_key_pem=rs_key.public_pem, algorithms=("RS256",)
    )
    with pytest.raises(AuthError, match=r"algorithm 'HS256' not allowed"):
        await pem.verify(forged_hs256(rs_key.public_pem, claims(), rs_key.kid), now=NOW)
    with pytest.raises(ValueError, match=r"only asymmetric algorithms"):
        AssertionVerifier(
            header="h",
            issuer=ISSUER,
            audience=AUDIENCE,
            public_key_pem=rs_key.public_pem,
            algorithms=("RS256", "HS256"),
        )


async def test_unknown_kid_refetches_once_then_rate_limits(
    verifier: AssertionVerifier, es_key: Key, jwks_server: JWKSServer, clock: Clock
) -> None:
    assert await verifier.verify(es_key.sign(claims()), now=NOW) == EXPECTED
    assert jwks_server.requests == 1
    clock.now += 31
    rogue = Key("rogue", "ES256", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(AuthError, match=r"^unknown signing key id 'rogue' for ES256"):
        await verifier.verify(rogue.sign(claims()), now=NOW)
    assert jwks_server.requests == 2  # exactly one refetch
    clock.now += 5
    with pytest.raises(AuthError, match=r"^unknown signing key id 'rogue'"):
        await verifier.verify(rogue.sign(claims()), now=NOW)
    assert jwks_server.requests == 2  # rate-limited
    assert await verifier.verify(es_key.sign(claims()), now=NOW) == EXPECTED  # known keys still work


async def test_key_rotation_picked_up_by_refetch(
    verifier: AssertionVerifier, es_key: Key, jwks_server: JWKSServer, clock: Clock
) -> None:
    assert await verifier.verify(es_key.sign(claims()), now=NOW) == EXPECTED
    successor = Key("es-2", "ES256", ec.generate_private_key(ec.SECP256R1()))
    jwks_server.keys = [successor.jwk]
    clock.now += 30
    assert await verifier.verify(successor.sign(claims()), now=NOW) == EXPECTED
    assert jwks_server.requests == 2
    clock.now += 30
    with pytest.raises(AuthError, match=r"unknown signing key id 'es-1'"):  # retired key
        await verifier.verify(es_key.sign(claims()), now=NOW)


async def test_jwks_ttl_expiry_refreshes(
    jwks_server: JWKSServer, http: aiohttp.ClientSession, es_key: Key, clock: Clock
) -> None:
    cache = JWKSCache(jwks_server.url, http, ttl=60, clock=clock)
    await cache.key_for("es-1", "ES256")
    clock.now += 59
    await cache.key_for("es-1", "ES256")
    assert jwks_server.requests == 1
    clock.now += 1
    await cache.key_for("es-1", "ES256")
    assert jwks_server.requests == 2


async def test_jwks_key_selection(
    jwks_server: JWKSServer, http: aiohttp.ClientSession, es_key: Key, rs_key: Key
) -> None:
    cache = JWKSCache(jwks_server.url, http)
    assert (await cache.key_for("es-1", "ES256")).algorithm_name == "ES256"
    with pytest.raises(AuthError, match=r"unknown signing key id 'es-1' for RS256"):  # kid of the wrong type
        await cache.key_for("es-1", "RS256")
    assert (await cache.key_for(None, "RS256")).algorithm_name == "RS256"  # the only RSA key
    jwks_server.keys.append(Key("es-3", "ES256", ec.generate_private_key(ec.SECP256R1())).jwk)
    fresh = JWKSCache(jwks_server.url, http)
    with pytest.raises(AuthError, match=r"unknown signing key id None"):  # no kid, two EC keys: ambiguous
        await fresh.key_for(None, "ES256")
    with pytest.raises(AuthError, match=r"algorithm 'HS256' not allowed"):
        await fresh.key_for("es-1", "HS256")


async def test_jwks_fetch_failure_is_reported(http: aiohttp.ClientSession, jwks_server: JWKSServer) -> None:
    cache = JWKSCache(jwks_server.url.replace("/jwks", "/missing"), http)
    with pytest.raises(AuthError, match=r"returned HTTP 404"):
        await cache.key_for("es-1", "ES256")
    with pytest.raises(AuthError, match=r"unavailable"):  # no hammering after a failure
        await cache.key_for("es-1", "ES256")


async def test_oversize_jwks_is_refused(http: aiohttp.ClientSession, jwks_server: JWKSServer) -> None:
    cache = JWKSCache(jwks_server.url.replace("/jwks", "/huge"), http)
    with pytest.raises(AuthError, match=r"larger than 524288 bytes"):
        await cache.key_for("es-1", "ES256")


def test_token_from_headers() -> None:
    pem = Key("k", "ES256", ec.generate_private_key(ec.SECP256R1())).public_pem
    v = AssertionVerifier(header="Authorization", issuer=ISSUER, audience=AUDIENCE, public_key_pem=pem)
    assert v.token_from_headers({"authorization": "Bearer abc.def.ghi"}) == "abc.def.ghi"
    assert v.token_from_headers({"Authorization": "abc.def.ghi"}) == "abc.def.ghi"
    assert v.token_from_headers({"Other": "x"}) is None
    with pytest.raises(ValueError, match=r"exactly one"):
        AssertionVerifier(header="h", issuer=ISSUER, audience=AUDIENCE)


def test_issuer_and_audience_are_required(es_key: Key) -> None:
    """Without both, an assertion the proxy's key signed for another application would sign in here."""
    for issuer, audience in ((ISSUER, ""), ("", AUDIENCE)):
        with pytest.raises(ValueError, match=r"needs an issuer and an audience"):
            AssertionVerifier(header="h", issuer=issuer, audience=audience, public_key_pem=es_key.public_pem)


async def test_default_now_is_the_wall_clock(es_key: Key) -> None:
    v = AssertionVerifier(header="h", issuer=ISSUER, audience=AUDIENCE, public_key_pem=es_key.public_pem)
    now = int(time.time())
    assert (await v.verify(es_key.sign(claims(iat=now, nbf=now, exp=now + 60)))).user == "alice@example.test"
