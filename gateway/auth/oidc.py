"""OpenID Connect sign-in: authorization code flow with PKCE (S256), state and nonce.

Sans-session: `begin()` returns the URL and a PendingLogin that the caller keeps (in a short-lived encrypted
cookie); `finish()` gets it back with the callback query. Nothing here touches aiohttp's request objects.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from .identity import Authentication, AuthError, Identity, claim_value, identity_from_claims
from .jwks import FetchedCache, JWKSCache, read_limited, safe_algorithms, verify_jwt

log = logging.getLogger("gateway.auth")

PENDING_LIFETIME = 600.0  # seconds a user may spend at the identity provider
DISCOVERY_TTL = 3600.0  # provider metadata is refetched this often (as the JWKS is), not per sign-in
DISCOVERY_MIN_REFETCH = 30.0  # after a failed discovery, sign-ins fail fast until this has passed
_MAX_RESPONSE_BYTES = 1024 * 1024
_TIMEOUT = aiohttp.ClientTimeout(total=15)
_FAILED = "Sign-in with your identity provider failed. Please try again."


@dataclass(slots=True)
class OIDCSettings:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    email_claim: str = "email"
    groups_claim: str = "groups"  # dotted path for nested claims, e.g. "realm_access.roles"
    clock_skew: float = 60
    allowed_algs: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    ca_file: str | None = None
    use_userinfo: bool = True  # fetch userinfo when the ID token lacks the username, email or groups claim


@dataclass(slots=True)
class PendingLogin:
    state: str
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    return_to: str
    created: float
    max_age: int | None = None  # step-up: the ID token's auth_time must be at most this old
    acr_values: tuple[str, ...] = ()  # step-up: its acr must be one of these

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingLogin:
        try:
            return cls(
                state=str(data["state"]),
                nonce=str(data["nonce"]),
                code_verifier=str(data["code_verifier"]),
                return_to=str(data["return_to"]),
                created=float(data["created"]),
                max_age=int(data["max_age"]) if data.get("max_age") is not None else None,
                acr_values=tuple(str(v) for v in data.get("acr_values") or ()),
            )
        except (KeyError, TypeError, ValueError):
            raise AuthError("pending sign-in data malformed", _FAILED) from None


def safe_return_to(value: str | None) -> str:
    """Only local absolute paths; anything else ("//evil", "https://...", "/\\evil") is an open redirect."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x21 or c == "\\" for c in value):
        return "/"
    return value


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class OIDCClient:
    def __init__(self, settings: OIDCSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._http = http
        self._algs = safe_algorithms(settings.allowed_algs, what="OIDC allowed_algs")
        if "openid" not in settings.scopes:
            raise ValueError("OIDC scopes must include 'openid'")
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else True
        )
        self.metadata: dict[str, Any] | None = None
        self.jwks: JWKSCache | None = None
        self._auth_method = "client_secret_basic"
        self._discovery = FetchedCache(
            self._fetch_metadata,
            what=f"OIDC discovery for {settings.issuer}",
            ttl=DISCOVERY_TTL,
            min_refetch=DISCOVERY_MIN_REFETCH,
        )

    def __repr__(self) -> str:
        return f"OIDCClient(issuer={self.settings.issuer!r}, client_id={self.settings.client_id!r})"

    async def _get_json(
        self, url: str, what: str, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            async with self._http.get(
                url,
                ssl=self._ssl,
                timeout=_TIMEOUT,
                allow_redirects=False,
                headers={"Accept": "application/json", **(headers or {})},
            ) as resp:
                body = await read_limited(resp, _MAX_RESPONSE_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AuthError(f"{what} request to {url} failed: {type(exc).__name__}", _FAILED) from None
        if status != 200:
            raise AuthError(f"{what} at {url} returned HTTP {status}", _FAILED)
        if body is None:
            raise AuthError(f"{what} at {url} is larger than {_MAX_RESPONSE_BYTES} bytes", _FAILED)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise AuthError(f"{what} at {url} is not JSON", _FAILED) from None
        if not isinstance(doc, dict):
            raise AuthError(f"{what} at {url} is not a JSON object", _FAILED)
        return doc

    async def discover(self) -> None:
        """The provider's metadata and signing keys, from cache (both live for an hour, not one sign-in)."""
        meta = await self._discovery.get()
        self.metadata = meta
        if self.jwks is None or self.jwks.url != meta["jwks_uri"]:
            ssl_context = self._ssl if isinstance(self._ssl, ssl.SSLContext) else None
            self.jwks = JWKSCache(meta["jwks_uri"], self._http, ssl_context=ssl_context)

    async def _fetch_metadata(self) -> dict[str, Any]:
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        meta = await self._get_json(url, "OIDC discovery")
        if meta.get("issuer") != self.settings.issuer:
            raise AuthError(
                f"OIDC discovery issuer {meta.get('issuer')!r} does not equal the configured "
                f"issuer {self.settings.issuer!r}",
                _FAILED,
            )
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(meta.get(name), str):
                raise AuthError(f"OIDC discovery lacks {name}", _FAILED)
        challenge_methods = meta.get("code_challenge_methods_supported")
        if isinstance(challenge_methods, list) and "S256" not in challenge_methods:
            raise AuthError("OIDC provider does not support PKCE S256", _FAILED)
        auth_methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in auth_methods:
            self._auth_method = "client_secret_basic"
        elif "client_secret_post" in auth_methods:
            self._auth_method = "client_secret_post"
        else:
            raise AuthError(
                f"OIDC token endpoint supports neither client_secret_basic nor _post ({auth_methods!r})",
                _FAILED,
            )
        signing = meta.get("id_token_signing_alg_values_supported")
        if isinstance(signing, list) and not set(signing) & set(self._algs):
            raise AuthError(
                f"OIDC provider signs ID tokens with {signing!r}, none of which is allowed "
                f"({list(self._algs)!r})",
                _FAILED,
            )
        return meta

    def _meta(self) -> dict[str, Any]:
        if self.metadata is None:
            raise RuntimeError("OIDCClient.discover() must be awaited first")
        return self.metadata

    def begin(
        self, return_to: str, *, now: float, max_age: int | None = None, acr_values: Sequence[str] = ()
    ) -> tuple[str, PendingLogin]:
        """The provider's sign-in URL. A step-up (`max_age`, `acr_values`) asks the provider to
        authenticate the user again (prompt=login) with that class; `finish` checks it did."""
        meta = self._meta()
        pending = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),
            return_to=safe_return_to(return_to),
            created=now,
            max_age=max_age,
            acr_values=tuple(acr_values),
        )
        step_up: dict[str, str] = {}
        if max_age is not None:
            step_up.update(max_age=str(max_age), prompt="login")
        if acr_values:
            step_up["acr_values"] = " ".join(acr_values)
        challenge = _b64url(hashlib.sha256(pending.code_verifier.encode("ascii")).digest())
        url = _with_query(
            meta["authorization_endpoint"],
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_uri,
                "scope": " ".join(self.settings.scopes),
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                **step_up,
            },
        )
        return url, pending

    async def finish(
        self, query: Mapping[str, str], pending: PendingLogin, *, now: float
    ) -> tuple[Identity, str, Authentication]:
        """The identity, the ID token (for logout) and when and how strongly the user authenticated."""
        meta = self._meta()
        if now - pending.created > PENDING_LIFETIME:
            raise AuthError(
                "sign-in attempt expired before the provider answered",
                "Your sign-in took too long. Please try again.",
            )
        state = query.get("state") or ""
        if not hmac.compare_digest(state.encode("utf-8"), pending.state.encode("utf-8")):
            raise AuthError("state mismatch (callback does not belong to this browser's sign-in)", _FAILED)
        # RFC 9207 mix-up defence: when the provider says who answered, it must be ours.
        iss = query.get("iss")
        if iss is not None and iss != self.settings.issuer:
            raise AuthError(
                f"authorization response issuer {iss[:200]!r} is not the configured issuer", _FAILED
            )
        if iss is None and meta.get("authorization_response_iss_parameter_supported") is True:
            raise AuthError("authorization response lacks the iss parameter the provider promised", _FAILED)
        error = query.get("error")
        if error:
            description = (query.get("error_description") or "")[:200]
            raise AuthError(
                f"identity provider returned error {error[:64]!r}: {description!r}",
                "Your identity provider refused the sign-in." if error == "access_denied" else _FAILED,
            )
        code = query.get("code")
        if not code:
            raise AuthError("authorization response has no code", _FAILED)
        tokens = await self._exchange(code, pending)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise AuthError("token response has no id_token", _FAILED)
        claims = await self._validate_id_token(id_token, pending, now=now)
        authentication = self._authentication(claims, pending, now=now)
        access_token = tokens.get("access_token")
        if self._lacks_claims(claims) and isinstance(access_token, str):
            claims = await self._merge_userinfo(claims, access_token)
        identity = identity_from_claims(
            claims,
            username_claim=self.settings.username_claim,
            email_claim=self.settings.email_claim,
            groups_claim=self.settings.groups_claim,
            method="oidc",
        )
        if identity.email is not None and claims.get("email_verified") is False:
            # An address the provider says it has not verified must not match e-mail based policy rules.
            identity = dataclasses.replace(identity, email=None)
        return identity, id_token, authentication

    def _authentication(
        self, claims: Mapping[str, Any], pending: PendingLogin, *, now: float
    ) -> Authentication:
        """auth_time and acr from the ID token, checked against what a step-up asked for."""
        authentication = Authentication.from_claims(claims)
        auth_time, acr = authentication.auth_time, authentication.acr
        if pending.max_age is not None and (
            auth_time is None or now - auth_time > pending.max_age + self.settings.clock_skew
        ):
            raise AuthError(
                "id token auth_time is missing or older than the max_age asked for",
                "Your identity provider did not sign you in again; try again.",
            )
        if pending.acr_values and acr not in pending.acr_values:
            raise AuthError(
                f"id token acr {str(acr)[:64]!r} is not one of {list(pending.acr_values)}",
                "Your identity provider did not confirm the stronger sign-in this console needs.",
            )
        return authentication

    async def _exchange(self, code: str, pending: PendingLogin) -> dict[str, Any]:
        meta = self._meta()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": pending.code_verifier,
        }
        headers = {"Accept": "application/json"}
        if self._auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: each part form-urlencoded before base64.
            user = urllib.parse.quote_plus(self.settings.client_id)
            password = urllib.parse.quote_plus(self.settings.client_secret)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(
                "ascii"
            )
        else:
            form["client_id"] = self.settings.client_id
            form["client_secret"] = self.settings.client_secret
        url = meta["token_endpoint"]
        try:
            async with self._http.post(
                url, data=form, headers=headers, ssl=self._ssl, timeout=_TIMEOUT, allow_redirects=False
            ) as resp:
                body = await read_limited(resp, _MAX_RESPONSE_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AuthError(f"token request to {url} failed: {type(exc).__name__}", _FAILED) from None
        try:
            doc = json.loads(body) if body is not None else None
        except (ValueError, RecursionError):
            doc = None
        if status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            raise AuthError(
                f"token endpoint returned HTTP {status} ({str(error)[:64] if error else 'no error'})", _FAILED
            )
        return doc

    async def _validate_id_token(self, id_token: str, pending: PendingLogin, *, now: float) -> dict[str, Any]:
        assert self.jwks is not None
        claims = await verify_jwt(
            id_token,
            self.jwks,
            algorithms=self._algs,
            issuer=self.settings.issuer,
            audience=self.settings.client_id,
            clock_skew=self.settings.clock_skew,
            now=now,
            what="id token",
            require_iat=True,
        )
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthError("id token lacks the 'sub' claim", _FAILED)
        aud = claims.get("aud")
        azp = claims.get("azp")
        if isinstance(aud, list) and len(aud) > 1 and azp is None:
            raise AuthError("id token has several audiences but no azp", _FAILED)
        if azp is not None and azp != self.settings.client_id:
            raise AuthError("id token azp is not our client_id", _FAILED)
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode("utf-8"), pending.nonce.encode("utf-8")
        ):
            raise AuthError("id token nonce mismatch (replayed or foreign token)", _FAILED)
        return claims

    def _lacks_claims(self, claims: Mapping[str, Any]) -> bool:
        if not self.settings.use_userinfo or not self._meta().get("userinfo_endpoint"):
            return False
        wanted = [self.settings.username_claim, self.settings.email_claim, self.settings.groups_claim]
        return any(name and claim_value(claims, name) is None for name in wanted)

    async def _merge_userinfo(self, claims: dict[str, Any], access_token: str) -> dict[str, Any]:
        url = self._meta()["userinfo_endpoint"]
        info = await self._get_json(url, "userinfo", headers={"Authorization": f"Bearer {access_token}"})
        # OIDC Core §5.3.2: userinfo for another subject must not be used.
        if info.get("sub") != claims.get("sub"):
            raise AuthError("userinfo subject differs from the id token subject", _FAILED)
        merged = dict(info)
        merged.update(claims)  # signed ID token claims win over userinfo
        return merged

    def logout_url(self, *, id_token_hint: str | None, post_logout_redirect_uri: str) -> str | None:
        endpoint = self._meta().get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        params = {"client_id": self.settings.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        return _with_query(endpoint, params)
