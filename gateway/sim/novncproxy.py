"""The demo's nova-novncproxy: the real websockify, over TLS, with one-time expiring tokens.

websockify forks per connection and installs signal handlers, so it runs as a subprocess. We bind the
listening socket ourselves and hand it over as stdin (`--inetd`): the port is known before websockify
starts and there is no bind-then-close race. websockify logs the request path (token included) on
every connection and the token again when refusing it, and has no quiet switch, so its stdout and
stderr go to /dev/null.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import quote

import gateway
from gateway.sim.certs import CertPaths
from gateway.sim.token_plugin import TokenStore

__all__ = ["NovncProxy"]

log = logging.getLogger(__name__)

PLUGIN = "gateway.sim.token_plugin.OneTimeTokens"
# websockify imports the plugin by dotted path: make sure that resolves to this very tree.
_PROJECT_ROOT = str(Path(gateway.__file__).resolve().parent.parent)


class NovncProxy:
    """Start/stop a websockify novncproxy and issue console URLs for targets behind it."""

    def __init__(
        self,
        *,
        workdir: Path,
        certs: CertPaths,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl: float = 60.0,
        url_style: str = "huawei",
        start_timeout: float = 15.0,
        record: Path | None = None,
    ) -> None:
        """`record`: websockify's own `--record` (every session's frames to `record`.N, for comparison)."""
        if url_style not in ("huawei", "nova"):
            raise ValueError("url_style must be 'huawei' or 'nova'")
        self.workdir = Path(workdir)
        self.certs = certs
        self.host = host
        self.port = port
        self.token_ttl = token_ttl
        self.url_style = url_style
        self.start_timeout = start_timeout
        self.record = record
        self.tokens = TokenStore(self.workdir / "tokens")
        self.pid: int | None = None
        self.startup_seconds: float | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def __repr__(self) -> str:
        return f"NovncProxy(host={self.host!r}, port={self.port}, pid={self.pid})"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "websockify",
            "--inetd",
            "--cert",
            str(self.certs.server_cert),
            "--key",
            str(self.certs.server_key),
            "--ssl-only",
            "--token-plugin",
            PLUGIN,
            "--token-source",
            str(self.tokens.directory),
            *(["--record", str(self.record)] if self.record is not None else []),
        ]

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tokens.ensure()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, self.port), family=family, backlog=128)
        self.port = listener.getsockname()[1]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        began = time.monotonic()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=listener.fileno(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() can reap forked children
            )
        finally:
            listener.close()  # websockify holds its own copy
        self.pid = self._proc.pid
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info(
            "novncproxy (websockify) pid %s on %s:%s ready in %.2fs",
            self.pid,
            self.host,
            self.port,
            self.startup_seconds,
        )

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the demo CA (what the gateway's ca_file does)."""
        return ssl.create_default_context(cafile=str(self.certs.ca_cert))

    async def _wait_ready(self) -> None:
        """Until websockify answers HTTP over TLS; the socket already listens, so connects queue."""
        assert self._proc is not None
        ctx = self.client_ssl_context()
        request = f"GET / HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.returncode is not None:
                raise RuntimeError(f"websockify exited with status {self._proc.returncode} during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("websockify did not become ready")
            try:
                async with asyncio.timeout(min(remaining, 1.0)):
                    reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ctx)
                    try:
                        writer.write(request)
                        status = await reader.readline()
                    finally:
                        writer.close()
                        with contextlib.suppress(OSError, ssl.SSLError):
                            await writer.wait_closed()
                if status.startswith(b"HTTP/1."):
                    return
            except (TimeoutError, OSError):
                continue
            except ssl.SSLError:
                raise  # a certificate problem will not fix itself

    async def stop(self) -> None:
        """SIGTERM (websockify then terminates its children), wait, SIGKILL the group if needed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(5.0):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                await proc.wait()
        # Connection handlers it forked but did not reap (e.g. after a SIGKILL) share its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self.pid = None

    def issue(
        self, target_host: str, target_port: int, *, ttl: float | None = None, style: str | None = None
    ) -> str:
        """A one-time console URL for target_host:target_port, in `style` (default: the configured one),
        so one proxy can stand behind a simulated Huawei ECS and a simulated Nova at once."""
        token = self.tokens.issue(target_host, target_port, self.token_ttl if ttl is None else ttl)
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"https://{host}:{self.port}/vnc_auto.html"
        if (style or self.url_style) == "huawei":
            return f"{base}?token={token}&lang=EN&tLength=70"
        return f"{base}?path={quote('?token=' + token, safe='')}"
