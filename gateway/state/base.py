"""The state interface every backend implements; the rest of the gateway sees only this."""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Command = dict[str, Any]
CommandHandler = Callable[[Command], Awaitable[None]]

log = logging.getLogger("gateway.state")


class StateUnavailable(Exception):
    """The shared store cannot be reached; callers decide whether to fail closed or open."""


async def deliver(handler: CommandHandler | None, command: Command) -> None:
    """Hand a command to the replica's handler. Its failure is its own: logged, never raised to the
    backend, whose delivery of the next command must go on."""
    if handler is None:
        return
    try:
        await handler(command)
    except Exception:
        log.exception("command handler failed for op %r", command.get("op"))


@dataclass(slots=True)
class ConsoleRecord:
    """What every replica may know about a live console: enough for limits, the admin list and audit."""

    id: str
    user: str
    sid: str
    cloud: str
    server_id: str
    server_name: str
    project_id: str
    permission: str
    client: str
    started: float
    replica: str
    groups: list[str] = field(default_factory=list)
    method: str = ""  # how the user signed in: with `user`, whose identity a re-decision concerns
    bytes_to_browser: int = 0
    bytes_to_upstream: int = 0
    state: str = "connecting"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsoleRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class StateStore(abc.ABC):
    """Live consoles, locks, revoked sign-ins, rate buckets, counters and a command channel."""

    @abc.abstractmethod
    async def start(self, on_command: CommandHandler) -> None:
        """Begin delivering commands published by any replica (this one included) to `on_command`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def console_acquire(self, record: ConsoleRecord, *, per_user: int, global_max: int) -> str | None:
        """Register atomically unless a limit is reached; returns None, or "per_user" / "global"."""

    @abc.abstractmethod
    async def console_update(self, record: ConsoleRecord) -> None: ...

    @abc.abstractmethod
    async def console_release(self, console_id: str) -> None: ...

    @abc.abstractmethod
    async def consoles(self) -> list[ConsoleRecord]: ...

    @abc.abstractmethod
    async def lock_user(self, user: str, reason: str) -> None: ...

    @abc.abstractmethod
    async def unlock_user(self, user: str) -> None: ...

    @abc.abstractmethod
    async def locked_users(self) -> dict[str, str]: ...

    async def is_locked(self, user: str) -> bool:
        return user in await self.locked_users()

    @abc.abstractmethod
    async def revoke_session(self, sid: str, ttl: float) -> None: ...

    @abc.abstractmethod
    async def is_revoked(self, sid: str) -> bool: ...

    @abc.abstractmethod
    async def revoked_sessions(self, sids: Collection[str]) -> set[str]:
        """Which of `sids` are revoked, in one round trip (the registry's reconciliation)."""

    @abc.abstractmethod
    async def request_termination(self, console_id: str, command: Command, ttl: float) -> None:
        """Record that a console must end (code, reason, by), for replicas that miss the command."""

    @abc.abstractmethod
    async def termination_requests(self, console_ids: Collection[str]) -> dict[str, Command]:
        """The recorded termination requests among `console_ids`."""

    @abc.abstractmethod
    async def record_groups(self, user: str, method: str, groups: Sequence[str], ttl: float) -> None:
        """Record the groups an identity source last asserted for `user` (signed in by `method`)."""

    @abc.abstractmethod
    async def recorded_groups(self, users: Collection[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """The recorded groups of each (user, method) in `users` that has them."""

    @abc.abstractmethod
    async def take_token(self, key: str, *, rate: float, burst: int) -> float | None:
        """Token bucket: None when a token was taken, else the seconds until one is available."""

    @abc.abstractmethod
    async def incr(self, key: str, window: float) -> int:
        """Fixed-window counter (the sign-in throttle's store)."""

    @abc.abstractmethod
    async def reset(self, key: str) -> None: ...

    @abc.abstractmethod
    async def publish(self, command: Command) -> None:
        """Deliver a command (terminate, lock, ...) to every replica's handler."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StateUnavailable when the store cannot be reached."""
