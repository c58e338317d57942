"""A real nginx for tests: the deploy/ examples wrapped in a throwaway main config, every path in a temp dir.

The examples are written for production (`listen 443`, certificates under /etc/nginx/tls, replicas at
placeholder addresses). `adapt()` swaps exactly those lines for loopback ports and test certificates, and
fails if a line it expects is missing, so the tests keep exercising the file as shipped.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
EXAMPLE = ROOT / "deploy" / "nginx" / "novnc-gateway.conf"
SSO_EXAMPLE = ROOT / "deploy" / "nginx" / "novnc-gateway-sso.conf"


def _sub(pattern: str, repl: str, text: str, *, expect: int | None = None) -> str:
    new, count = re.subn(pattern, repl, text, flags=re.MULTILINE)
    if count == 0 or (expect is not None and count != expect):
        raise AssertionError(f"example nginx config changed shape: {pattern!r} matched {count} time(s)")
    return new


def adapt(
    text: str,
    *,
    cert: Path,
    key: Path,
    https_port: int,
    http_port: int,
    upstreams: dict[str, list[str]],
) -> str:
    """Loopback listeners, test certificates, and `upstreams` (name -> ["127.0.0.1:port", ...])."""
    text = _sub(r"^\s*listen \[::\]:\d+.*$\n", "", text)  # IPv6 listeners: not every test host has ::1
    text = _sub(r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{https_port} ssl;", text, expect=1)
    text = _sub(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{http_port};", text, expect=1)
    text = _sub(r"^(\s*ssl_certificate)\s+\S+;", rf"\1 {cert};", text, expect=1)
    text = _sub(r"^(\s*ssl_certificate_key)\s+\S+;", rf"\1 {key};", text, expect=1)
    for name, servers in upstreams.items():
        block = re.search(
            rf"^upstream {re.escape(name)} \{{\n(.*?)^\}}", text, flags=re.MULTILINE | re.DOTALL
        )
        if block is None:
            raise AssertionError(f"example nginx config has no upstream {name}")
        body = block.group(1)
        first = re.search(r"^\s*server \S+(.*);$", body, flags=re.MULTILINE)
        if first is None:
            raise AssertionError(f"upstream {name} lists no server")
        options = first.group(1)
        lines = "".join(f"    server {s}{options};\n" for s in servers)
        body = re.sub(r"^\s*server \S+.*;$\n", "", body, flags=re.MULTILINE)
        text = text[: block.start(1)] + lines + body + text[block.end(1) :]
    return text


def main_conf(prefix: Path, include: Path) -> str:
    """A main config for `include`: foreground, one process, pid/logs/temp files under `prefix`."""
    temp = prefix / "temp"
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix / "access.log"};
{paths}
    include {include};
}}
"""


def prepare(prefix: Path, site: str) -> Path:
    """Write `site` and its main config under `prefix`; returns the main config's path."""
    prefix.mkdir(parents=True, exist_ok=True)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / kind).mkdir(parents=True, exist_ok=True)
    include = prefix / "site.conf"
    include.write_text(site)
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, include))
    return conf


def _args(prefix: Path, conf: Path) -> list[str]:
    # -e: the error log before the config is read; otherwise nginx opens its compiled-in default first.
    return [NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]


def check(prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t`: parses everything, loads certificates, resolves upstreams; binds nothing."""
    return subprocess.run(
        [*_args(prefix, conf), "-t"], capture_output=True, text=True, timeout=30, check=False
    )


@dataclass
class Nginx:
    """One foreground nginx process (`master_process off`), stopped by PID."""

    prefix: Path
    conf: Path
    ports: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        """Popen returns at once; `start()` then waits for the listeners."""
        self.proc = subprocess.Popen(
            _args(self.prefix, self.conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def start(self, within: float = 10.0) -> Nginx:
        self.spawn()
        proc = self.proc
        assert proc is not None
        waiting = list(self.ports)

        async def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}:\n{self.log()}")
            while waiting:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", waiting[0])
                except OSError:
                    return False
                writer.close()
                await writer.wait_closed()
                waiting.pop(0)
            return True

        await wait_for(listening, within, f"nginx to listen on {self.ports}", detail=self.log)
        return self

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
