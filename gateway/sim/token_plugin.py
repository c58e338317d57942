"""One-time, expiring console tokens for the demo's websockify (Huawei's novncproxy semantics).

websockify forks a process per connection and imports the plugin named by `--token-plugin`, so
"one-time" must hold across processes: each token is one file in a directory, claimed with an atomic
`os.rename` (exactly one process wins), then deleted. Files are named by the token's SHA-256, so the
directory never holds a usable token, only what is needed to check one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
import uuid
from pathlib import Path

from websockify.token_plugins import BasePlugin

__all__ = ["OneTimeTokens", "TokenStore"]

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, urlsafe base64 without padding
_SUFFIX = ".tok"


class TokenStore:
    """Issue and consume tokens in `directory` (created 0700); safe across processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, token: str) -> Path:
        return self.directory / (hashlib.sha256(token.encode()).hexdigest() + _SUFFIX)

    def issue(self, host: str, port: int, ttl: float) -> str:
        """A fresh token for host:port valid `ttl` seconds (ttl <= 0 issues an already expired one)."""
        if not 0 < port < 65536:
            raise ValueError("port out of range")
        self.ensure()
        self.sweep()
        token = secrets.token_urlsafe(32)
        record = json.dumps({"host": host, "port": port, "expires": time.time() + ttl}).encode()
        tmp = self.directory / f".new-{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, record)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(token))  # readers never see a half-written record
        return token

    def consume(self, token: str) -> tuple[str, int] | None:
        """The target of a valid, unexpired, unused token; the token is spent either way."""
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return None
        claimed = self.directory / f".claimed-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            os.rename(self._path(token), claimed)
        except FileNotFoundError:
            return None  # unknown, or another process got there first
        try:
            record = json.loads(claimed.read_bytes())
        except (OSError, ValueError):
            return None
        finally:
            with contextlib.suppress(OSError):
                claimed.unlink()
        if time.time() >= float(record["expires"]):
            return None
        return str(record["host"]), int(record["port"])

    def sweep(self) -> None:
        """Delete expired token files (best effort; a racing consumer is harmless)."""
        now = time.time()
        with contextlib.suppress(OSError):
            for path in self.directory.glob("*" + _SUFFIX):
                try:
                    if json.loads(path.read_bytes())["expires"] <= now:
                        path.unlink()
                except (OSError, ValueError, KeyError):
                    continue

    def pending(self) -> int:
        """How many unspent token files exist (for tests and metrics)."""
        return sum(1 for _ in self.directory.glob("*" + _SUFFIX))


class OneTimeTokens(BasePlugin):
    """websockify token plugin: `--token-plugin gateway.sim.token_plugin.OneTimeTokens --token-source DIR`.

    websockify calls `lookup(token)` before answering the WebSocket upgrade and closes the connection
    when it returns None.
    """

    def __init__(self, src: str) -> None:
        super().__init__(src)
        self._store = TokenStore(Path(src))

    def lookup(self, token: str) -> list[str] | None:
        target = self._store.consume(token)
        if target is None:
            return None
        host, port = target
        return [host, str(port)]
