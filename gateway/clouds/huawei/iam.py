"""IAM token authentication: the alternative to AK/SK for accounts that only have a password.

A project-scoped token is fetched from `POST /v3/auth/tokens` (Keystone v3 password method),
cached until shortly before `expires_at`, and sent as `X-Auth-Token`. One 401 from ECS drops the
cached token so the caller can retry once with a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.huawei.errors import RawResponse
from gateway.clouds.huawei.signer import SignedRequest

__all__ = ["IAMTokenAuth", "Sender"]

log = logging.getLogger("gateway.cloud")

# (operation, method, url, headers, body) -> a 2xx response; raises CloudError otherwise.
Sender = Callable[[str, str, str, Mapping[str, str], bytes], Awaitable[RawResponse]]


def _invalid(what: str) -> CloudError:
    return CloudError(
        CloudErrorKind.INVALID_RESPONSE,
        "the cloud identity service sent a response the gateway cannot use",
        upstream_message=what,
    )


class IAMTokenAuth:
    """Password auth against IAM; the token is held only in memory."""

    def __init__(
        self,
        *,
        domain: str,
        user: str,
        password: str,
        project_id: str,
        region: str,
        endpoint: str | None = None,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (domain and user and password and project_id):
            raise ValueError("IAM auth needs domain, user, password and project_id")
        self.domain = domain
        self.user = user
        self.__password = password
        self.project_id = project_id
        self.region = region
        self.endpoint = (endpoint or f"https://iam.{region}.myhuaweicloud.com").rstrip("/")
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"IAMTokenAuth(domain={self.domain!r}, user={self.user!r}, endpoint={self.endpoint!r})"

    def _request_body(self) -> bytes:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.user,
                            "password": self.__password,
                            "domain": {"name": self.domain},
                        }
                    },
                },
                "scope": {"project": {"id": self.project_id}},
            }
        }
        return json.dumps(body).encode()

    async def _fetch(self, send: Sender) -> None:
        url = f"{self.endpoint}/v3/auth/tokens?nocatalog=true"
        headers = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"}
        resp = await send("iam_token", "POST", url, headers, self._request_body())
        token = next((v for k, v in resp.headers.items() if k.lower() == "x-subject-token"), "")
        if not token.strip():
            raise _invalid("no X-Subject-Token header")
        try:
            doc = json.loads(resp.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _invalid("token response is not valid JSON") from None
        token_doc = doc.get("token") if isinstance(doc, dict) else None
        expires_raw = token_doc.get("expires_at") if isinstance(token_doc, dict) else None
        if not isinstance(expires_raw, str):
            raise _invalid("token.expires_at is missing or not a string")
        try:
            expires_at = datetime.fromisoformat(expires_raw)
        except ValueError:
            raise _invalid("token.expires_at is not an ISO 8601 time") from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        lifetime = (expires_at - datetime.now(UTC)).total_seconds()
        if lifetime <= 0:
            raise _invalid("token.expires_at is in the past (check the gateway's clock)")
        # Refresh refresh_margin before expiry, or at half-life for short-lived tokens.
        usable = lifetime - self.refresh_margin if lifetime > 2 * self.refresh_margin else lifetime / 2
        self._token = token.strip()
        self._refresh_at = self._clock() + usable
        log.info("IAM token obtained for %s/%s, valid %.0f s", self.domain, self.user, lifetime)

    async def token(self, send: Sender) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token = None
                await self._fetch(send)
            assert self._token is not None
            return self._token

    async def prepare(
        self, send: Sender, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> SignedRequest:
        token = await self.token(send)
        out = {k: v for k, v in headers.items() if k.lower() != "x-auth-token"}
        out["X-Auth-Token"] = token
        return SignedRequest(method=method.upper(), url=url, headers=out, body=body)

    def on_unauthorized(self, sent: SignedRequest) -> bool:
        """A 401 means the token was revoked or expired early: drop it so one retry gets a new one."""
        if sent.headers.get("X-Auth-Token") == self._token:
            self._token = None
        return True
