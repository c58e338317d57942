"""A real S3-compatible server for tests: moto in server mode (`python -m moto.server`), loopback only,
started as a subprocess and stopped by PID.

`stop()` is how a test takes the store down (connections are refused from then on); `restart()` brings
it back on the same port with no data (moto keeps everything in memory), `create_bucket` makes the
bucket a store writes to, and `objects`/`put` read and write behind the store's back (what was
stored, a token scan, tampering). Moto accepts any credentials, so tests pass fixed dummy ones.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from tests.support.polling import wait_for
from tests.support.processes import free_port

ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret"


@dataclass
class S3Server:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store_config(self, bucket: str, prefix: str = "recordings/") -> dict[str, Any]:
        """The `[recording.s3]` config section that points at this server."""
        return {
            "endpoint": self.endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "region": "us-east-1",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        }

    async def start(self, within: float = 30.0) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.proc = self._spawn()
        await wait_for(
            self._ready, within=within, what=f"moto server on port {self.port}", detail=self._log_tail
        )
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Popen returns at once; its own session, so it is killed alone by its PID."""
        with (self.workdir / "moto.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"moto server exited\n{self._log_tail()}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            return (await reader.read(12)).startswith(b"HTTP/1.")
        except OSError:
            return False
        finally:
            writer.close()

    def stop(self) -> None:
        """SIGKILL by PID, as a crash or an outage would: nothing more is answered."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    async def restart(self) -> None:
        """Back on the same port, empty."""
        self.stop()
        await self.start()

    def _client(self) -> Any:
        return get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    async def create_bucket(self, name: str) -> None:
        async with self._client() as client:
            await client.create_bucket(Bucket=name)

    async def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in the bucket, key -> content (to inspect what a store wrote, or scan it)."""
        found: dict[str, bytes] = {}
        async with self._client() as client:
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", ()):
                    response = await client.get_object(Bucket=bucket, Key=obj["Key"])
                    async with response["Body"] as body:
                        found[obj["Key"]] = await body.read()
        return found

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object behind the store's back (a stray object, or tampering)."""
        async with self._client() as client:
            await client.put_object(Bucket=bucket, Key=key, Body=data)

    def _log_tail(self) -> str:
        log = self.workdir / "moto.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
