"""Signing keys for JWTs we verify (OIDC ID tokens, proxy assertions), and the one place JWTs are verified.

JWKS rotation: a token naming an unknown `kid` triggers one refetch, at most once per `min_refetch` seconds,
so a flood of forged kids cannot turn the gateway into a load generator against the identity provider.
Signature checks are PyJWT's; this module decides which key and which algorithm, and maps failures to
precise, log-safe reasons.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .identity import AuthError

log = logging.getLogger("gateway.auth")

# Only asymmetric algorithms: a verifier that accepts HS* can be fooled with its own public key as secret.
ASYMMETRIC_ALGS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_MAX_JWKS_BYTES = 512 * 1024
T = TypeVar("T")


def safe_algorithms(algorithms: Sequence[str], *, what: str) -> tuple[str, ...]:
    """Validate a configured algorithm list at construction time."""
    bad = [a for a in algorithms if a not in ASYMMETRIC_ALGS]
    if bad or not algorithms:
        allowed = ", ".join(sorted(ASYMMETRIC_ALGS))
        raise ValueError(
            f"{what}: only asymmetric algorithms are allowed ({allowed}); got {list(algorithms)!r}"
        )
    return tuple(algorithms)


def _shown(value: object) -> str:
    """A token-supplied string made safe to log: bounded and repr-escaped."""
    text = repr(value)
    return text if len(text) <= 66 else text[:63] + "...'"


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None when it exceeds `limit` (a hostile endpoint must not exhaust memory)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class KeySource(Protocol):
    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK: ...


def _kty_matches(jwk: Mapping[str, Any], alg: str) -> bool:
    return jwk.get("kty") == _KTY_FOR_ALG.get(alg[:2])


def _usable(jwk: Mapping[str, Any], alg: str) -> bool:
    if jwk.get("use") not in (None, "sig"):
        return False
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return False
    if jwk.get("alg") not in (None, alg):
        return False
    return _kty_matches(jwk, alg)


def _to_pyjwk(jwk: Mapping[str, Any], alg: str) -> jwt.PyJWK:
    try:
        return jwt.PyJWK(dict(jwk), algorithm=alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        # PyJWT's message embeds the key data: keep it out of logs.
        raise AuthError(f"signing key {_shown(jwk.get('kid'))} is not a usable {alg} key") from None


class FetchedCache(Generic[T]):
    """One document fetched from an identity service (a JWKS, OIDC discovery), kept for `ttl` seconds.

    A failed fetch keeps the last good copy, and fetch attempts (failed ones and forced refetches alike)
    happen at most once per `min_refetch` seconds, so neither sign-ins nor hostile tokens can turn the
    gateway into a load generator against the identity provider.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        *,
        what: str,
        ttl: float,
        min_refetch: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._what = what
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._clock = clock
        self.value: T | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0  # observable for tests and metrics

    async def get(self) -> T:
        """The cached value, fetched first when missing or older than the TTL."""
        if self.value is None or self._clock() - self._fetched_at >= self._ttl:
            await self.refresh(force=False)
        assert self.value is not None  # refresh raises when it has nothing to offer
        return self.value

    async def refresh(self, *, force: bool) -> bool:
        """Fetch unless rate-limited; True when the value is fresh (fetched by us or by a peer task)."""
        seen = self._fetched_at
        async with self._lock:
            if self._fetched_at != seen:
                return True  # another task fetched while we waited for the lock
            now = self._clock()
            if not force and self.value is not None and now - self._fetched_at < self._ttl:
                return True
            if now - self._attempted_at < self._min_refetch:
                if self.value is None:
                    raise AuthError(f"{self._what} unavailable (last fetch failed; retry limited)")
                return False
            self._attempted_at = now
            self.fetches += 1
            try:
                value = await self._fetch()
            except AuthError:
                if self.value is None:
                    raise
                log.warning("%s refresh failed; keeping the previous copy", self._what)
                return False
            self.value = value
            self._fetched_at = now
            return True


class JWKSCache:
    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        ttl: float = 3600,
        min_refetch: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._http = http
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._cache = FetchedCache(
            self._fetch, what=f"JWKS from {url}", ttl=ttl, min_refetch=min_refetch, clock=clock
        )

    def __repr__(self) -> str:
        return f"JWKSCache({self.url!r}, keys={len(self._cache.value or ())})"

    @property
    def fetches(self) -> int:
        return self._cache.fetches

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if alg not in ASYMMETRIC_ALGS:
            raise AuthError(f"algorithm {_shown(alg)} not allowed")
        found = self._find(await self._cache.get(), kid, alg)
        if found is None and await self._cache.refresh(force=True):
            found = self._find(self._cache.value or [], kid, alg)
        if found is None:
            raise AuthError(f"unknown signing key id {_shown(kid)} for {alg} (JWKS {self.url})")
        return _to_pyjwk(found, alg)

    @staticmethod
    def _find(keys: list[dict[str, Any]], kid: str | None, alg: str) -> dict[str, Any] | None:
        candidates = [k for k in keys if _usable(k, alg)]
        if kid is not None:
            matching = [k for k in candidates if k.get("kid") == kid]
            return matching[0] if matching else None
        # No kid: only unambiguous when one key fits.
        return candidates[0] if len(candidates) == 1 else None

    async def _fetch(self) -> list[dict[str, Any]]:
        try:
            async with self._http.get(
                self.url,
                ssl=self._ssl,
                headers={"Accept": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    raise AuthError(f"JWKS fetch from {self.url} returned HTTP {resp.status}")
                body = await read_limited(resp, _MAX_JWKS_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AuthError(f"JWKS fetch from {self.url} failed: {type(exc).__name__}") from None
        if body is None:
            raise AuthError(f"JWKS from {self.url} is larger than {_MAX_JWKS_BYTES} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise AuthError(f"JWKS from {self.url} is not JSON") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise AuthError(f"JWKS from {self.url} has no 'keys' list")
        return [k for k in keys if isinstance(k, dict) and k.get("kty") != "oct"]


class StaticKey:
    """One configured public key (PEM), for proxies that publish a key instead of a JWKS."""

    def __init__(self, public_key_pem: str) -> None:
        try:
            key = load_pem_public_key(public_key_pem.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ValueError("public key is not a PEM-encoded public key") from None
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise ValueError("public key must be RSA, EC or Ed25519")
        self._key = key

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if alg not in ASYMMETRIC_ALGS:
            raise AuthError(f"algorithm {_shown(alg)} not allowed")
        algorithm = jwt.get_algorithm_by_name(alg)
        try:
            jwk = algorithm.to_jwk(self._key, as_dict=True)  # type: ignore[attr-defined]
        except (jwt.InvalidKeyError, TypeError, ValueError):
            raise AuthError(f"the configured public key cannot verify {alg}") from None
        if not _kty_matches(jwk, alg):
            raise AuthError(f"the configured public key cannot verify {alg}")
        return _to_pyjwk(jwk, alg)


def check_times(claims: Mapping[str, Any], *, now: float, skew: float, what: str, require_iat: bool) -> None:
    """exp / nbf / iat against our clock with a bounded skew (PyJWT's own checks use its clock, not `now`)."""

    def number(name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuthError(f"{what} claim {name!r} is not a number")
        return float(value)

    exp, nbf, iat = number("exp"), number("nbf"), number("iat")
    if exp is None:
        raise AuthError(f"{what} lacks the 'exp' claim")
    if require_iat and iat is None:
        raise AuthError(f"{what} lacks the 'iat' claim")
    if now > exp + skew:
        raise AuthError(
            f"{what} expired {now - exp:.0f} s ago", "Your sign-in took too long. Please try again."
        )
    if nbf is not None and nbf > now + skew:
        raise AuthError(f"{what} not yet valid (nbf {nbf - now:.0f} s in the future; check clocks)")
    if iat is not None and iat > now + skew:
        raise AuthError(f"{what} not yet valid (issued {iat - now:.0f} s in the future; check clocks)")


async def verify_jwt(
    token: str,
    keys: KeySource,
    *,
    algorithms: Sequence[str],
    issuer: str | None,
    audience: str | None,
    clock_skew: float,
    now: float,
    what: str,
    require_iat: bool = False,
) -> dict[str, Any]:
    """Verify signature, algorithm, issuer, audience and times; return the claims or raise AuthError."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 64 * 1024:
        raise AuthError(f"{what} is not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, RecursionError):  # not only DecodeError: e.g. a non-string "kid"
        raise AuthError(f"{what} is malformed (header)") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in ASYMMETRIC_ALGS:
        raise AuthError(f"{what} algorithm {_shown(alg)} not allowed")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError(f"{what} key id is not a string")
    key = await keys.key_for(kid, alg)
    options: dict[str, Any] = {
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,  # checked by check_times with `now`
        "verify_aud": audience is not None,
        "verify_iss": issuer is not None,
        "require": ["exp"],
    }
    try:
        claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=issuer, options=options)
    except jwt.InvalidSignatureError:
        raise AuthError(f"{what} signature invalid") from None
    except jwt.InvalidAudienceError:
        raise AuthError(f"{what} audience mismatch") from None
    except jwt.InvalidIssuerError:
        raise AuthError(f"{what} issuer mismatch") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"{what} lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError(f"{what} algorithm {_shown(alg)} does not match its key") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"{what} invalid: {type(exc).__name__}") from None
    if not isinstance(claims, dict):
        raise AuthError(f"{what} payload is not a JSON object")
    check_times(claims, now=now, skew=clock_skew, what=what, require_iat=require_iat)
    return claims
