"""OpenStack Nova's answers, sans-IO: error bodies -> CloudError, 409 task states explained, and the
microversion a deployment supports -> which console call to make.

Nova error bodies name the fault: `{"itemNotFound": {"code": 404, "message": "..."}}`,
`{"conflictingRequest": {...}}` (409), `{"badRequest": {...}}`, `{"notImplemented": {...}}` (501),
`{"computeFault": {...}}` (406 for an unsupported microversion, 5xx). The fault name and the request id go
to the log; the operator gets plain language.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.wire import (
    RawResponse,
    kind_by_status,
    parse_error_body,
    parse_retry_after,
    throttled_message,
)

__all__ = [
    "CONSOLE_MICROVERSION",
    "SERVER_MICROVERSION",
    "ApiVersions",
    "conflict_reason",
    "nova_error",
    "parse_versions",
    "version_headers",
]

CONSOLE_MICROVERSION = (2, 6)  # POST /servers/{id}/remote-consoles
SERVER_MICROVERSION = (2, 73)  # locked (2.9), tags (2.26), locked_reason (2.73)

NO_SERVER = "no such server in this project"

_BY_STATUS: dict[int, tuple[CloudErrorKind, str]] = {
    400: (CloudErrorKind.BAD_REQUEST, "the cloud does not offer noVNC consoles for this server"),
    401: (CloudErrorKind.AUTH, "the compute API rejected the gateway's credentials"),
    403: (
        CloudErrorKind.FORBIDDEN,
        "the gateway's cloud account may not open consoles here (policy os_compute_api:os-remote-consoles)",
    ),
    404: (CloudErrorKind.NOT_FOUND, NO_SERVER),
    406: (
        CloudErrorKind.BAD_REQUEST,
        "the compute API does not support the API version the gateway asked for",
    ),
    409: (CloudErrorKind.BAD_STATE, "the server is not ready for a console"),
    501: (CloudErrorKind.BAD_REQUEST, "this cloud's hypervisor does not offer VNC consoles"),
    502: (CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
    503: (CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
    504: (CloudErrorKind.UNREACHABLE, "the cloud API is unavailable"),
}


def _fault_name(body: bytes) -> str | None:
    try:
        doc = json.loads(body) if body and len(body) <= 64 * 1024 else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(doc, dict) and len(doc) == 1:
        (name,) = doc
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z]{1,40}", name):
            return name
    return None


def nova_error(resp: RawResponse) -> CloudError:
    """A non-2xx Nova response -> CloudError (sans-IO)."""
    parsed = parse_error_body(resp.body)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    request_id = headers.get("x-openstack-request-id") or headers.get("x-compute-request-id")
    retry_after = parse_retry_after(headers.get("retry-after"))
    if resp.status in (413, 429):  # nova's rate limits answer 413 overLimit (older) or 429
        kind, message = CloudErrorKind.THROTTLED, throttled_message(retry_after)
    else:
        kind, message = kind_by_status(resp.status, _BY_STATUS)
    return CloudError(
        kind,
        message,
        code=_fault_name(resp.body),
        request_id=request_id,
        status=resp.status,
        retry_after=retry_after,
        upstream_message=parsed.message,
    )


# OS-EXT-STS:task_state -> why Nova answers 409 to a console request now.
_TASK_STATES: dict[str, str] = {
    "migrating": "the server is being migrated",
    "resize_migrating": "the server is being migrated",
    "resize_migrated": "the server is being resized",
    "resize_prep": "the server is being resized",
    "resize_finish": "the server is being resized",
    "resize_reverting": "the server is being resized",
    "resize_confirming": "the server is being resized",
    "deleting": "the server is being deleted",
    "soft-deleting": "the server is being deleted",
    "scheduling": "the server is still being built",
    "block_device_mapping": "the server is still being built",
    "networking": "the server is still being built",
    "spawning": "the server is still being built",
    "rebuilding": "the server is being rebuilt",
    "rebuild_block_device_mapping": "the server is being rebuilt",
    "rebuild_spawning": "the server is being rebuilt",
    "shelving": "the server is being shelved",
    "shelving_offloading": "the server is being shelved",
    "unshelving": "the server is being unshelved",
    "powering-off": "the server is being stopped",
    "powering-on": "the server is being started",
    "rebooting": "the server is rebooting",
    "rebooting_hard": "the server is rebooting",
    "reboot_started": "the server is rebooting",
    "reboot_started_hard": "the server is rebooting",
    "pausing": "the server is being paused",
    "suspending": "the server is being suspended",
    "rescuing": "the server is entering rescue mode",
}


def conflict_reason(server: Mapping[str, object] | None) -> str:
    """Nova's 409 to a console request, explained from the server's task and VM state."""
    if isinstance(server, Mapping):
        task = server.get("OS-EXT-STS:task_state")
        if isinstance(task, str) and task in _TASK_STATES:
            return _TASK_STATES[task]
        if server.get("OS-EXT-STS:vm_state") == "building" or server.get("status") == "BUILD":
            return "the server is still being built"
        if isinstance(task, str) and re.fullmatch(
            r"[a-z][a-z_-]{0,39}", task
        ):  # it reaches the page and logs
            return f"the server is busy ({task.replace('_', ' ')})"
        if task:
            return "the server is busy"
        return "the server has no compute host to serve a console yet"
    return "the server is not ready for a console"


@dataclass(frozen=True, slots=True)
class ApiVersions:
    """The microversion range a compute endpoint announced (2.1-2.1 when it announced none)."""

    minimum: tuple[int, int] = (2, 1)
    maximum: tuple[int, int] = (2, 1)

    def best(self, wanted: tuple[int, int]) -> tuple[int, int] | None:
        """The highest version up to `wanted` this endpoint supports; None when none is."""
        chosen = min(self.maximum, wanted)
        return chosen if chosen >= self.minimum else None

    @property
    def remote_consoles(self) -> bool:
        """`POST /servers/{id}/remote-consoles` (2.6+) rather than the `os-getVNCConsole` action."""
        return self.maximum >= CONSOLE_MICROVERSION


def _version(text: object) -> tuple[int, int] | None:
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"(\d{1,3})\.(\d{1,4})", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_versions(body: bytes) -> ApiVersions:
    """The compute root document (`{"version": {"version": "2.96", "min_version": "2.1"}}`) -> ApiVersions.

    A deployment that announces no microversions (empty strings, as v2.0 does) supports 2.1 only.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ApiVersions()
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, dict):
        return ApiVersions()
    maximum = _version(version.get("version"))
    minimum = _version(version.get("min_version")) or (2, 1)
    if maximum is None or maximum < minimum:
        return ApiVersions()
    return ApiVersions(minimum=minimum, maximum=maximum)


def version_headers(version: tuple[int, int]) -> dict[str, str]:
    """Both spellings: `OpenStack-API-Version` (2.27+) and the legacy header older deployments read."""
    text = f"{version[0]}.{version[1]}"
    return {"OpenStack-API-Version": f"compute {text}", "X-OpenStack-Nova-API-Version": text}
