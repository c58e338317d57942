"""Keystone v3 token authentication (OpenStack Keystone, Huawei IAM): the I/O half of `identity.py`.

A token is fetched from `POST /v3/auth/tokens`, kept only in memory, renewed `refresh_margin` before
`expires_at` (at half-life for short-lived tokens), dropped after one 401 from the API so the caller can
retry once with a fresh one, and sent as `X-Auth-Token`. After the identity service rejects the gateway's
password or application credential, sign-in waits (`IdentityBackoff`) and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.http import Sender
from gateway.clouds.identity import (
    IdentityBackoff,
    IssuedToken,
    application_credential_body,
    normalise_identity_url,
    parse_token_response,
    password_body,
)
from gateway.clouds.wire import SignedRequest

__all__ = ["KeystoneAuth"]

log = logging.getLogger("gateway.cloud")


class KeystoneAuth:
    """Password or application-credential sign-in; the secret and the token live only in memory."""

    def __init__(
        self,
        *,
        url: str,
        user: str = "",
        password: str = "",
        user_domain: str = "Default",
        project_id: str = "",
        application_credential_id: str = "",
        application_credential_secret: str = "",
        catalog: bool = True,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        backoff: IdentityBackoff | None = None,
    ) -> None:
        if application_credential_id:
            if not application_credential_secret or user or password:
                raise ValueError("an application credential needs its id and secret, and no user or password")
            self.who = f"application credential {application_credential_id}"
        else:
            if not (user and password and project_id):
                raise ValueError("password sign-in needs user, password and project_id")
            self.who = f"user {user} in domain {user_domain}"
        self.url = normalise_identity_url(url)
        self.user = user
        self.user_domain = user_domain
        self.project_id = project_id
        self.application_credential_id = application_credential_id
        self.__secret = application_credential_secret or password
        self._want_catalog = catalog
        self.refresh_margin = refresh_margin
        self._clock = clock
        self.backoff = backoff or IdentityBackoff()
        self._issued: IssuedToken | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.who}, url={self.url!r})"

    def _body(self) -> bytes:
        if self.application_credential_id:
            return application_credential_body(
                credential_id=self.application_credential_id, secret=self.__secret
            )
        return password_body(
            user=self.user, password=self.__secret, user_domain=self.user_domain, project_id=self.project_id
        )

    def rejection(self) -> str | None:
        """While sign-in is backing off after a rejection: what /readyz and the log say; else None."""
        wait = self.backoff.remaining(self._clock())
        return IdentityBackoff.describe(wait) if wait > 0 else None

    async def _fetch(self, send: Sender) -> IssuedToken:
        wait = self.backoff.remaining(self._clock())
        if wait > 0:
            raise CloudError(CloudErrorKind.AUTH, IdentityBackoff.describe(wait), code="identity_backoff")
        url = f"{self.url}/v3/auth/tokens" + ("" if self._want_catalog else "?nocatalog=true")
        headers = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"}
        try:
            resp = await send("identity_token", "POST", url, headers, self._body())
        except CloudError as err:
            if err.status in (401, 403):
                wait = self.backoff.rejected(self._clock())
                log.warning(
                    "the identity service at %s rejected the gateway's %s; no new sign-in for %.0f s "
                    "(identity services lock accounts after repeated failures): %s",
                    self.url,
                    self.who,
                    wait,
                    err,
                )
            raise
        issued = parse_token_response(resp.headers, resp.body)
        self.backoff.accepted()
        lifetime = (issued.expires_at - datetime.now(UTC)).total_seconds()
        if lifetime <= 0:
            raise CloudError(
                CloudErrorKind.INVALID_RESPONSE,
                "the cloud identity service sent a response the gateway cannot use",
                upstream_message="token.expires_at is in the past (check the gateway's clock)",
            )
        usable = lifetime - self.refresh_margin if lifetime > 2 * self.refresh_margin else lifetime / 2
        self._refresh_at = self._clock() + usable
        log.info("identity token obtained for %s at %s, valid %.0f s", self.who, self.url, lifetime)
        return issued

    async def issued(self, send: Sender) -> IssuedToken:
        """The current token (and catalog), renewed when due."""
        async with self._lock:
            if self._issued is None or self._clock() >= self._refresh_at:
                self._issued = None
                self._issued = await self._fetch(send)
            return self._issued

    async def token(self, send: Sender) -> str:
        return (await self.issued(send)).token

    async def prepare(
        self, send: Sender, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> SignedRequest:
        token = await self.token(send)
        out = {k: v for k, v in headers.items() if k.lower() != "x-auth-token"}
        out["X-Auth-Token"] = token
        return SignedRequest(method=method.upper(), url=url, headers=out, body=body)

    def on_unauthorized(self, sent: SignedRequest) -> bool:
        """A 401 means the token was revoked or expired early: drop it so one retry gets a new one."""
        if self._issued is not None and sent.headers.get("X-Auth-Token") == self._issued.token:
            self._issued = None
        return True
