"""Server and console documents as the compute APIs send them -> `Server` and `ConsoleURL`, sans-IO.

Huawei ECS and OpenStack Nova share the server fields the gateway reads (`id`, `name`, `status`,
`OS-EXT-AZ:availability_zone`, `locked`, `tags`, `metadata`) and the console body shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.clouds.base import ConsoleURL, Server
from gateway.clouds.http import invalid
from gateway.clouds.wire import RawResponse

__all__ = ["json_object", "parse_console", "parse_server"]

_MAX_URL = 8192


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid(f"{where}.{key} is not a string")


def _req_str(doc: Mapping[str, Any], key: str, where: str, *, empty_ok: bool = False) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise invalid(f"{where}.{key} is missing or not a string")
    if not value and not empty_ok:
        raise invalid(f"{where}.{key} is empty")
    return value


def parse_server(doc: object, *, cloud: str, project_id: str, region: str, where: str = "server") -> Server:
    """One server object (ECS and Nova share these fields) -> Server, naming the first field that is wrong."""
    if not isinstance(doc, dict):
        raise invalid(f"{where} is not an object")
    tags = doc.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise invalid(f"{where}.tags is not a list of strings")
    metadata = doc.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid(f"{where}.metadata is not an object of strings")
    locked = doc.get("locked")
    if locked is None:
        locked = False
    if not isinstance(locked, bool):
        raise invalid(f"{where}.locked is not a boolean")
    return Server(
        cloud=cloud,
        id=_req_str(doc, "id", where),
        name=_req_str(doc, "name", where, empty_ok=True),
        status=_req_str(doc, "status", where).upper(),
        project_id=project_id,
        region=region,
        availability_zone=_opt_str(doc, "OS-EXT-AZ:availability_zone", where) or "",
        locked=locked,
        tags=tuple(tags),
        metadata=metadata,
        enterprise_project_id=_opt_str(doc, "enterprise_project_id", where),
    )


def parse_console(doc: object, key: str = "remote_console") -> ConsoleURL:
    """`{"remote_console": {"url", "protocol", "type"}}` (Nova before 2.6: `{"console": {"url", "type"}}`)
    -> ConsoleURL; never echoes the URL."""
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise invalid(f"{key} is missing or not an object")
    console = doc[key]
    url = console.get("url")
    if not isinstance(url, str) or not url:
        raise invalid(f"{key}.url is missing or not a string")
    if len(url) > _MAX_URL:
        raise invalid(f"{key}.url is longer than {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        has_host = bool(parts.hostname)
    except ValueError:
        has_host = False
        parts = None
    if parts is None or parts.scheme not in ("http", "https", "ws", "wss") or not has_host:
        raise invalid(f"{key}.url is not an absolute http(s) URL")
    protocol = _opt_str(console, "protocol", key) or "vnc"
    kind = _opt_str(console, "type", key) or "novnc"
    return ConsoleURL(url, protocol=protocol, type=kind)


def json_object(resp: RawResponse, what: str) -> dict[str, Any]:
    """The response body as a JSON object, or INVALID_RESPONSE naming the operation."""
    try:
        doc = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise invalid(f"{what}: response is not valid JSON") from None
    if not isinstance(doc, dict):
        raise invalid(f"{what}: response is not a JSON object")
    return doc
