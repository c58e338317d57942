"""The Huawei Cloud ECS client: list/show servers and ask for one-time console URLs.

Signing and error mapping are pure helpers next door; the bounded, retried HTTP exchange is
`gateway/clouds/http.py`'s. A 401 is never retried with the same AK/SK, since repeated failures lock
the key for five minutes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Unpack

from gateway.clouds.base import CloudError, CloudErrorKind, CloudProvider, ConsoleURL, Server
from gateway.clouds.console_urls import novnc_page_target
from gateway.clouds.documents import json_object, parse_console, parse_server
from gateway.clouds.http import MAX_BODY, ApiClient, Auth, HttpOptions, Sender, invalid
from gateway.clouds.huawei.errors import error_from_response
from gateway.clouds.huawei.iam import IAMTokenAuth
from gateway.clouds.huawei.signer import Credentials, SignedRequest, encode, sign_request
from gateway.upstream import UpstreamTarget

__all__ = ["MAX_BODY", "AKSKAuth", "Auth", "HuaweiECS", "check_server_id", "parse_console", "parse_server"]

log = logging.getLogger("gateway.cloud")

_SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CONSOLE_BODY = b'{"remote_console": {"protocol": "vnc", "type": "novnc"}}'
# The fuzz tests reach the JSON-object check under its old name.
_json = json_object


def check_server_id(server_id: str) -> None:
    """An id that is not well formed is "no such server" without asking the API (nor putting it in a path)."""
    if not isinstance(server_id, str) or not _SERVER_ID.match(server_id):
        raise CloudError(
            CloudErrorKind.NOT_FOUND,
            "no such server in this project",
            upstream_message="not a well-formed server id (not sent to the API)",
        )


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
        page_size: int = 1000,
        **http: Unpack[HttpOptions],
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", project_id):
            raise ValueError("project_id must be 1-64 letters, digits, '-' or '_'")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.name = name
        self.region = region
        self.project_id = project_id
        self.endpoint = (endpoint or f"https://ecs.{region}.myhuaweicloud.com").rstrip("/")
        self.auth: Auth = auth
        self._api = ApiClient(auth=auth, errors=error_from_response, **http)
        self._page_size = page_size

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
                raise invalid("servers is missing or not a list")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                raise invalid("count is not a non-negative integer")
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
                raise invalid(f"the server list did not end after {page - 1} pages")

    async def get_server(self, server_id: str) -> Server:
        check_server_id(server_id)
        doc = await self._get_json(
            "get_server", f"/v1/{self.project_id}/cloudservers/{encode(server_id)}", None
        )
        return self._parse_server(doc.get("server"), "server")

    async def remote_console(self, server_id: str) -> ConsoleURL:
        check_server_id(server_id)
        path = f"/v1/{self.project_id}/cloudservers/{encode(server_id)}/remote_console"
        headers = self._headers() | {"Content-Type": "application/json;charset=UTF-8"}
        resp = await self._api.request("remote_console", "POST", self.endpoint + path, headers, _CONSOLE_BODY)
        console = parse_console(json_object(resp, "remote_console"))
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
        await self._api.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _parse_server(self, doc: object, where: str) -> Server:
        return parse_server(doc, cloud=self.name, project_id=self.project_id, region=self.region, where=where)

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": "novnc-gateway", "X-Project-Id": self.project_id}

    async def _get_json(self, op: str, path: str, query: Mapping[str, str] | None) -> dict[str, Any]:
        url = self.endpoint + path
        if query:
            url += "?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(query.items()))
        resp = await self._api.request(op, "GET", url, self._headers(), b"")
        return json_object(resp, op)
