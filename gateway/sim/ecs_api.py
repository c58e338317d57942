"""A simulated Huawei Cloud ECS API (and a minimal IAM), for the demo and the tests.

It follows the documented API: AK/SK signatures are verified with the gateway's own canonical
request code (so the simulator and client agree by construction, and the signer is proven against
the official SDK separately), errors use the real body shapes and codes, list paging uses page
numbers. Tests script failures with `inject(Fault(...))`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.clouds.huawei.signer import SignatureError, verify_request

__all__ = ["Fault", "SimServer", "SimulatedECS", "SimulatedIAM"]

MAX_LIMIT = 1000
REQUEST_ID = web.RequestKey("request_id", str)
DEFAULT_LIMIT = 25

_VM_STATE = {
    "ACTIVE": "active",
    "SHUTOFF": "stopped",
    "BUILD": "building",
    "ERROR": "error",
    "REBOOT": "active",
    "HARD_REBOOT": "active",
    "DELETED": "deleted",
}


@dataclass
class SimServer:
    id: str
    name: str
    status: str = "ACTIVE"
    availability_zone: str = "az1"
    locked: bool = False
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    enterprise_project_id: str = "0"

    def to_api(self, project_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "tenant_id": project_id,
            "addresses": {},
            "flavor": {"id": "s6.small.1", "name": "s6.small.1"},
            "metadata": dict(self.metadata),
            "tags": list(self.tags),
            "locked": self.locked,
            "OS-EXT-AZ:availability_zone": self.availability_zone,
            "OS-EXT-STS:vm_state": _VM_STATE.get(self.status, self.status.lower()),
            "enterprise_project_id": self.enterprise_project_id,
        }


@dataclass
class Fault:
    """A scripted response, consumed `times` times by matching requests, before auth.

    `status=None` means: after `delay`, handle the request normally (a slow API).
    `drop_connection` closes the socket without an answer. `path` restricts the fault to
    requests whose path contains it.
    """

    status: int | None = 500
    body: bytes | dict[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    times: int = 1
    drop_connection: bool = False
    path: str | None = None
    chunked: bool = False  # send the body without Content-Length


def _ecs_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _apigw_error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error_code": code, "error_msg": message, "request_id": request[REQUEST_ID]}, status=status
    )


class SimulatedIAM:
    """`POST /v3/auth/tokens` with the password method; tokens are project-scoped."""

    def __init__(
        self,
        *,
        domain: str,
        user: str,
        password: str,
        project_id: str,
        token_ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self.domain = domain
        self.user = user
        self._password = password
        self.project_id = project_id
        self.token_ttl = token_ttl
        self.tokens: dict[str, tuple[str, datetime]] = {}
        self.issued = 0

    def revoke_all(self) -> None:
        self.tokens.clear()

    def project_of(self, token: str) -> str | None:
        """The project a live token is scoped to; None for unknown, revoked or expired tokens."""
        entry = self.tokens.get(token)
        if entry is None or entry[1] <= datetime.now(UTC):
            return None
        return entry[0]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v3/auth/tokens", self._tokens)

    def app(self) -> web.Application:
        app = web.Application()
        self.add_routes(app)
        return app

    async def _tokens(self, request: web.Request) -> web.Response:
        def unauthorized() -> web.Response:
            body = {
                "error": {
                    "code": 401,
                    "title": "Unauthorized",
                    "message": "The request you have made requires authentication.",
                }
            }
            return web.json_response(body, status=401)

        try:
            auth = json.loads(await request.read())["auth"]
            user = auth["identity"]["password"]["user"]
            scope = auth["scope"]["project"]
            methods = auth["identity"]["methods"]
        except (ValueError, KeyError, TypeError):
            body = {"error": {"code": 400, "title": "Bad Request", "message": "Invalid auth request body."}}
            return web.json_response(body, status=400)
        if not isinstance(user, dict) or not isinstance(scope, dict) or methods != ["password"]:
            return unauthorized()
        ok = (
            user.get("name") == self.user
            and isinstance(user.get("password"), str)
            and secrets.compare_digest(user["password"].encode(), self._password.encode())
            and (user.get("domain") or {}).get("name") == self.domain
            and scope.get("id") == self.project_id
        )
        if not ok:
            return unauthorized()
        token = "MII" + secrets.token_urlsafe(48)
        expires = datetime.now(UTC) + self.token_ttl
        self.tokens[token] = (self.project_id, expires)
        self.issued += 1
        body = {
            "token": {
                "methods": ["password"],
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
                "issued_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "project": {"id": self.project_id, "name": "sim-region-1"},
                "user": {"name": self.user, "domain": {"name": self.domain}},
            }
        }
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})


class SimulatedECS:
    """The ECS v1 endpoints the gateway uses, for one project."""

    def __init__(
        self,
        *,
        project_id: str,
        access_key: str,
        secret_key: str,
        servers: list[SimServer],
        issue_console: Callable[[SimServer], str],
        region: str = "sim-region-1",
        iam: SimulatedIAM | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.project_id = project_id
        self.region = region
        self._keys = {access_key: secret_key}
        self.servers: dict[str, SimServer] = {s.id: s for s in servers}
        self.issue_console = issue_console
        self.iam = iam
        self._clock = clock or (lambda: datetime.now(UTC))
        self.calls: list[tuple[str, str]] = []
        self.console_bodies: list[bytes] = []  # raw remote_console request bodies, for assertions
        self._faults: deque[Fault] = deque()
        self._release = asyncio.Event()

    # -- test controls ----------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self._faults.append(fault)

    def release_delays(self) -> None:
        """End every pending `Fault.delay` now (used at shutdown so nothing lingers)."""
        self._release.set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._request_id, self._faults_mw, self._auth])
        base = "/v1/{project_id}/cloudservers"
        app.router.add_get(base + "/detail", self._list)
        app.router.add_get(base + "/{server_id}", self._show)
        app.router.add_post(base + "/{server_id}/remote_console", self._remote_console)
        if self.iam is not None:
            self.iam.add_routes(app)

        async def on_shutdown(_: web.Application) -> None:
            self.release_delays()

        app.on_shutdown.append(on_shutdown)
        return app

    # -- middlewares ------------------------------------------------------------------------

    @web.middleware
    async def _request_id(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[REQUEST_ID] = uuid.uuid4().hex
        self.calls.append((request.method, request.path))
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            exc.headers.setdefault("X-Request-Id", request[REQUEST_ID])
            raise
        resp.headers.setdefault("X-Request-Id", request[REQUEST_ID])
        return resp

    def _next_fault(self, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.path is None or fault.path in path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        fault = self._next_fault(request.path)
        if fault is None:
            return await handler(request)
        if fault.delay > 0:
            await request.read()  # while the client is still there to send it
            try:
                await asyncio.wait_for(self._release.wait(), fault.delay)
            except TimeoutError:
                pass
            else:
                return web.Response(status=503, text="simulator shutting down")
        if fault.drop_connection:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing can be answered on an aborted socket
        if fault.status is None:
            return await handler(request)
        if isinstance(fault.body, dict):
            resp = web.json_response(fault.body, status=fault.status, headers=dict(fault.headers))
        else:
            resp = web.Response(body=fault.body, status=fault.status, headers=dict(fault.headers))
        if fault.chunked:
            resp.enable_chunked_encoding()
        return resp

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/v3/auth/tokens":
            return await handler(request)
        project_id = request.match_info.get("project_id", "")
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            if self.iam is None or self.iam.project_of(token) is None:
                return _apigw_error(
                    request, 401, "APIGW.0301", "Incorrect IAM authentication information: token invalid"
                )
        else:
            try:
                verify_request(
                    self._keys.get,
                    request.method,
                    request.raw_path,
                    request.headers,
                    await request.read(),
                    now=self._clock(),
                )
            except SignatureError as exc:
                return _apigw_error(
                    request, 401, exc.code, f"Incorrect IAM authentication information: {exc.message}"
                )
        if project_id and project_id != self.project_id:
            return _ecs_error(403, "Ecs.0003", "You do not have permission to perform this operation.")
        return await handler(request)

    # -- handlers ---------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            offset = int(q.get("offset", "1"))
            limit = int(q.get("limit", str(DEFAULT_LIMIT)))
        except ValueError:
            return _ecs_error(400, "Ecs.0005", "Invalid offset or limit.")
        if offset < 0 or limit < 1 or limit > MAX_LIMIT:
            return _ecs_error(400, "Ecs.0005", f"limit must be 1..{MAX_LIMIT} and offset >= 0.")
        page = max(offset, 1)  # offset is a page number; 0 means the first page
        matching = [s for s in self.servers.values() if self._matches(s, q)]
        chunk = matching[(page - 1) * limit : page * limit]
        return web.json_response(
            {"count": len(matching), "servers": [s.to_api(self.project_id) for s in chunk]}
        )

    @staticmethod
    def _matches(server: SimServer, q: Mapping[str, str]) -> bool:
        name = q.get("name")
        if name and name.lower() not in server.name.lower():
            return False
        status = q.get("status")
        return not (status and server.status != status.upper())

    def _find(self, request: web.Request) -> SimServer | web.Response:
        server = self.servers.get(request.match_info["server_id"])
        if server is None:
            return _ecs_error(
                404, "Ecs.0114", f"Instance[{request.match_info['server_id']}] could not be found."
            )
        return server

    async def _show(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response({"server": found.to_api(self.project_id)})

    async def _remote_console(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.console_bodies.append(raw)
        try:
            console = json.loads(raw)["remote_console"]
            protocol, kind = console["protocol"], console["type"]
        except (ValueError, KeyError, TypeError):
            return _ecs_error(400, "Ecs.0005", "Invalid request body: remote_console is required.")
        if protocol != "vnc" or kind != "novnc":
            return _ecs_error(400, "Ecs.0005", "Invalid remote_console: protocol must be vnc, type novnc.")
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        if found.locked:
            return _ecs_error(400, "Ecs.0605", "The ECS is locked.")
        if found.status != "ACTIVE":
            return _ecs_error(
                400, "Ecs.0100", f"The ECS status {found.status} does not allow this operation."
            )
        body = {"remote_console": {"type": "novnc", "protocol": "vnc", "url": self.issue_console(found)}}
        return web.json_response(body)
