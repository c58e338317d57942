"""The cloud provider interface: what the gateway needs from a cloud, and nothing more.

Everything above this layer (policy, web handlers, relay) speaks in `Server`, `ConsoleURL` and
`CloudError`; provider modules translate their API's shapes and error codes into these.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.upstream import UpstreamTarget

__all__ = [
    "ApiObserver",
    "CloudError",
    "CloudErrorKind",
    "CloudProvider",
    "ConsoleURL",
    "Server",
]

# (operation, outcome, seconds): outcome is "ok", the API's error code (e.g. "Ecs.0114"),
# "http_<status>" when the body carried no code, "unreachable" or "invalid_response".
ApiObserver = Callable[[str, str, float], None]

# Statuses in which a console cannot be opened, with the reason shown to the operator.
_STATUS_REASONS: dict[str, str] = {
    "SHUTOFF": "the server is stopped",
    "STOPPED": "the server is stopped",
    "BUILD": "the server is still being built",
    "REBOOT": "the server is rebooting",
    "HARD_REBOOT": "the server is rebooting",
    "ERROR": "the server is in an error state",
    "DELETED": "the server has been deleted",
    "SOFT_DELETED": "the server has been deleted",
    "SHELVED": "the server is shelved",
    "SHELVED_OFFLOADED": "the server is shelved",
    "SUSPENDED": "the server is suspended",
    "PAUSED": "the server is paused",
    "RESIZE": "the server is being resized",
    "VERIFY_RESIZE": "the server is being resized",
    "REVERT_RESIZE": "the server is being resized",
    "MIGRATING": "the server is being migrated",
    "REBUILD": "the server is being rebuilt",
    "RESCUE": "the server is in rescue mode",
    "UNKNOWN": "the server's state is unknown",
}


@dataclass(frozen=True, slots=True)
class Server:
    """One server as the cloud reported it, already validated."""

    cloud: str
    id: str
    name: str
    status: str
    project_id: str
    region: str
    availability_zone: str
    locked: bool
    tags: tuple[str, ...]
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    enterprise_project_id: str | None = None

    def __post_init__(self) -> None:
        # Frozen means callers cannot rebind; a read-only view means they cannot mutate either.
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def unavailable_reason(self) -> str | None:
        """None when a console can be opened; otherwise why not, in words for the operator."""
        if self.locked:
            return "the server is locked"
        if self.status == "ACTIVE":
            return None
        return _STATUS_REASONS.get(self.status, f"the server is not running (status {self.status})")


class ConsoleURL:
    """The console URL carries a one-time token: a secret that must never reach logs or reprs.

    `str()`, `repr()` and f-strings show only a placeholder; `.reveal()` is the single, greppable
    way to get at the URL.
    """

    __slots__ = ("__url", "protocol", "type")

    def __init__(self, url: str, *, protocol: str = "vnc", type: str = "novnc") -> None:
        self.__url = url
        self.protocol = protocol
        self.type = type

    def reveal(self) -> str:
        return self.__url

    def __repr__(self) -> str:
        return "ConsoleURL(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConsoleURL):
            return NotImplemented
        return (self.__url, self.protocol, self.type) == (other.__url, other.protocol, other.type)

    def __hash__(self) -> int:
        return hash((self.__url, self.protocol, self.type))

    def __reduce__(self) -> Any:
        # Pickling would write the token somewhere (a cache, a queue): refuse rather than leak.
        raise TypeError("ConsoleURL is a secret and cannot be pickled")


class CloudErrorKind(enum.Enum):
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BAD_STATE = "bad_state"
    LOCKED = "locked"
    THROTTLED = "throttled"
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    INVALID_RESPONSE = "invalid_response"
    INTERNAL = "internal"


_MAX_UPSTREAM_MESSAGE = 300


def _clean(text: str | None) -> str | None:
    """Keep an upstream message loggable: one line, bounded."""
    if text is None:
        return None
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(text) > _MAX_UPSTREAM_MESSAGE:
        text = text[:_MAX_UPSTREAM_MESSAGE] + "..."
    return text


class CloudError(Exception):
    """A failed cloud call: `user_message` for the operator, `str(err)` for the log."""

    def __init__(
        self,
        kind: CloudErrorKind,
        user_message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        upstream_message: str | None = None,
    ) -> None:
        self.kind = kind
        self.user_message = user_message
        self.code = code
        self.request_id = _clean(request_id)
        self.status = status
        self.retry_after = retry_after
        self.upstream_message = _clean(upstream_message)
        super().__init__(self._log_line())

    def _log_line(self) -> str:
        parts = [f"cloud error {self.kind.name}"]
        if self.status is not None:
            parts.append(f"http={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after:g}s")
        line = " ".join(parts) + f": {self.user_message}"
        if self.upstream_message:
            line += f" (upstream: {self.upstream_message})"
        return line

    def __str__(self) -> str:
        return self._log_line()

    def __repr__(self) -> str:
        return f"CloudError({self._log_line()!r})"


class CloudProvider(abc.ABC):
    """One configured cloud account/project/region that can hand out console URLs."""

    name: str
    region: str
    project_id: str

    @abc.abstractmethod
    async def list_servers(self) -> list[Server]:
        """Every server in the project (all pages)."""

    @abc.abstractmethod
    async def get_server(self, server_id: str) -> Server:
        """One server; CloudError NOT_FOUND when it does not exist in this project."""

    @abc.abstractmethod
    async def remote_console(self, server_id: str) -> ConsoleURL:
        """A fresh one-time console URL; ask again for every new upstream connection."""

    @abc.abstractmethod
    def console_target(self, url: ConsoleURL) -> UpstreamTarget:
        """The WebSocket the console proxy serves for `url`, from the URL forms this cloud returns.

        Raises `UpstreamURLError` (whose message never quotes the URL) for any other form.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """A cheap authenticated call for readiness checks; raises CloudError."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""
