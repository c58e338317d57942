"""Gateway processes started for real (`python -m gateway serve`): config files, signals, readiness."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port the OS just handed out; only for programs that must be told a port number up front."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.write_bytes(tomli_w.dumps(_plain(data)).encode())
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    """Popen returns at once; its own session, so a stuck child and its children can be killed as a group."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


@dataclass
class GatewayProcess:
    """One `novnc-gateway serve` process; stdout/stderr go to a log file the test can read."""

    config_path: Path
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cloud: Any = None  # the DemoCloud behind it, for tests/support/gateway.Operator

    @property
    def origin(self) -> str:
        return self.url

    def ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://", 1) + path

    @classmethod
    async def start(
        cls, data: dict[str, Any], workdir: Path, *, name: str = "gw", env: dict[str, str] | None = None
    ) -> GatewayProcess:
        host, _, port = data["server"]["listen"].rpartition(":")
        config_path = write_config(data, workdir / f"{name}.toml")
        log_path = workdir / f"{name}.log"
        gp = cls(config_path, f"http://{host}:{port}", log_path)
        gp.proc = _spawn(["serve", "--config", str(config_path)], log_path, env)
        await gp.wait_ready()
        return gp

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, within: float = 20.0, path: str = "/healthz") -> None:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    async with http.get(self.url + path) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, within, f"the gateway at {self.url}", detail=lambda: self.log()[-3000:])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, within: float = 30.0) -> int:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), within)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it will not go; always reaped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await self.wait_exit(30.0)
        except TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
