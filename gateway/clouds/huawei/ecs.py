"""The Huawei Cloud ECS client: list/show servers and ask for one-time console URLs.

I/O lives here; signing, error mapping and backoff are pure helpers next door. Every request is
bounded (connect and read timeouts, a body cap) and retried only where a retry can help: 429, 5xx
and connection failures. 4xx is final, and a 401 above all, since repeated AK/SK failures lock the
key for five minutes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl as ssl_module
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway.clouds.base import ApiObserver, CloudError, CloudErrorKind, CloudProvider, ConsoleURL, Server
from gateway.clouds.console_urls import novnc_page_target
from gateway.clouds.huawei.errors import RawResponse, error_from_response, is_retryable_status
from gateway.clouds.huawei.iam import IAMTokenAuth, Sender
from gateway.clouds.huawei.signer import Credentials, SignedRequest, encode, sign_request
from gateway.clouds.retry import full_jitter
from gateway.upstream import UpstreamTarget

__all__ = ["MAX_BODY", "AKSKAuth", "Auth", "HuaweiECS", "parse_console", "parse_server"]

log = logging.getLogger("gateway.cloud")

MAX_BODY = 1024 * 1024  # responses larger than this are refused, not read
_MAX_URL = 8192
_SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CONSOLE_BODY = b'{"remote_console": {"protocol": "vnc", "type": "novnc"}}'
_UNREACHABLE = "the cloud API is unreachable"


class Auth(Protocol):
    """How a request gets its credentials (AK/SK signature or IAM token)."""

    async def prepare(
        self, send: Sender, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> SignedRequest: ...

    def on_unauthorized(self, sent: SignedRequest) -> bool:
        """After a 401: True if one retry with fresh credentials makes sense."""
        ...


class AKSKAuth:
    """Permanent or temporary (security token) access keys; each attempt is signed afresh."""

    def __init__(self, credentials: Credentials, *, clock: Callable[[], datetime] | None = None) -> None:
        self.credentials = credentials
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"AKSKAuth(access_key={self.credentials.access_key!r})"

    async def prepare(
        self, send: Sender, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> SignedRequest:
        return sign_request(self.credentials, method, url, headers, body, now=self._clock())

    def on_unauthorized(self, sent: SignedRequest) -> bool:
        return False  # a rejected signature will be rejected again, and retries lock the key


def _invalid(what: str, user: str = "the cloud API sent a response the gateway cannot use") -> CloudError:
    return CloudError(CloudErrorKind.INVALID_RESPONSE, user, upstream_message=what)


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _invalid(f"{where}.{key} is not a string")


def _req_str(doc: Mapping[str, Any], key: str, where: str, *, empty_ok: bool = False) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise _invalid(f"{where}.{key} is missing or not a string")
    if not value and not empty_ok:
        raise _invalid(f"{where}.{key} is empty")
    return value


def parse_server(doc: object, *, cloud: str, project_id: str, region: str, where: str = "server") -> Server:
    """One ECS server object -> Server, naming the first field that is wrong."""
    if not isinstance(doc, dict):
        raise _invalid(f"{where} is not an object")
    tags = doc.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _invalid(f"{where}.tags is not a list of strings")
    metadata = doc.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid(f"{where}.metadata is not an object of strings")
    locked = doc.get("locked")
    if locked is None:
        locked = False
    if not isinstance(locked, bool):
        raise _invalid(f"{where}.locked is not a boolean")
    return Server(
        cloud=cloud,
        id=_req_str(doc, "id", where),
        name=_req_str(doc, "name", where, empty_ok=True),
        status=_req_str(doc, "status", where).upper(),
        project_id=project_id,
        region=region,
        availability_zone=_opt_str(doc, "OS-EXT-AZ:availability_zone", where) or "",
        locked=locked,
        tags=tuple(tags),
        metadata=metadata,
        enterprise_project_id=_opt_str(doc, "enterprise_project_id", where),
    )


def parse_console(doc: object) -> ConsoleURL:
    """`{"remote_console": {"url", "protocol", "type"}}` -> ConsoleURL; never echoes the URL."""
    if not isinstance(doc, dict) or not isinstance(doc.get("remote_console"), dict):
        raise _invalid("remote_console is missing or not an object")
    console = doc["remote_console"]
    url = console.get("url")
    if not isinstance(url, str) or not url:
        raise _invalid("remote_console.url is missing or not a string")
    if len(url) > _MAX_URL:
        raise _invalid(f"remote_console.url is longer than {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        has_host = bool(parts.hostname)
    except ValueError:
        has_host = False
        parts = None
    if parts is None or parts.scheme not in ("http", "https", "ws", "wss") or not has_host:
        raise _invalid("remote_console.url is not an absolute http(s) URL")
    protocol = _opt_str(console, "protocol", "remote_console") or "vnc"
    kind = _opt_str(console, "type", "remote_console") or "novnc"
    return ConsoleURL(url, protocol=protocol, type=kind)


def _json(resp: RawResponse, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise _invalid(f"{what}: response is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _invalid(f"{what}: response is not a JSON object")
    return doc


class HuaweiECS(CloudProvider):
    """ECS v1 API for one project in one region."""

    def __init__(
        self,
        *,
        name: str,
        region: str,
        project_id: str,
        auth: AKSKAuth | IAMTokenAuth,
        endpoint: str | None = None,
        ssl: ssl_module.SSLContext | bool = True,
        connect_timeout: float = 5,
        read_timeout: float = 15,
        retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8,
        observe: ApiObserver | None = None,
        session: aiohttp.ClientSession | None = None,
        page_size: int = 1000,
        retry_after_max: float = 10.0,
        max_body: int = MAX_BODY,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", project_id):
            raise ValueError("project_id must be 1-64 letters, digits, '-' or '_'")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.name = name
        self.region = region
        self.project_id = project_id
        self.endpoint = (endpoint or f"https://ecs.{region}.myhuaweicloud.com").rstrip("/")
        self._auth: Auth = auth
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
        self._page_size = page_size
        self._retry_after_max = retry_after_max
        self._max_body = max_body

    def __repr__(self) -> str:
        return f"HuaweiECS(name={self.name!r}, region={self.region!r}, project_id={self.project_id!r})"

    # -- public API -------------------------------------------------------------------------

    async def list_servers(self) -> list[Server]:
        servers: list[Server] = []
        seen: set[str] = set()
        page = 1
        max_pages: int | None = None
        while True:
            doc = await self._get_json(
                "list_servers",
                f"/v1/{self.project_id}/cloudservers/detail",
                {"offset": str(page), "limit": str(self._page_size)},
            )
            items, count = doc.get("servers"), doc.get("count")
            if not isinstance(items, list):
                raise _invalid("servers is missing or not a list")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                raise _invalid("count is not a non-negative integer")
            for i, item in enumerate(items):
                server = self._parse_server(item, f"servers[{(page - 1) * self._page_size + i}]")
                if server.id not in seen:  # servers created mid-listing shift the pages
                    seen.add(server.id)
                    servers.append(server)
            if count is not None and max_pages is None:
                max_pages = math.ceil(count / self._page_size) + 1
            if len(items) < self._page_size or (count is not None and len(servers) >= count):
                return servers
            page += 1
            if page > (max_pages or 10_000):
                raise _invalid(f"the server list did not end after {page - 1} pages")

    async def get_server(self, server_id: str) -> Server:
        self._check_id(server_id)
        doc = await self._get_json(
            "get_server", f"/v1/{self.project_id}/cloudservers/{encode(server_id)}", None
        )
        return self._parse_server(doc.get("server"), "server")

    async def remote_console(self, server_id: str) -> ConsoleURL:
        self._check_id(server_id)
        path = f"/v1/{self.project_id}/cloudservers/{encode(server_id)}/remote_console"
        headers = self._headers() | {"Content-Type": "application/json;charset=UTF-8"}
        resp = await self._request("remote_console", "POST", self.endpoint + path, headers, _CONSOLE_BODY)
        console = parse_console(_json(resp, "remote_console"))
        log.info("console URL issued for server %s in %s", server_id, self.name)
        return console

    def console_target(self, url: ConsoleURL) -> UpstreamTarget:
        """ECS returns `vnc_auto.html?token=T` (socket at /websockify); its nova-based regions the
        `?path=%3Ftoken%3DT` form."""
        return novnc_page_target(url.reveal())

    async def ping(self) -> None:
        await self._get_json(
            "ping", f"/v1/{self.project_id}/cloudservers/detail", {"offset": "1", "limit": "1"}
        )

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # -- plumbing ---------------------------------------------------------------------------

    def _parse_server(self, doc: object, where: str) -> Server:
        return parse_server(doc, cloud=self.name, project_id=self.project_id, region=self.region, where=where)

    @staticmethod
    def _check_id(server_id: str) -> None:
        if not isinstance(server_id, str) or not _SERVER_ID.match(server_id):
            raise CloudError(
                CloudErrorKind.NOT_FOUND,
                "no such server in this project",
                upstream_message="not a well-formed server id (not sent to the API)",
            )

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": "novnc-gateway", "X-Project-Id": self.project_id}

    async def _get_json(self, op: str, path: str, query: Mapping[str, str] | None) -> dict[str, Any]:
        url = self.endpoint + path
        if query:
            url += "?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(query.items()))
        resp = await self._request(op, "GET", url, self._headers(), b"")
        return _json(resp, op)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise RuntimeError("the ClientSession given to HuaweiECS is closed")
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

    async def _send_once(self, op: str, req: SignedRequest) -> RawResponse:
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
            self._emit(op, error_from_response(raw).code or f"http_{raw.status}", started)
        return raw

    def _too_large(self, op: str, started: float) -> CloudError:
        self._emit(op, "invalid_response", started)
        return _invalid(f"{op}: response body larger than {self._max_body} bytes")

    async def _unauthenticated(
        self, op: str, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> RawResponse:
        return await self._request(op, method, url, headers, body, authenticate=False)

    def _retry_delay(self, err: CloudError, attempt: int) -> float | None:
        if err.retry_after is not None:
            # The API said when; waiting longer than a person would is worse than failing now.
            return err.retry_after if err.retry_after <= self._retry_after_max else None
        return full_jitter(attempt, base=self._backoff_base, cap=self._backoff_max)

    async def _request(
        self,
        op: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        authenticate: bool = True,
    ) -> RawResponse:
        """A 2xx response, after bounded retries; CloudError otherwise."""
        attempt = 0
        refreshed = False
        while True:
            if authenticate:
                req = await self._auth.prepare(self._unauthenticated, method, url, headers, body)
            else:
                req = SignedRequest(method=method, url=url, headers=dict(headers), body=body)
            try:
                resp = await self._send_once(op, req)
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
            err = error_from_response(resp)
            if resp.status == 401 and authenticate and not refreshed and self._auth.on_unauthorized(req):
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
