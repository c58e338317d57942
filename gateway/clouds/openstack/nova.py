"""The OpenStack Nova provider: servers and console URLs from the compute API, with Keystone tokens (or,
for Huawei-stack clouds such as Open Telekom Cloud, AK/SK signatures) on the Nova-style paths.

The compute endpoint comes from the token's service catalog (by type, interface and region) unless one is
configured. The console call is negotiated: the endpoint's announced microversions decide between
`POST /servers/{id}/remote-consoles` at 2.6 and the older `os-getVNCConsole` server action, and a 406 to
the former falls back to the latter. A 409 is explained from the server's task state.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Unpack
from urllib.parse import quote

from gateway.clouds.base import CloudError, CloudErrorKind, CloudProvider, ConsoleURL, Server
from gateway.clouds.console_urls import novnc_page_target
from gateway.clouds.documents import json_object, parse_console, parse_server
from gateway.clouds.http import ApiClient, HttpOptions, invalid
from gateway.clouds.huawei.ecs import AKSKAuth, check_server_id
from gateway.clouds.identity import choose_endpoint
from gateway.clouds.keystone import KeystoneAuth
from gateway.clouds.openstack.errors import (
    CONSOLE_MICROVERSION,
    SERVER_MICROVERSION,
    ApiVersions,
    conflict_reason,
    nova_error,
    parse_versions,
    version_headers,
)
from gateway.upstream import UpstreamTarget

__all__ = ["NovaCompute"]

log = logging.getLogger("gateway.cloud")

_REMOTE_CONSOLE = json.dumps({"remote_console": {"protocol": "vnc", "type": "novnc"}}).encode()
_GET_VNC_CONSOLE = json.dumps({"os-getVNCConsole": {"type": "novnc"}}).encode()
_PLACEHOLDERS = re.compile(
    r"\{project_id\}|\{tenant_id\}|%\(project_id\)s|%\(tenant_id\)s|\$\(project_id\)s|\$\(tenant_id\)s"
)


def _path_id(server_id: str) -> str:
    return quote(server_id, safe="")


class NovaCompute(CloudProvider):
    """Nova's compute API v2.1 for one project in one region."""

    def __init__(
        self,
        *,
        name: str,
        region: str,
        project_id: str,
        auth: KeystoneAuth | AKSKAuth,
        endpoint: str | None = None,
        interface: str = "public",
        page_size: int = 1000,
        **http: Unpack[HttpOptions],
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", project_id):
            raise ValueError("project_id must be 1-64 letters, digits, '-' or '_'")
        if endpoint is None and not isinstance(auth, KeystoneAuth):
            raise ValueError("without a Keystone catalog the compute endpoint must be configured")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.name = name
        self.region = region
        self.project_id = project_id
        self.interface = interface
        self.auth = auth
        self._configured_endpoint = endpoint.rstrip("/") if endpoint else None
        self._api = ApiClient(auth=auth, errors=nova_error, **http)
        self._page_size = page_size
        self._versions: ApiVersions | None = None
        self._discovered = False

    def __repr__(self) -> str:
        return f"NovaCompute(name={self.name!r}, region={self.region!r}, project_id={self.project_id!r})"

    # -- public API -------------------------------------------------------------------------

    async def list_servers(self) -> list[Server]:
        servers: list[Server] = []
        seen: set[str] = set()
        marker: str | None = None
        for _page in range(10_000):
            query = {"limit": str(self._page_size)} | ({"marker": marker} if marker else {})
            doc = await self._get("list_servers", "/servers/detail", query)
            items = doc.get("servers")
            if not isinstance(items, list):
                raise invalid("servers is missing or not a list")
            new = 0
            for i, item in enumerate(items):
                server = self._parse(item, f"servers[{len(servers) + i}]")
                if server.id not in seen:
                    seen.add(server.id)
                    servers.append(server)
                    new += 1
            if len(items) < self._page_size or not items:
                return servers
            if new == 0:
                raise invalid("the server list repeated a page (the marker did not advance)")
            marker = servers[-1].id
        raise invalid("the server list did not end after 10000 pages")

    async def get_server(self, server_id: str) -> Server:
        return self._parse((await self._server_doc(server_id)).get("server"), "server")

    async def remote_console(self, server_id: str) -> ConsoleURL:
        check_server_id(server_id)
        versions = await self._negotiate()
        try:
            if versions is None or versions.remote_consoles:
                try:
                    console = await self._remote_consoles(server_id)
                except CloudError as err:
                    if err.status != 406:
                        raise
                    log.info("%s: compute API refused microversion 2.6; using os-getVNCConsole", self.name)
                    self._versions = ApiVersions(maximum=(2, 5))
                    console = await self._get_vnc_console(server_id)
            else:
                console = await self._get_vnc_console(server_id)
        except CloudError as err:
            if err.status == 409:
                raise await self._explain_conflict(server_id, err) from None
            raise
        log.info("console URL issued for server %s in %s", server_id, self.name)
        return console

    def console_target(self, url: ConsoleURL) -> UpstreamTarget:
        """nova-novncproxy's `vnc_auto.html?path=%3Ftoken%3DT` (socket at /), or `?token=T` behind
        deployments that rewrite it (socket at /websockify)."""
        return novnc_page_target(url.reveal())

    async def ping(self) -> None:
        await self._get("ping", "/servers", {"limit": "1"})

    async def close(self) -> None:
        await self._api.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _parse(self, doc: object, where: str) -> Server:
        return parse_server(doc, cloud=self.name, project_id=self.project_id, region=self.region, where=where)

    async def _endpoint(self) -> str:
        """The compute endpoint: configured, or the catalog's for this interface and region."""
        if self._configured_endpoint is not None:
            url = self._configured_endpoint
        else:
            assert isinstance(self.auth, KeystoneAuth)
            issued = await self.auth.issued(self._api.identity)
            url = choose_endpoint(
                issued.catalog, service_type="compute", interface=self.interface, region=self.region
            ).rstrip("/")
        return _PLACEHOLDERS.sub(self.project_id, url)

    def _headers(self, version: tuple[int, int] | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "novnc-gateway"}
        if isinstance(self.auth, AKSKAuth):
            headers["X-Project-Id"] = self.project_id  # Huawei-stack APIs scope signed calls by this header
        return headers | (version_headers(version) if version else {})

    async def _negotiate(self) -> ApiVersions | None:
        """The endpoint's microversion range, asked once (`GET` on the version root); None if unknown."""
        if self._discovered:
            return self._versions
        endpoint = await self._endpoint()
        root = endpoint.removesuffix("/" + self.project_id)
        try:
            resp = await self._api.request("versions", "GET", root + "/", self._headers(None), b"")
            self._versions = parse_versions(resp.body)
        except CloudError as err:
            if err.kind in (CloudErrorKind.UNREACHABLE, CloudErrorKind.AUTH, CloudErrorKind.THROTTLED):
                raise
            log.info("%s: the compute API announced no microversions (%s); trying 2.6", self.name, err)
            self._versions = None
        self._discovered = True
        return self._versions

    async def _server_version(self) -> tuple[int, int] | None:
        versions = await self._negotiate()
        return versions.best(SERVER_MICROVERSION) if versions is not None else None

    async def _get(self, op: str, path: str, query: Mapping[str, str] | None) -> dict[str, Any]:
        version = await self._server_version()
        url = await self._endpoint() + path
        if query:
            url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
        resp = await self._api.request(op, "GET", url, self._headers(version), b"")
        return json_object(resp, op)

    async def _server_doc(self, server_id: str) -> dict[str, Any]:
        check_server_id(server_id)
        return await self._get("get_server", f"/servers/{_path_id(server_id)}", None)

    async def _post(self, op: str, path: str, body: bytes, version: tuple[int, int] | None) -> dict[str, Any]:
        headers = self._headers(version) | {"Content-Type": "application/json"}
        resp = await self._api.request(op, "POST", await self._endpoint() + path, headers, body)
        return json_object(resp, op)

    async def _remote_consoles(self, server_id: str) -> ConsoleURL:
        path = f"/servers/{_path_id(server_id)}/remote-consoles"
        doc = await self._post("remote_console", path, _REMOTE_CONSOLE, CONSOLE_MICROVERSION)
        return parse_console(doc, "remote_console")

    async def _get_vnc_console(self, server_id: str) -> ConsoleURL:
        path = f"/servers/{_path_id(server_id)}/action"
        doc = await self._post("remote_console", path, _GET_VNC_CONSOLE, None)
        return parse_console(doc, "console")

    async def _explain_conflict(self, server_id: str, err: CloudError) -> CloudError:
        """Nova's 409 says only "not ready": the server's task state says why, in words."""
        try:
            server = (await self._server_doc(server_id)).get("server")
        except CloudError:
            server = None
        return CloudError(
            CloudErrorKind.BAD_STATE,
            conflict_reason(server if isinstance(server, dict) else None),
            code=err.code,
            request_id=err.request_id,
            status=err.status,
            upstream_message=err.upstream_message,
        )
