"""A real, throwaway redis-server for integration tests: loopback only, no persistence, stopped by PID.

`restart()` brings it back on the same port (and with an empty dataset, since nothing is persisted), which
is how tests simulate an outage the gateway must ride out.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A port the OS just handed out; redis-server binds it right after (small race, retried on start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


@dataclass
class RedisServer:
    """One redis-server process; `start()` waits until it accepts connections.

    With `sentinel_master` set (a port on 127.0.0.1) it runs as a Sentinel monitoring that master under
    the service name `mymaster`.
    """

    workdir: Path
    password: str | None = None
    tls: TlsFiles | None = None
    port: int = 0
    sentinel_master: int | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        if self.sentinel_master is not None:
            conf = self.workdir / "sentinel.conf"  # Sentinel rewrites its config file: one of its own
            conf.write_text(f"sentinel monitor mymaster 127.0.0.1 {self.sentinel_master} 1\n")
            return [
                REDIS_SERVER, str(conf), "--sentinel",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "sentinel.log"),
            ]  # fmt: skip
        args = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca_cert),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self, timeout: float = 5.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port != 0
        for _ in range(1 if fixed_port else 5):
            if not fixed_port:
                self.port = free_port()
            self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready(timeout):
                return self
            self.stop()
            if fixed_port:
                break
            self.port = 0
        raise RuntimeError(f"redis-server did not start; log: {self._log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        """Ready when a PING is answered (over TLS when configured), not merely when the port is open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if self._ping():
                    return True
            time.sleep(0.02)  # polling a subprocess: there is nothing to await
        return False

    def _ping(self) -> bool:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
            try:
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            except OSError:
                sock.close()
                raise
        with sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            # "-NOAUTH" still proves the server is up and serving commands.
            return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        """SIGKILL, as a crash would: no chance to flush or say goodbye."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None

    def restart(self) -> None:
        """Back on the same port, with no data (persistence is off)."""
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        log = self.workdir / ("sentinel.log" if self.sentinel_master is not None else "redis.log")
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
