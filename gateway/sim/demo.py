"""The embedded demo: two clouds side by side (a simulated Huawei ECS and a simulated OpenStack Nova behind
a simulated identity service), a real websockify as nova-novncproxy, RFB servers, and the gateway.

Everything binds 127.0.0.1. The tests start the same `DemoCloud`, so the demo is what the suite exercises
(the Nova side only when a test asks for it, or with a real Keystone validating its tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.auth.cookie import generate_key
from gateway.auth.passwords import hash_password
from gateway.config import GatewayConfig
from gateway.sim.certs import make_self_signed
from gateway.sim.ecs_api import SimServer, SimulatedECS, SimulatedIAM
from gateway.sim.nova_api import NovaServer, SimulatedNova, TokenValidator
from gateway.sim.novncproxy import NovncProxy
from gateway.sim.rfb_server import RFBServer

LOOPBACK = "127.0.0.1"
PROJECT_ID = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
CLOUD_NAME = "demo"
NOVA_CLOUD_NAME = "nova-demo"
NOVA_PROJECT_ID = "4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b"
NOVA_REGION = "RegionOne"
NOVA_USER = "novnc-gateway"

DEMO_SERVERS = (
    SimServer(
        id="6f7c3c52-2a7e-4a45-9d1c-4d2b0c9c1a01",
        name="web-01",
        availability_zone="sim-az1",
        tags=("env=prod", "role=web"),
        metadata={"owner": "web-team"},
    ),
    SimServer(
        id="8a1d9b0e-5c4f-4b7e-8e2a-0f6e3d2c1b02",
        name="db-01",
        availability_zone="sim-az2",
        tags=("env=prod", "role=db"),
        metadata={"owner": "dba"},
    ),
    SimServer(
        id="1e2f3a4b-6c7d-4e8f-9a0b-1c2d3e4f5a03",
        name="build-runner",
        availability_zone="sim-az1",
        tags=("env=ci",),
        metadata={"owner": "platform"},
    ),
    SimServer(
        id="9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c04",
        name="legacy-app",
        status="SHUTOFF",
        availability_zone="sim-az2",
        tags=("env=prod",),
        metadata={"owner": "web-team"},
    ),
)

DEMO_NOVA_SERVERS = (
    NovaServer(
        id="3c1f0e2d-4b5a-4c6d-8e7f-9a0b1c2d3e11",
        name="nova-web-01",
        availability_zone="nova",
        tags=("env=prod", "role=web"),
        metadata={"owner": "web-team"},
    ),
    NovaServer(
        id="5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b12",
        name="nova-migrating",
        task_state="migrating",
        tags=("env=staging",),
        metadata={"owner": "platform"},
    ),
)

DEMO_USERS = {
    "demo": ("demo", ["operators"]),
    "viewer": ("viewer", ["support"]),
    "admin": ("admin", ["platform"]),
}


@dataclass
class DemoCloud:
    """The simulated cloud side; `start()` brings it up on loopback, `stop()` takes every piece down."""

    workdir: Path
    token_ttl: float = 60.0
    servers: tuple[SimServer, ...] = DEMO_SERVERS
    access_key: str = field(default_factory=lambda: "DEMO" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    rfb: dict[str, RFBServer] = field(default_factory=dict)
    rfb_addr: dict[str, tuple[str, int]] = field(default_factory=dict)
    proxy_record: Path | None = None  # websockify's --record (the recording benchmark compares with it)
    proxy: NovncProxy | None = None
    ecs: SimulatedECS | None = None
    api_url: str = ""
    # The Nova side: off without servers. Its tokens are the simulated identity service's unless
    # `nova_validate` checks them elsewhere (the tests: a real Keystone).
    nova_servers: tuple[NovaServer, ...] = ()
    nova_project_id: str = NOVA_PROJECT_ID
    nova_validate: TokenValidator | None = None
    nova_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    nova: SimulatedNova | None = None
    identity: SimulatedIAM | None = None
    nova_url: str = ""
    identity_url: str = ""
    _runner: web.AppRunner | None = None
    _nova_runner: web.AppRunner | None = None
    _identity_runner: web.AppRunner | None = None

    async def start(self) -> None:
        certs = make_self_signed(self.workdir / "certs", hostnames=("localhost",), ips=(LOOPBACK,))
        self.ca_file = certs.ca_cert
        for server in self.servers:
            # Servers already mapped (e.g. to a real VNC server started by a test) keep their address.
            if server.status == "ACTIVE" and server.id not in self.rfb_addr:
                rfb = RFBServer(name=server.name, server_id=server.id)
                self.rfb_addr[server.id] = await rfb.start(LOOPBACK, 0)
                self.rfb[server.id] = rfb
        self.proxy = NovncProxy(
            workdir=self.workdir / "proxy",
            certs=certs,
            host=LOOPBACK,
            token_ttl=self.token_ttl,
            record=self.proxy_record,
        )
        await self.proxy.start()
        self.ecs = SimulatedECS(
            project_id=PROJECT_ID,
            access_key=self.access_key,
            secret_key=self.secret_key,
            servers=list(self.servers),
            issue_console=self._issue,
        )
        self._runner, self.api_url = await _serve(self.ecs.app())
        if self.nova_servers:
            await self._start_nova()

    async def _start_nova(self) -> None:
        for server in self.nova_servers:
            if server.id not in self.rfb_addr:
                rfb = RFBServer(name=server.name, server_id=server.id)
                self.rfb_addr[server.id] = await rfb.start(LOOPBACK, 0)
                self.rfb[server.id] = rfb
        validate = self.nova_validate
        if validate is None:
            self.identity = SimulatedIAM(
                domain="Default", user=NOVA_USER, password=self.nova_password, project_id=self.nova_project_id
            )
            identity = self.identity

            async def validate(token: str) -> str | None:
                return identity.project_of(token)

        self.nova = SimulatedNova(
            project_id=self.nova_project_id,
            servers=list(self.nova_servers),
            issue_console=self._issue_nova,
            validate=validate,
        )
        self._nova_runner, self.nova_url = await _serve(self.nova.app())
        if self.identity is not None:
            self._identity_runner, self.identity_url = await _serve(self.identity.app())

    def _issue(self, server: SimServer) -> str:
        assert self.proxy is not None
        host, port = self.rfb_addr[server.id]
        return self.proxy.issue(host, port)

    def _issue_nova(self, server: NovaServer) -> str:
        assert self.proxy is not None
        host, port = self.rfb_addr[server.id]
        return self.proxy.issue(host, port, style="nova")

    async def stop(self) -> None:
        for runner in (self._runner, self._nova_runner, self._identity_runner):
            if runner is not None:
                await runner.cleanup()
        if self.proxy is not None:
            await self.proxy.stop()
        for rfb in self.rfb.values():
            await rfb.stop()

    def cloud_config(self) -> dict[str, Any]:
        return {
            "name": CLOUD_NAME,
            "provider": "huawei",
            "region": "sim-region-1",
            "project_id": PROJECT_ID,
            "endpoint": self.api_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "retries": 1,
        }

    def nova_cloud_config(self) -> dict[str, Any]:
        """The Nova side as an `openstack` cloud signing in to the simulated identity service (which has no
        catalog, hence the explicit endpoint)."""
        return {
            "name": NOVA_CLOUD_NAME,
            "provider": "openstack",
            "region": NOVA_REGION,
            "project_id": self.nova_project_id,
            "endpoint": f"{self.nova_url}/v2.1",
            "keystone": {"url": self.identity_url, "user": NOVA_USER, "password": self.nova_password},
            "retries": 1,
        }


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{LOOPBACK}:{port}"


@functools.lru_cache(maxsize=16)
def _hash(password: str) -> str:
    """scrypt is deliberately slow; the demo's fixed passwords are hashed once per process."""
    return hash_password(password)


def demo_config_data(
    cloud: DemoCloud,
    *,
    port: int,
    users: dict[str, tuple[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """A complete gateway config for the demo cloud (plain data, so tests can adjust it)."""
    users = DEMO_USERS if users is None else users
    return {
        "server": {"listen": f"{LOOPBACK}:{port}", "log_level": "info"},
        "session": {"keys": [generate_key()], "secure_cookie": False},
        "auth": {
            "local": {
                "enabled": True,
                "users": [
                    {"name": name, "password_hash": _hash(pw), "groups": groups}
                    for name, (pw, groups) in users.items()
                ],
            }
        },
        "clouds": [cloud.cloud_config()]
        + ([cloud.nova_cloud_config()] if cloud.identity is not None else []),
        "upstream": {"allowed_hosts": [LOOPBACK], "ca_file": str(cloud.ca_file)},
        "policy": {
            "rules": [
                {"name": "demo-operators-control", "groups": ["operators"], "permission": "control"},
                {"name": "demo-admin-control", "users": ["admin"], "permission": "control"},
                {"name": "demo-support-view", "groups": ["support"], "permission": "view"},
            ],
            "admins": {"users": ["admin"]},
        },
    }


def run_demo(*, port: int = 8080) -> int:
    from gateway.logs import setup_logging
    from gateway.server import serve

    setup_logging("plain", "info")

    async def main() -> None:
        workdir = Path(tempfile.mkdtemp(prefix="novnc-gateway-demo-"))
        cloud = DemoCloud(workdir, nova_servers=DEMO_NOVA_SERVERS)
        try:
            await cloud.start()
            config = GatewayConfig.model_validate(demo_config_data(cloud, port=port))
            ready = asyncio.Event()
            task = asyncio.create_task(serve(config, None, ready=ready))
            await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if ready.is_set():
                print(
                    f"\n  novnc-gateway demo: http://{LOOPBACK}:{port}/  (bound to {LOOPBACK} only)\n"
                    "  users: demo/demo (control), viewer/viewer (view-only), admin/admin (admin)\n"
                    "  Ctrl-C stops it.\n",
                    flush=True,
                )
            await task
        finally:
            await cloud.stop()
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"novnc-gateway demo: cannot start: {exc}")
        return 1
    return 0
