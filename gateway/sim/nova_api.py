"""A simulated OpenStack Nova compute API (v2.1), for the demo and the tests.

Nova itself needs a message queue, a database and a hypervisor; this follows its api-ref and
`doc/api_samples` for the calls the gateway makes: the version document, `GET /servers` and
`/servers/detail` (limit/marker paging), `GET /servers/{id}`, `POST /servers/{id}/remote-consoles`
(2.6+) and the `os-getVNCConsole` action (2.1-2.5), microversions from `OpenStack-API-Version` or the
legacy `X-OpenStack-Nova-API-Version` header (406 beyond the maximum), Nova's fault bodies
(`{"itemNotFound": {"code": 404, "message": ...}}`) and 409 for servers not ready for a console.
Tokens are validated by the caller's `validate` (the tests: a real Keystone; the demo: the simulated IAM),
as keystonemiddleware would; with `access_keys`, AK/SK-signed requests are accepted too, as on a Huawei-stack
cloud's Nova-style paths (Open Telekom Cloud).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateway.clouds.huawei.signer import SignatureError, verify_request

__all__ = ["NovaServer", "SimulatedNova", "keystone_validator"]

# token -> the project it is scoped to, or None when it is not valid (unknown, expired, revoked)
TokenValidator = Callable[[str], Awaitable[str | None]]

VERSION = web.RequestKey("version", tuple)
_VERSION_HEADER = re.compile(r"^\s*compute\s+(\S+)\s*$", re.I)
# The task states in which nova's compute API refuses a console (InstanceInvalidState/NotReady -> 409).
_NOT_READY_TASKS = {"migrating", "deleting", "scheduling", "spawning", "networking", "block_device_mapping"}


@dataclass
class NovaServer:
    id: str
    name: str
    status: str = "ACTIVE"
    task_state: str | None = None
    vm_state: str = "active"
    host: str | None = "compute-1"
    availability_zone: str = "nova"
    locked: bool = False
    locked_reason: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    def to_api(self, project_id: str, version: tuple[int, int], base: str) -> dict[str, Any]:
        """The server document as `GET /servers/{id}` returns it at `version` (fields by microversion)."""
        doc: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "tenant_id": project_id,
            "user_id": "9349aff8be7545ac9d2f1d00999a23cd",
            "metadata": dict(self.metadata),
            "hostId": "" if self.host is None else "2091634baaccdc4c5a1d57069c833e402921df696b7f970791b12ec6",
            "image": {"id": "70a599e0-31e7-49b7-b260-868f441e862b"},
            "flavor": {"vcpus": 1, "ram": 2048, "disk": 20, "original_name": "m1.small"},
            "addresses": {},
            "accessIPv4": "",
            "accessIPv6": "",
            "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z",
            "progress": 0,
            "OS-EXT-AZ:availability_zone": self.availability_zone,
            "OS-EXT-STS:task_state": self.task_state,
            "OS-EXT-STS:vm_state": self.vm_state,
            "OS-EXT-STS:power_state": 1 if self.status == "ACTIVE" else 4,
            "links": [{"href": f"{base}/servers/{self.id}", "rel": "self"}],
        }
        if version >= (2, 9):
            doc["locked"] = self.locked
        if version >= (2, 26):
            doc["tags"] = list(self.tags)
        if version >= (2, 73):
            doc["locked_reason"] = self.locked_reason
        return doc


def _fault(status: int, name: str, message: str) -> web.Response:
    return web.json_response({name: {"code": status, "message": message}}, status=status)


def _unauthorized() -> web.Response:
    # keystonemiddleware's answer, before nova sees the request.
    body = {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    return web.json_response(body, status=401, headers={"WWW-Authenticate": 'Keystone uri=""'})


def keystone_validator(keystone_url: str, *, ssl: Any = True) -> TokenValidator:
    """Validate a token against a real Keystone: `GET /v3/auth/tokens` with it as both the caller's token
    and the subject (a token may validate itself), as keystonemiddleware does with a service token."""

    async def validate(token: str) -> str | None:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{keystone_url}/v3/auth/tokens?nocatalog", headers=headers, ssl=ssl) as resp:
                if resp.status != 200:
                    return None
                doc = await resp.json()
        project = doc.get("token", {}).get("project") or {}
        return project.get("id")

    return validate


class SimulatedNova:
    """The compute API v2.1 endpoints the gateway uses, for one project."""

    def __init__(
        self,
        *,
        project_id: str,
        servers: list[NovaServer],
        issue_console: Callable[[NovaServer], str],
        validate: TokenValidator,
        max_version: tuple[int, int] = (2, 96),
        min_version: tuple[int, int] = (2, 1),
        access_keys: dict[str, str] | None = None,
    ) -> None:
        self.project_id = project_id
        # AK/SK signatures, as a Huawei-stack cloud (Open Telekom Cloud) accepts on its Nova-style paths.
        self.access_keys = dict(access_keys or {})
        self.servers: dict[str, NovaServer] = {s.id: s for s in servers}
        self.issue_console = issue_console
        self.validate = validate
        self.max_version = max_version
        self.min_version = min_version
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path, microversion asked)
        self.tokens_seen: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._auth, self._microversion])
        app.router.add_get("/v2.1/", self._version_doc)
        app.router.add_get("/v2.1", self._version_doc)
        for base in ("/v2.1", "/v2.1/{project_id}"):
            app.router.add_get(base + "/servers", self._list)
            app.router.add_get(base + "/servers/detail", self._list)
            app.router.add_get(base + "/servers/{server_id}", self._show)
            app.router.add_post(base + "/servers/{server_id}/remote-consoles", self._remote_consoles)
            app.router.add_post(base + "/servers/{server_id}/action", self._action)
        return app

    # -- middlewares ------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        asked = request.headers.get("OpenStack-API-Version") or request.headers.get(
            "X-OpenStack-Nova-API-Version"
        )
        self.calls.append((request.method, request.path, asked))
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.rstrip("/") == "/v2.1":
            return await handler(request)  # the version document needs no token
        token = request.headers.get("X-Auth-Token")
        if token:
            project = await self.validate(token)
            if project is None:
                return _unauthorized()
            self.tokens_seen.add(token)
        elif self.access_keys and request.headers.get("Authorization", "").startswith("SDK-HMAC-SHA256 "):
            try:
                verify_request(
                    self.access_keys.get,
                    request.method,
                    request.raw_path,
                    request.headers,
                    await request.read(),
                    now=datetime.now(UTC),
                )
            except SignatureError as exc:
                body = {
                    "error_code": exc.code,
                    "error_msg": f"Incorrect IAM authentication information: {exc.message}",
                }
                return web.json_response(body, status=401)
            project = request.headers.get("X-Project-Id")
        else:
            return _unauthorized()
        in_path = request.match_info.get("project_id")
        if project != self.project_id or (in_path is not None and in_path != project):
            return _fault(
                403, "forbidden", "Policy doesn't allow os_compute_api:servers:index to be performed."
            )
        return await handler(request)

    @web.middleware
    async def _microversion(self, request: web.Request, handler: Any) -> web.StreamResponse:
        version = self._requested(request)
        if isinstance(version, web.Response):
            return version
        request[VERSION] = version
        resp = await handler(request)
        text = f"{version[0]}.{version[1]}"
        resp.headers["OpenStack-API-Version"] = f"compute {text}"
        resp.headers["X-OpenStack-Nova-API-Version"] = text
        resp.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return resp

    def _requested(self, request: web.Request) -> tuple[int, int] | web.Response:
        raw = request.headers.get("OpenStack-API-Version")
        if raw is not None:
            match = _VERSION_HEADER.match(raw)
            text = match.group(1) if match else ""
        else:
            text = request.headers.get("X-OpenStack-Nova-API-Version", "").strip()
        if not text:
            return self.min_version
        if text.lower() == "latest":
            return self.max_version
        match = re.fullmatch(r"(\d+)\.(\d+)", text)
        if not match:
            return _fault(
                400,
                "badRequest",
                f"API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum.",
            )
        version = (int(match.group(1)), int(match.group(2)))
        if not self.min_version <= version <= self.max_version:
            lo, hi = (f"{v[0]}.{v[1]}" for v in (self.min_version, self.max_version))
            return _fault(
                406,
                "computeFault",
                f"Version {text} is not supported by the API. Minimum is {lo} and maximum is {hi}.",
            )
        return version

    # -- handlers ---------------------------------------------------------------------------

    def _base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}/v2.1"

    async def _version_doc(self, request: web.Request) -> web.Response:
        lo, hi = (f"{v[0]}.{v[1]}" for v in (self.min_version, self.max_version))
        version = {
            "id": "v2.1",
            "status": "CURRENT",
            "version": hi,
            "min_version": lo,
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"href": self._base(request) + "/", "rel": "self"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
            ],
        }
        return web.json_response({"version": version})

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "1000"))
        except ValueError:
            return _fault(400, "badRequest", "Invalid input for query parameters limit.")
        if limit < 0:
            return _fault(400, "badRequest", "Invalid input for query parameters limit.")
        ordered = list(self.servers.values())
        start = 0
        marker = q.get("marker")
        if marker is not None:
            ids = [s.id for s in ordered]
            if marker not in ids:
                return _fault(400, "badRequest", f"marker [{marker}] not found")
            start = ids.index(marker) + 1
        chunk = ordered[start : start + limit]
        version, base = request[VERSION], self._base(request)
        detail = request.path.endswith("/detail")
        servers = [
            s.to_api(self.project_id, version, base) if detail else {"id": s.id, "name": s.name, "links": []}
            for s in chunk
        ]
        body: dict[str, Any] = {"servers": servers}
        if chunk and start + limit < len(ordered):
            path = "servers/detail" if detail else "servers"
            body["servers_links"] = [
                {"href": f"{base}/{path}?limit={limit}&marker={chunk[-1].id}", "rel": "next"}
            ]
        return web.json_response(body)

    def _find(self, request: web.Request) -> NovaServer | web.Response:
        server_id = request.match_info["server_id"]
        server = self.servers.get(server_id)
        if server is None:
            return _fault(404, "itemNotFound", f"Instance {server_id} could not be found.")
        return server

    async def _show(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(
            {"server": found.to_api(self.project_id, request[VERSION], self._base(request))}
        )

    def _console(self, request: web.Request) -> web.Response | str:
        """The request's server, then nova.compute.api's checks before a console: a host, and no task that
        moves or removes it."""
        server = self._find(request)
        if isinstance(server, web.Response):
            return server
        if server.task_state in _NOT_READY_TASKS or server.vm_state == "building":
            return _fault(
                409,
                "conflictingRequest",
                f"Cannot 'get_vnc_console' instance {server.id} while it is in "
                f"task_state {server.task_state}",
            )
        if server.host is None:
            return _fault(409, "conflictingRequest", f"Instance {server.id} is not ready")
        return self.issue_console(server)

    async def _remote_consoles(self, request: web.Request) -> web.Response:
        if request[VERSION] < (2, 6):
            return _fault(404, "itemNotFound", "The resource could not be found.")
        try:
            console = json.loads(await request.read())["remote_console"]
            protocol, kind = console["protocol"], console["type"]
        except (ValueError, KeyError, TypeError):
            return _fault(400, "badRequest", "Invalid input for field/attribute remote_console.")
        if protocol != "vnc" or kind not in ("novnc", "xvpvnc"):
            return _fault(400, "badRequest", f"Invalid input for field/attribute type. Value: {kind}.")
        url = self._console(request)
        if isinstance(url, web.Response):
            return url
        return web.json_response({"remote_console": {"protocol": "vnc", "type": kind, "url": url}})

    async def _action(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _fault(400, "badRequest", "Malformed request body")
        if not isinstance(body, dict) or "os-getVNCConsole" not in body:
            return _fault(400, "badRequest", "There is no such action")
        if request[VERSION] >= (2, 6):
            return _fault(404, "itemNotFound", "The resource could not be found.")
        kind = (body["os-getVNCConsole"] or {}).get("type")
        if kind not in ("novnc", "xvpvnc"):
            return _fault(400, "badRequest", "Invalid input for field/attribute type.")
        url = self._console(request)
        if isinstance(url, web.Response):
            return url
        return web.json_response({"console": {"type": kind, "url": url}})
