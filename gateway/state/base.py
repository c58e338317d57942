"""The state interfaces, one per concern, and `StateStore`, their composition that every backend implements;
the rest of the gateway sees only these."""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

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
    justification: str = ""  # the reason the user gave, when the policy rule asks for one
    watching: str = ""  # an observer's console: the id of the console it watches (docs/shadowing.md)
    moderation: list[str] = field(default_factory=list)  # a moderated console: its moderators' groups
    recording: str = ""  # a recorded console: its recording's id (the admin page links to the player)
    bytes_to_browser: int = 0
    bytes_to_upstream: int = 0
    state: str = "connecting"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsoleRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class ConsoleLedger(Protocol):
    """Every replica's live consoles and the limits on them. An entry lapses `console_ttl` after its last
    write (the bound on consoles a dead replica leaves behind); a release leaves a tombstone for as long."""

    @abc.abstractmethod
    async def console_acquire(self, record: ConsoleRecord, *, per_user: int, global_max: int) -> str | None:
        """Register atomically unless a limit is reached; returns None, or "per_user" / "global". A retry
        with the same id refreshes the entry and is not counted twice."""

    @abc.abstractmethod
    async def console_update(self, record: ConsoleRecord) -> None:
        """Refresh the entry, or register it again if it lapsed or was lost, unless it was released."""

    @abc.abstractmethod
    async def console_release(self, console_id: str) -> None: ...

    @abc.abstractmethod
    async def consoles(self) -> list[ConsoleRecord]:
        """The live entries, as last written (copies: changing one changes nothing stored)."""


class Locks(Protocol):
    """Users an administrator locked, until unlocked."""

    @abc.abstractmethod
    async def lock_user(self, user: str, reason: str) -> None: ...

    @abc.abstractmethod
    async def unlock_user(self, user: str) -> None: ...

    @abc.abstractmethod
    async def locked_users(self) -> dict[str, str]: ...

    async def is_locked(self, user: str) -> bool:
        return user in await self.locked_users()


class Revocations(Protocol):
    """Signed-out sign-ins (session ids), each until its cookie could have expired anyway."""

    @abc.abstractmethod
    async def revoke_session(self, sid: str, ttl: float) -> None: ...

    @abc.abstractmethod
    async def is_revoked(self, sid: str) -> bool: ...

    @abc.abstractmethod
    async def revoked_sessions(self, sids: Collection[str]) -> set[str]:
        """Which of `sids` are revoked, in one round trip (the registry's reconciliation)."""


class Terminations(Protocol):
    """Verdicts that a console must end, kept as state for replicas that miss the command."""

    @abc.abstractmethod
    async def request_termination(self, console_id: str, command: Command, ttl: float) -> None:
        """Record that a console must end (code, reason, by); a later request replaces an earlier one."""

    @abc.abstractmethod
    async def termination_requests(self, console_ids: Collection[str]) -> dict[str, Command]:
        """The recorded termination requests among `console_ids`."""


class IdentityRecords(Protocol):
    """The groups an identity source last asserted per user, for replicas that miss the command."""

    @abc.abstractmethod
    async def record_groups(self, user: str, method: str, groups: Sequence[str], ttl: float) -> None:
        """Record the groups an identity source last asserted for `user` (signed in by `method`)."""

    @abc.abstractmethod
    async def recorded_groups(self, users: Collection[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """The recorded groups of each (user, method) in `users` that has them."""


class Counters(Protocol):
    """Fixed-window counters: all the sign-in throttle needs."""

    @abc.abstractmethod
    async def incr(self, key: str, window: float) -> int:
        """Increment `key` and return its count in the window, which starts with the first increment."""

    @abc.abstractmethod
    async def reset(self, key: str) -> None: ...


class RateLimits(Counters, Protocol):
    """Counters, and token buckets (console requests)."""

    @abc.abstractmethod
    async def take_token(self, key: str, *, rate: float, burst: int) -> float | None:
        """Token bucket: None when a token was taken, else the seconds until one is available. ValueError
        unless rate > 0 and burst >= 1."""


class Commands(Protocol):
    """Commands (terminate, lock, identity, ...) to every replica; at most once, so verdicts are state too."""

    @abc.abstractmethod
    async def start(self, on_command: CommandHandler) -> None:
        """Begin delivering commands published by any replica (this one included) to `on_command`; it may
        also receive {"op": "resync"} whenever commands may have been missed."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, command: Command) -> None:
        """Deliver a command to every replica's handler; a handler's failure is not the publisher's."""


@dataclass(slots=True)
class AccessRequest:
    """A just-in-time access request (docs/policy.md): pending until an approver decides; an approved one
    is a grant of `rule` on one server to `user` until `expires` (wall-clock seconds)."""

    id: str
    user: str
    cloud: str
    server_id: str
    server_name: str
    rule: str
    permission: str
    duration: float  # seconds asked for
    reason: str
    created: float
    status: str = "pending"  # pending | approved | denied
    decided_by: str = ""
    expires: float = 0.0

    def grants(self, user: str, cloud: str, server_id: str, now: float) -> bool:
        return (
            self.status == "approved"
            and (self.user, self.cloud, self.server_id) == (user, cloud, server_id)
            and self.expires > now
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccessRequest:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def active_grants(
    requests: Collection[AccessRequest], user: str, cloud: str, server_id: str, now: float
) -> dict[str, float]:
    """The just-in-time rules approved requests open for `user` on one server now, with their ends."""
    return {r.rule: r.expires for r in requests if r.grants(user, cloud, server_id, now)}


class AccessRequests(Protocol):
    """Just-in-time access requests and the grants they become, shared by every replica. An entry lapses
    `ttl` after its last write: a pending request after the time left to decide it, a grant when it ends."""

    @abc.abstractmethod
    async def access_request_put(self, request: AccessRequest, ttl: float) -> None: ...

    @abc.abstractmethod
    async def access_requests(self) -> list[AccessRequest]:
        """Every request not yet lapsed, oldest first."""

    @abc.abstractmethod
    async def access_request_decide(self, decided: AccessRequest, ttl: float) -> bool:
        """Store `decided` (same id, status approved or denied) only if that request is still pending:
        of two approvers deciding at once, exactly one wins. False: unknown, lapsed or already decided."""


WATCH_STATUSES = ("pending", "approved", "refused", "joined", "left")


@dataclass(slots=True)
class Watcher:
    """One attempt to watch a live console (docs/shadowing.md): asked for, perhaps approved or refused by
    the console's owner, joined, left. Kept in the shared state so the owner's replica (whose page shows
    the list and decides approvals) and the observer's replica (which waits for the decision) agree."""

    id: str  # the watch id
    console_id: str  # the console watched (the owner's)
    user: str
    name: str  # shown on the owner's page
    requested: float  # wall-clock seconds
    replica: str  # the observer's
    groups: list[str] = field(default_factory=list)
    status: str = "pending"  # one of WATCH_STATUSES
    since: float = 0.0  # wall-clock seconds it joined; 0 until then
    moderator: bool = False  # counts as a moderator of the console (moderation, docs/shadowing.md)
    decided_by: str = ""  # who approved or refused
    observer_console: str = ""  # the observer's own console id (its ledger entry), once registered

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Watcher:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Watchers(Protocol):
    """Who watches (or asks to watch) which console, shared by every replica. An entry lapses `ttl` after
    its last write: a pending one when approval times out, a joined one unless its replica refreshes it
    (the bound on watchers a dead replica leaves behind), a left or refused one soon after."""

    @abc.abstractmethod
    async def watcher_put(self, watcher: Watcher, ttl: float) -> None:
        """Write the entry (a later write of the same id replaces it)."""

    @abc.abstractmethod
    async def watchers(self, console_ids: Collection[str]) -> dict[str, list[Watcher]]:
        """The entries not yet lapsed of each of `console_ids` that has any, oldest request first (copies)."""

    @abc.abstractmethod
    async def watcher_decide(self, decided: Watcher, ttl: float) -> bool:
        """Store `decided` (same id and console, status approved or refused) only if that entry is still
        pending: of two decisions at once exactly one wins. False: unknown, lapsed or no longer pending."""


class Health(Protocol):
    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StateUnavailable when the store cannot be reached."""


class StateStore(
    ConsoleLedger,
    Locks,
    Revocations,
    Terminations,
    IdentityRecords,
    RateLimits,
    AccessRequests,
    Watchers,
    Commands,
    Health,
    Protocol,
):
    """Every concern together: what each backend implements (tests/contract/test_state_contract.py holds
    them to one behaviour) and what the console registry, which touches all of them, takes. A part that
    needs one concern takes that interface. Any method may raise StateUnavailable."""
