"""Helpers for the state-store tests: console records and a command inbox."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from gateway.state.base import Command, ConsoleRecord


def record(user: str = "alice", **kw: Any) -> ConsoleRecord:
    """A console record with a fresh id; `kw` overrides any field."""
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "user": user,
        "sid": "s-" + user,
        "cloud": "demo",
        "server_id": "srv-1",
        "server_name": "web-1",
        "project_id": "p1",
        "permission": "control",
        "client": "127.0.0.1",
        "started": time.time(),
        "replica": "a",
    }
    fields.update(kw)
    return ConsoleRecord(**fields)


class Inbox:
    """A command handler that lets a test await the next command; resyncs (after each subscription) are
    counted apart."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Command] = asyncio.Queue()
        self.resyncs = 0

    async def __call__(self, command: Command) -> None:
        if command == {"op": "resync"}:
            self.resyncs += 1
        else:
            await self.queue.put(command)

    async def next(self, within: float = 1.0) -> Command:
        return await asyncio.wait_for(self.queue.get(), within)
