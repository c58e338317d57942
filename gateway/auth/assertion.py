"""Identity from a trusted SSO proxy's signed assertion header.

Examples of such headers: Pomerium ``X-Pomerium-Jwt-Assertion``, Google IAP ``X-Goog-IAP-JWT-Assertion``,
Cloudflare Access ``Cf-Access-Jwt-Assertion``, oauth2-proxy ``Authorization: Bearer`` (with
--pass-authorization-header). Unlike plain identity headers a signed assertion is safe from any peer, so it
is the preferred proxy mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from .identity import Authentication, AuthError, Identity, identity_from_claims
from .jwks import JWKSCache, KeySource, StaticKey, safe_algorithms, verify_jwt

_REJECTED = "Your sign-in proxy sent an identity the gateway cannot accept."


class AssertionVerifier:
    def __init__(
        self,
        *,
        header: str,
        issuer: str,
        audience: str,
        jwks: JWKSCache | None = None,
        public_key_pem: str | None = None,
        algorithms: Sequence[str] = ("ES256", "RS256"),
        username_claim: str = "email",
        email_claim: str = "email",
        groups_claim: str = "groups",
        clock_skew: float = 60,
    ) -> None:
        if (jwks is None) == (public_key_pem is None):
            raise ValueError("assertion verification needs exactly one of a JWKS URL or a public key")
        if not header:
            raise ValueError("assertion header name must not be empty")
        if not issuer or not audience:
            # Without both, an assertion the same proxy key signed for another application would pass.
            raise ValueError("assertion verification needs an issuer and an audience")
        self.header = header
        self.issuer = issuer
        self.audience = audience
        self.algorithms = safe_algorithms(algorithms, what="assertion algorithms")
        self._keys: KeySource = jwks if jwks is not None else StaticKey(public_key_pem or "")
        self.username_claim = username_claim
        self.email_claim = email_claim
        self.groups_claim = groups_claim
        self.clock_skew = clock_skew

    def __repr__(self) -> str:
        return (
            f"AssertionVerifier(header={self.header!r}, issuer={self.issuer!r}, audience={self.audience!r})"
        )

    def token_from_headers(self, headers: Mapping[str, str]) -> str | None:
        """The assertion in `headers` (case-insensitive), with a "Bearer " prefix removed when present."""
        wanted = self.header.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
        if value is None:
            return None
        value = value.strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        return value or None

    async def verify(self, token: str, *, now: float | None = None) -> Identity:
        return (await self.authenticate(token, now=now))[0]

    async def authenticate(self, token: str, *, now: float | None = None) -> tuple[Identity, Authentication]:
        """The asserted identity, and when and how the proxy says the user authenticated (auth_time, acr)."""
        try:
            claims = await verify_jwt(
                token,
                self._keys,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                clock_skew=self.clock_skew,
                now=time.time() if now is None else now,
                what="assertion",
            )
            identity = identity_from_claims(
                claims,
                username_claim=self.username_claim,
                email_claim=self.email_claim,
                groups_claim=self.groups_claim,
                method="proxy-jwt",
            )
            return identity, Authentication.from_claims(claims)
        except AuthError as exc:
            raise AuthError(exc.reason, _REJECTED) from None
