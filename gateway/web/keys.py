"""Typed application keys, so handlers reach shared parts without stringly-typed lookups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.auth.cookie import SessionData
    from gateway.auth.identity import AuthError
    from gateway.services import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")

# Per-request values set by the middlewares.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
CLIENT: web.RequestKey[str] = web.RequestKey("client", str)
HTTPS: web.RequestKey[bool] = web.RequestKey("https", bool)
SESSION: web.RequestKey[SessionData | None] = web.RequestKey("session", object)  # type: ignore[arg-type]
AUTH_ERROR: web.RequestKey[AuthError] = web.RequestKey("auth_error", object)  # type: ignore[arg-type]
SPOOFED: web.RequestKey[bool] = web.RequestKey("spoofed", bool)
# The session changed (signed in, new groups, ended): the response sends it again, or clears the cookie.
SESSION_CHANGED: web.RequestKey[bool] = web.RequestKey("session_changed", bool)
STATE_DOWN: web.RequestKey[bool] = web.RequestKey("state_down", bool)
