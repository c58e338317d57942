"""The HTTP exchange every cloud provider makes: bounded, observed, retried only where it helps.

Provider-neutral: a provider brings its `Auth` (how a request gets credentials) and its error table
(`ErrorMapper`, sans-IO); this module does the I/O. Every request has connect and read timeouts and a
body cap, and is retried only on 429, 5xx and connection failures. A 401 is retried once, and only when
the auth says fresh credentials may help (a new token); a rejected signature never is, since repeated
failures lock keys and accounts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypedDict

import aiohttp
from yarl import URL

from gateway.clouds.base import ApiObserver, CloudError, CloudErrorKind
from gateway.clouds.identity import identity_error
from gateway.clouds.retry import full_jitter
from gateway.clouds.wire import RawResponse, SignedRequest, is_retryable_status

__all__ = ["MAX_BODY", "ApiClient", "Auth", "ErrorMapper", "HttpOptions", "Sender", "invalid"]

log = logging.getLogger("gateway.cloud")

MAX_BODY = 1024 * 1024  # responses larger than this are refused, not read
_UNREACHABLE = "the cloud API is unreachable"

# (operation, method, url, headers, body) -> a 2xx response; raises CloudError otherwise.
Sender = Callable[[str, str, str, Mapping[str, str], bytes], Awaitable[RawResponse]]
# A non-2xx response -> the CloudError that explains it (the provider's table, sans-IO).
ErrorMapper = Callable[[RawResponse], CloudError]


class HttpOptions(TypedDict, total=False):
    """The `ApiClient` settings a provider passes through unchanged (the defaults are `ApiClient`'s)."""

    ssl: ssl_module.SSLContext | bool
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff_base: float
    backoff_max: float
    observe: ApiObserver | None
    session: aiohttp.ClientSession | None
    retry_after_max: float
    max_body: int


class Auth(Protocol):
    """How a request gets its credentials (a signature or a token)."""

    async def prepare(
        self, send: Sender, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> SignedRequest: ...

    def on_unauthorized(self, sent: SignedRequest) -> bool:
        """After a 401: True if one retry with fresh credentials makes sense."""
        ...


def invalid(what: str, user: str = "the cloud API sent a response the gateway cannot use") -> CloudError:
    """A response the gateway cannot use; `what` (log only) names the field."""
    return CloudError(CloudErrorKind.INVALID_RESPONSE, user, upstream_message=what)


class ApiClient:
    """One provider's HTTP side: its session, TLS, timeouts, retries, observer and error table."""

    def __init__(
        self,
        *,
        auth: Auth,
        errors: ErrorMapper,
        ssl: ssl_module.SSLContext | bool = True,
        connect_timeout: float = 5,
        read_timeout: float = 15,
        retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8,
        observe: ApiObserver | None = None,
        session: aiohttp.ClientSession | None = None,
        retry_after_max: float = 10.0,
        max_body: int = MAX_BODY,
    ) -> None:
        self.auth = auth
        self._errors = errors
        self._ssl = ssl
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + read_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._retries = max(0, retries)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._observe = observe
        self._session = session
        self._own_session = session is None
        self._retry_after_max = retry_after_max
        self._max_body = max_body

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise RuntimeError("the ClientSession given to the cloud provider is closed")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, ttl_dns_cache=300), trust_env=False
            )
        return self._session

    def _emit(self, op: str, outcome: str, started: float) -> None:
        if self._observe is None:
            return
        try:
            self._observe(op, outcome, time.monotonic() - started)
        except Exception:  # an observer bug must not turn a good API call into a failure
            log.exception("API observer failed")

    async def _send_once(self, op: str, req: SignedRequest, to_error: ErrorMapper) -> RawResponse:
        """One HTTP exchange; any status is returned, transport failures raise UNREACHABLE."""
        started = time.monotonic()
        url = URL(req.url, encoded=True)
        log.debug("%s %s %s", op, req.method, url.path)
        try:
            async with self._client().request(
                req.method,
                url,
                headers=req.headers,
                data=req.body or None,
                ssl=self._ssl,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                length = resp.content_length
                if length is not None and length > self._max_body:
                    raise self._too_large(op, started)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > self._max_body:
                        raise self._too_large(op, started)
                raw = RawResponse(resp.status, dict(resp.headers), bytes(body))
        except CloudError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._emit(op, "unreachable", started)
            detail = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            raise CloudError(CloudErrorKind.UNREACHABLE, _UNREACHABLE, upstream_message=detail) from None
        if 200 <= raw.status < 300:
            self._emit(op, "ok", started)
        else:
            self._emit(op, to_error(raw).code or f"http_{raw.status}", started)
        return raw

    def _too_large(self, op: str, started: float) -> CloudError:
        self._emit(op, "invalid_response", started)
        return invalid(f"{op}: response body larger than {self._max_body} bytes")

    async def identity(
        self, op: str, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> RawResponse:
        """A request to the identity service (no credentials of ours attached), explained by the identity
        table: its failures are the gateway's credential problems, never "no such server"."""
        return await self.request(op, method, url, headers, body, authenticate=False, identity=True)

    def _retry_delay(self, err: CloudError, attempt: int) -> float | None:
        if err.retry_after is not None:
            # The API said when; waiting longer than a person would is worse than failing now.
            return err.retry_after if err.retry_after <= self._retry_after_max else None
        return full_jitter(attempt, base=self._backoff_base, cap=self._backoff_max)

    async def request(
        self,
        op: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        authenticate: bool = True,
        identity: bool = False,
    ) -> RawResponse:
        """A 2xx response, after bounded retries; a CloudError from the provider's (or the identity) table."""
        to_error = identity_error if identity else self._errors
        attempt = 0
        refreshed = False
        while True:
            if authenticate:
                req = await self.auth.prepare(self.identity, method, url, headers, body)
            else:
                req = SignedRequest(method=method, url=url, headers=dict(headers), body=body)
            try:
                resp = await self._send_once(op, req, to_error)
            except CloudError as err:
                if err.kind is not CloudErrorKind.UNREACHABLE or attempt >= self._retries:
                    log.warning("%s failed: %s", op, err)
                    raise
                delay = full_jitter(attempt, base=self._backoff_base, cap=self._backoff_max)
                attempt += 1
                log.warning("%s: %s; retry %d/%d in %.2f s", op, err, attempt, self._retries, delay)
                await asyncio.sleep(delay)
                continue
            if 200 <= resp.status < 300:
                return resp
            err = to_error(resp)
            if resp.status == 401 and authenticate and not refreshed and self.auth.on_unauthorized(req):
                refreshed = True
                log.info("%s: %s; retrying once with fresh credentials", op, err)
                continue
            if is_retryable_status(resp.status) and attempt < self._retries:
                delay = self._retry_delay(err, attempt)
                if delay is not None:
                    attempt += 1
                    log.warning("%s: %s; retry %d/%d in %.2f s", op, err, attempt, self._retries, delay)
                    await asyncio.sleep(delay)
                    continue
            log.warning("%s failed: %s", op, err)
            raise err
