"""A real Keystone for the tests: bootstrapped once per session on SQLite, served on loopback.

It runs from its own virtualenv (`.venv/keystone`, made by `scripts/setup.sh --test`): `keystone-manage`
db_sync, fernet_setup, credential_setup and bootstrap, then Keystone's public WSGI application under a
threaded stdlib server (`serve.py`). `provision()` adds what a gateway account looks like in a real cloud:
a project, a user with the member role there, an application credential, and a compute service with
endpoints in two regions and two interfaces, whose URLs a test points at its Nova simulator.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.polling import wait_for
from tests.support.processes import ROOT, free_port

VENV = ROOT / ".venv" / "keystone"
HERE = Path(__file__).resolve().parent
REGION = "RegionOne"
OTHER_REGION = "RegionTwo"


@dataclass(frozen=True)
class Account:
    """The gateway's account in the test cloud (secrets only in memory, never printed)."""

    project_id: str
    user: str
    password: str = field(repr=False)
    user_domain: str
    app_cred_id: str
    app_cred_secret: str = field(repr=False)
    compute_endpoints: dict[tuple[str, str], str]  # (interface, region) -> endpoint id


@dataclass
class Keystone:
    workdir: Path
    port: int = 0
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _manage(self, *args: str) -> None:
        subprocess.run(
            [
                str(VENV / "bin" / "keystone-manage"),
                "--config-file",
                str(self.workdir / "keystone.conf"),
                *args,
            ],
            check=True,
            stdout=(self.workdir / "manage.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def start(self) -> Keystone:
        if not (VENV / "bin" / "keystone-manage").exists():
            raise RuntimeError("Keystone is not installed: run `make setup-test` (scripts/setup.sh --test)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        (self.workdir / "keystone.conf").write_text(
            f"[database]\nconnection = sqlite:///{self.workdir}/keystone.db\n"
            f"[fernet_tokens]\nkey_repository = {self.workdir}/fernet-keys\n"
            f"[credential]\nkey_repository = {self.workdir}/credential-keys\n"
            "[token]\nexpiration = 3600\n"
        )
        user, group = str(os.getuid()), str(os.getgid())
        self._manage("db_sync")
        self._manage("fernet_setup", "--keystone-user", user, "--keystone-group", group)
        self._manage("credential_setup", "--keystone-user", user, "--keystone-group", group)
        self._manage(
            "bootstrap",
            f"--bootstrap-password={self.admin_password}",  # =: a random password may begin with "-"
            "--bootstrap-public-url", f"{self.url}/v3",
            "--bootstrap-region-id", REGION,
        )  # fmt: skip
        conf = str(self.workdir / "keystone.conf")
        self.proc = subprocess.Popen(
            [str(VENV / "bin" / "python"), "-W", "ignore", str(HERE / "serve.py"), conf, str(self.port)],
            stdout=(self.workdir / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        asyncio.run(self._wait_ready())
        return self

    async def _wait_ready(self) -> None:
        def answering() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"keystone exited: {(self.workdir / 'serve.log').read_text()[-2000:]}")
            try:
                return self.request("GET", "/v3")[0] == 200
            except OSError:
                return False

        await wait_for(answering, 60.0, "keystone to answer on /v3")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    # -- the admin API ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One admin-API call (blocking; the fixtures run it outside the event loop or before it)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {"Content-Type": "application/json", **(headers or {})}
            if token:
                sent["X-Auth-Token"] = token
            conn.request(method, path, json.dumps(body).encode() if body is not None else None, sent)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None
        finally:
            conn.close()

    def token(self, user: str, password: str, project: dict[str, Any]) -> str:
        auth = {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
            },
            "scope": {"project": project},
        }
        status, headers, _ = self.request("POST", "/v3/auth/tokens", {"auth": auth})
        assert status == 201, status
        return next(v for k, v in headers.items() if k.lower() == "x-subject-token")

    def admin_token(self) -> str:
        return self.token("admin", self.admin_password, {"name": "admin", "domain": {"id": "default"}})

    def _create(self, token: str, path: str, key: str, doc: dict[str, Any]) -> dict[str, Any]:
        status, _, body = self.request("POST", path, {key: doc}, token)
        assert status == 201, (path, status, body)
        return body[key]

    def provision(self) -> Account:
        """A project, the gateway's user (member there), its application credential, a compute service."""
        admin = self.admin_token()
        project = self._create(admin, "/v3/projects", "project", {"name": "consoles", "domain_id": "default"})
        password = secrets.token_urlsafe(18)
        user = self._create(
            admin,
            "/v3/users",
            "user",
            {"name": "novnc-gateway", "domain_id": "default", "password": password},
        )
        _, _, roles = self.request("GET", "/v3/roles?name=member", token=admin)
        member = roles["roles"][0]["id"]
        status, _, _ = self.request(
            "PUT", f"/v3/projects/{project['id']}/users/{user['id']}/roles/{member}", token=admin
        )
        assert status == 204, status
        self._create(admin, "/v3/regions", "region", {"id": OTHER_REGION})
        compute = self._create(admin, "/v3/services", "service", {"type": "compute", "name": "nova"})
        endpoints: dict[tuple[str, str], str] = {}
        for interface, region in (("public", REGION), ("internal", REGION), ("public", OTHER_REGION)):
            ep = self._create(
                admin,
                "/v3/endpoints",
                "endpoint",
                {
                    "service_id": compute["id"],
                    "interface": interface,
                    "region_id": region,
                    "url": "http://127.0.0.1:9/v2.1",
                },
            )
            endpoints[(interface, region)] = ep["id"]
        own = self.token(user["name"], password, {"id": project["id"]})
        cred_secret = secrets.token_urlsafe(24)
        cred = self._create(
            own, f"/v3/users/{user['id']}/application_credentials", "application_credential",
            {"name": "novnc-gateway", "secret": cred_secret},
        )  # fmt: skip
        return Account(project["id"], user["name"], password, "Default", cred["id"], cred_secret, endpoints)

    def point_endpoint(self, endpoint_id: str, url: str) -> None:
        status, _, body = self.request(
            "PATCH", f"/v3/endpoints/{endpoint_id}", {"endpoint": {"url": url}}, self.admin_token()
        )
        assert status == 200, (status, body)

    def revoke(self, token: str) -> None:
        """Revoke a token (as the admin): the next call made with it is a 401."""
        status, _, _ = self.request(
            "DELETE", "/v3/auth/tokens", token=self.admin_token(), headers={"X-Subject-Token": token}
        )
        assert status == 204, status
