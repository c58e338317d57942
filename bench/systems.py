"""The three systems under test, each in processes of its own, and where a client connects to them.

(a) direct: the client connects to the WebSocket source itself (the limit: no relay at all);
(b) websockify: the real websockify (default forking mode) bridging to the TCP source;
(c) gateway: the real `novnc-gateway serve` (one or several `--reuse-port` workers) whose cloud is the
    simulated ECS API, relaying from the WebSocket source; the client signs in and sends the cookie
    and Origin a browser would.
Yardsticks: nginx (Debian's, its own config) proxying the WebSocket source, and bench.forwarder.

Each can run with TLS where its deployment would: the source as `wss` (a real nova-novncproxy), the
gateway as a TLS client of it and optionally serving HTTPS itself, websockify with `--ssl-only`, nginx on
either hop. Certificates come from gateway.sim.certs (a throwaway CA the clients trust).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import tomli_w

from bench.source import LOOPBACK, PROJECT_ID, SERVER
from gateway.sim.certs import CertPaths, make_self_signed

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """Where a WebSocket client connects, with the headers it must send."""

    system: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | None = None  # for wss: trusts the bench CA


class Proc:
    """A child in its own session, so a stop also reaps whatever it forked."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, **kw: Any) -> None:
        self.log_path = log_path
        self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            args,
            cwd=ROOT,
            stdout=kw.pop("stdout", log_path.open("wb")),
            stderr=subprocess.STDOUT if "stderr" not in kw else kw.pop("stderr"),
            env={**os.environ, **(env or {})},
            start_new_session=True,
            **kw,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[psutil.Process]:
        """The process and everything it forked (websockify forks one child per connection)."""
        try:
            me = psutil.Process(self.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


async def _until(check: Any, what: str, proc: Proc, within: float = START_TIMEOUT) -> Any:
    deadline = time.monotonic() + within
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.popen.returncode}:\n{proc.log()[-3000:]}")
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready:\n{proc.log()[-3000:]}")
        await asyncio.sleep(0.05)


def bench_certs(workdir: Path) -> CertPaths:
    """One CA and loopback server certificate per run (made once: servers load them at each start)."""
    directory = workdir / "tls"
    paths = CertPaths(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    return paths if paths.server_key.exists() else make_self_signed(directory)


def client_tls(certs: CertPaths) -> ssl.SSLContext:
    """What a browser does with the bench CA installed: verify the chain and the name."""
    return ssl.create_default_context(cafile=certs.ca_cert)


class Source:
    """bench.source in its own process: `ws`, `tcp` and `api` ports, and `wss` and `api_tls`."""

    def __init__(self, workdir: Path, loop: str) -> None:
        self.workdir = workdir
        self.loop = loop
        self.access_key = "BENCH" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: Proc | None = None
        self.ports: dict[str, int] = {}
        self.certs = bench_certs(workdir)
        self.client_tls = client_tls(self.certs)

    async def start(self) -> None:
        ports_path = self.workdir / "source.ports"
        tls_dir = str(self.certs.server_cert.parent)
        self.proc = Proc(
            _python("-m", "bench.source", "--loop", self.loop, "--tls-dir", tls_dir),
            self.workdir / "source.log",
            env={"BENCH_ACCESS_KEY": self.access_key, "BENCH_SECRET_KEY": self.secret_key},
            stdout=ports_path.open("wb"),
            stderr=(self.workdir / "source.log").open("wb"),
        )

        async def ports() -> dict[str, int] | None:
            text = ports_path.read_text()
            return json.loads(text) if text.endswith("\n") else None

        self.ports = await _until(ports, "bench source", self.proc)

    def target(self) -> Target:
        return Target("direct", f"ws://{LOOPBACK}:{self.ports['ws']}/?token=direct")

    def tls_target(self) -> Target:
        return Target("direct", f"wss://{LOOPBACK}:{self.ports['wss']}/?token=direct", ssl=self.client_tls)

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['api']}"

    @property
    def api_tls_url(self) -> str:
        """The API whose console URLs are `https` (so the gateway connects upstream with TLS)."""
        return f"http://{LOOPBACK}:{self.ports['api_tls']}"

    async def api_times(self, http: aiohttp.ClientSession, *, reset: bool) -> list[float]:
        url = f"http://{LOOPBACK}:{self.ports['ws']}/bench/api-times"
        async with http.request("POST" if reset else "GET", url) as response:
            return list(await response.json())

    def processes(self) -> list[psutil.Process]:
        return self.proc.tree() if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _websockify_command() -> list[str]:
    script = Path(sys.executable).parent / "websockify"
    return [str(script)] if script.exists() else _python("-m", "websockify")


class Websockify:
    """websockify 0.13 in its default (forking) mode; the listening socket is handed over (--inetd).
    With `certs`, `--cert --key --ssl-only`: it serves `wss` (its upstream, VNC over TCP, stays plain)."""

    def __init__(self, workdir: Path, tcp_port: int, certs: CertPaths | None = None) -> None:
        self.workdir = workdir
        self.tcp_port = tcp_port
        self.certs = certs
        self.tls = client_tls(certs) if certs else None
        self.port = 0
        self.proc: Proc | None = None

    async def start(self) -> None:
        listener = socket.create_server((LOOPBACK, 0), backlog=4096)
        self.port = listener.getsockname()[1]
        try:
            # websockify prints every connection (with its path): its output goes to /dev/null.
            tls = []
            if self.certs is not None:
                tls = ["--cert", str(self.certs.server_cert), "--key", str(self.certs.server_key)]
                tls.append("--ssl-only")
            self.proc = Proc(
                [*_websockify_command(), *tls, "--inetd", f"{LOOPBACK}:{self.tcp_port}"],
                self.workdir / "websockify.log",
                stdin=listener.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            listener.close()

        async def answers() -> bool:
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port, ssl=self.tls)
            except OSError:
                return False
            try:
                writer.write(f"GET / HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode())
                async with asyncio.timeout(2):
                    return (await reader.readline()).startswith(b"HTTP/1.")
            except (TimeoutError, OSError):
                return False
            finally:
                writer.close()

        await _until(answers, "websockify", self.proc)

    def target(self) -> Target:
        return Target("websockify", f"{'wss' if self.tls else 'ws'}://{LOOPBACK}:{self.port}/", ssl=self.tls)

    def processes(self) -> list[psutil.Process]:
        return self.proc.tree() if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Forwarder:
    """bench.forwarder: a zero-work TCP hop in front of the WebSocket source (reference only). In front
    of the `wss` port (`tls` given) it passes the TLS bytes through: the client talks TLS to the source."""

    def __init__(self, workdir: Path, ws_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.workdir = workdir
        self.ws_port = ws_port
        self.tls = tls
        self.port = 0
        self.proc: Proc | None = None

    async def start(self) -> None:
        port_path = self.workdir / f"forwarder-{self.ws_port}.port"
        self.proc = Proc(
            _python("-m", "bench.forwarder", str(self.ws_port)),
            self.workdir / "forwarder.log",
            stdout=port_path.open("wb"),
            stderr=(self.workdir / "forwarder.log").open("wb"),
        )

        async def port() -> int | None:
            text = port_path.read_text()
            return int(text) if text.endswith("\n") else None

        self.port = await _until(port, "forwarder", self.proc)

    def target(self) -> Target:
        scheme = "wss" if self.tls else "ws"
        return Target("forwarder", f"{scheme}://{LOOPBACK}:{self.port}/?token=forwarded", ssl=self.tls)

    def processes(self) -> list[psutil.Process]:
        return self.proc.tree() if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _free_port() -> int:
    with socket.socket() as s:  # the server binds its own listener; a fresh port is all it needs
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


_NGINX_SITE = """map $http_upgrade $bench_connection {{
    default upgrade;
    ''      '';
}}
server {{
    listen {listen};
{server_tls}
    location / {{
        proxy_pass {upstream};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $bench_connection;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        proxy_buffering off;
        proxy_buffer_size {buffer};
        proxy_buffers 4 {buffer};
{upstream_tls}
    }}
}}
"""


class Nginx:
    """Debian's nginx, one process (`master_process off`, one worker), proxying the WebSocket source
    with the settings of deploy/nginx/novnc-gateway.conf's console location: the C relay a platform team
    would otherwise put there. `tls_upstream`: to the source's `wss` port, verifying it; `tls_serve`:
    serving `wss` itself. `buffer` is nginx's per-direction buffer of an upgraded connection."""

    def __init__(
        self, workdir: Path, source: Source, *, tls_upstream: bool = False, tls_serve: bool = False
    ) -> None:
        self.workdir = workdir
        self.source = source
        self.tls_upstream = tls_upstream
        self.tls = source.client_tls if tls_serve else None
        self.port = 0
        self.proc: Proc | None = None

    def site(self, buffer: str = "64k") -> str:
        certs = self.source.certs
        server_tls = upstream_tls = ""
        if self.tls is not None:
            server_tls = (
                f"    ssl_certificate {certs.server_cert};\n    ssl_certificate_key {certs.server_key};\n"
                "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            )
        if self.tls_upstream:
            upstream = f"https://{LOOPBACK}:{self.source.ports['wss']}"
            upstream_tls = (
                f"        proxy_ssl_trusted_certificate {certs.ca_cert};\n        proxy_ssl_verify on;\n"
                "        proxy_ssl_name localhost;\n        proxy_ssl_server_name on;\n"
            )
        else:
            upstream = f"http://{LOOPBACK}:{self.source.ports['ws']}"
        listen = f"{LOOPBACK}:{self.port}" + (" ssl" if self.tls else "")
        return _NGINX_SITE.format(
            listen=listen, server_tls=server_tls, upstream=upstream, upstream_tls=upstream_tls, buffer=buffer
        )

    async def start(self) -> None:
        from tests.support.nginx import NGINX, prepare

        self.port = _free_port()
        prefix = self.workdir / f"nginx-{self.port}"
        conf = prepare(prefix, self.site())
        self.proc = Proc(
            [NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")],
            prefix / "stdout.log",
        )

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, self.port)
            except OSError:
                return False
            writer.close()
            return True

        await _until(listening, "nginx", self.proc)

    def target(self) -> Target:
        scheme = "wss" if self.tls else "ws"
        return Target("nginx", f"{scheme}://{LOOPBACK}:{self.port}/?token=nginx", ssl=self.tls)

    def processes(self) -> list[psutil.Process]:
        return self.proc.tree() if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def gateway_config(
    source: Source, port: int, workdir: Path, *, tls_upstream: bool = False, tls_serve: bool = False
) -> dict[str, Any]:
    """The gateway as deployed, except limits raised so that thousands of consoles may open. With
    `tls_upstream` its cloud hands out `https` console URLs (upstream verified against the bench CA);
    with `tls_serve` it serves HTTPS itself."""
    from gateway.auth.cookie import generate_key
    from gateway.auth.passwords import hash_password

    server: dict[str, Any] = {"listen": f"{LOOPBACK}:{port}", "log_level": "warning", "drain_timeout": 1.0}
    if tls_serve:
        server |= {"tls_cert": str(source.certs.server_cert), "tls_key": str(source.certs.server_key)}
    upstream: dict[str, Any] = {"allowed_hosts": [LOOPBACK]}
    if tls_upstream:
        upstream["ca_file"] = str(source.certs.ca_cert)
    return {
        "server": server,
        "session": {"keys": [generate_key()], "secure_cookie": False},
        "auth": {
            "local": {
                "enabled": True,
                "users": [{"name": "bench", "password_hash": hash_password("bench"), "groups": ["bench"]}],
            }
        },
        "clouds": [
            {
                "name": "bench",
                "provider": "huawei",
                "region": "sim-region-1",
                "project_id": PROJECT_ID,
                "endpoint": source.api_tls_url if tls_upstream else source.api_url,
                "access_key": source.access_key,
                "secret_key": source.secret_key,
                "retries": 0,
            }
        ],
        "upstream": upstream,
        "limits": {
            "per_user": 100_000,
            "global_max": 100_000,
            "requests_per_minute": 1e9,
            "burst": 1_000_000,
        },
        "policy": {"rules": [{"name": "bench", "users": ["bench"], "permission": "control"}]},
        "audit": {"target": str(workdir / "audit.jsonl")},
    }


class Gateway:
    """`novnc-gateway serve` (through bench.gateway_launch to pick the loop), `workers` of them sharing
    one port with --reuse-port; the client signs in once (every worker shares the session keys)."""

    def __init__(
        self,
        workdir: Path,
        source: Source,
        *,
        workers: int = 1,
        loop: str = "uvloop",
        tls_upstream: bool = False,
        tls_serve: bool = False,
        tweak: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`tweak` edits the config before it is written (bench/recording.py: recording on, other clouds)."""
        self.workdir = workdir
        self.source = source
        self.workers = workers
        self.loop = loop
        self.tweak = tweak
        self.tls_upstream = tls_upstream
        self.tls = source.client_tls if tls_serve else None
        self.port = 0
        self.procs: list[Proc] = []
        self.cookie = ""

    async def start(self) -> None:
        self.port = _free_port()
        path = self.workdir / f"gateway-{self.port}.toml"
        tls = {"tls_upstream": self.tls_upstream, "tls_serve": self.tls is not None}
        config = gateway_config(self.source, self.port, self.workdir, **tls)
        if self.tweak is not None:
            self.tweak(config)
        path.write_bytes(tomli_w.dumps(config).encode())
        for i in range(self.workers):
            args = ["-m", "bench.gateway_launch", "--loop", self.loop, "--uncapped-connector"]
            args += ["serve", "--config", str(path)]
            if self.workers > 1:
                args.append("--reuse-port")
            proc = Proc(_python(*args), self.workdir / f"gateway-{self.port}-{i}.log")
            self.procs.append(proc)
            await _until(lambda p=proc: self._listening(p), "gateway", proc)
        await self._login()

    @staticmethod
    async def _listening(proc: Proc) -> bool:
        # Per worker (they share the port, so a probe could reach another one): the app is set up
        # before aiohttp binds, so a listening socket means this worker is ready.
        return any(c.status == psutil.CONN_LISTEN for c in psutil.Process(proc.pid).net_connections("tcp"))

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    async def _login(self) -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                self.origin + "/api/login",
                json={"user": "bench", "password": "bench"},
                headers={"Origin": self.origin},
                ssl=self.tls or True,
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"bench sign-in failed: {response.status} {await response.text()}")
            self.cookie = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)

    def target(self) -> Target:
        return Target(
            "gateway",
            f"{'wss' if self.tls else 'ws'}://{LOOPBACK}:{self.port}/ws/console/bench/{SERVER.id}",
            {"Origin": self.origin, "Cookie": self.cookie},
            ssl=self.tls,
        )

    def processes(self) -> list[psutil.Process]:
        return [p for proc in self.procs for p in proc.tree()]

    def shimmed(self) -> bool:
        """Whether bench.gateway_launch had to lift aiohttp's 100-connection default (see there)."""
        return any("bench shim:" in proc.log() for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
