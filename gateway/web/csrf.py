"""Cross-site request forgery: a state change must come from our own pages."""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway.web.http import json_refusal, same_origin_post
from gateway.web.keys import GATEWAY, SESSION
from gateway.web.middleware import Handler

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Requests that change state before a session exists; they are guarded by the same-origin check alone.
_PRE_SESSION = {"/api/login"}


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unsafe method needs our Origin (or Referer) and, once signed in, the session's token in
    X-CSRF-Token: the cookie alone rides along on a forged request, neither of these does. Runs after
    the identity middlewares, since the token belongs to the session they settle on."""
    if request.method in _UNSAFE:
        if not same_origin_post(request, request.app[GATEWAY].origins):
            raise json_refusal(web.HTTPForbidden, "Cross-origin request refused", code="csrf")
        if request.path not in _PRE_SESSION:
            session = request[SESSION]
            if session is None:
                raise json_refusal(web.HTTPUnauthorized, "Sign in first", code="unauthenticated")
            sent = request.headers.get("X-CSRF-Token", "")
            if not secrets.compare_digest(sent.encode(), session.csrf.encode()):
                raise json_refusal(web.HTTPForbidden, "Missing or wrong CSRF token", code="csrf")
    return await handler(request)
