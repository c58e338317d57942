"""Request-wide middleware: request ids, client address and scheme, error pages without internals, and
the security headers on every response.

The other middlewares, one concern each, in the order gateway/app.py runs them: `session_cookie`
(gateway/web/session_cookie.py), `proxy_identity` and `local_users` (gateway/web/identity.py), `csrf`
(gateway/web/csrf.py).
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.logs import request_id
from gateway.state.base import StateUnavailable
from gateway.web.http import client_address, in_networks, json_error
from gateway.web.keys import CLIENT, GATEWAY, HTTPS, REQUEST_ID

log = logging.getLogger("gateway.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, error pages and static files included (an `on_response_prepare` hook, so
    even a response a handler streams itself gets them)."""
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.get(HTTPS):
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if request.path.startswith(("/api/", "/auth/")) or response.content_type == "text/html":
        h.setdefault("Cache-Control", "no-store")
    rid = request.get(REQUEST_ID)
    if rid:
        h.setdefault("X-Request-Id", rid)


def error_page(status: int, title: str, detail: str) -> web.Response:
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        '<link rel=stylesheet href="/static/css/app.css">'
        f'<main class="card error-card"><h1>{html.escape(title)}</h1>'
        f'<p>{html.escape(detail)}</p><p><a href="/servers">Back to the server list</a></p></main></html>'
    )
    return web.Response(status=status, text=body, content_type="text/html")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, client address, and a last line of defence: no stack trace ever reaches a browser."""
    rid = secrets.token_hex(8)
    request[REQUEST_ID] = rid
    token = request_id.set(rid)
    gw = request.app[GATEWAY]
    request[CLIENT] = client_address(request, gw.trusted_proxies)
    # X-Forwarded-Proto counts only when the peer is one of our trusted proxies.
    forwarded_https = request.headers.get("X-Forwarded-Proto") == "https" and in_networks(
        request.remote, gw.trusted_proxies
    )
    request[HTTPS] = request.secure or forwarded_https
    try:
        return await handler(request)
    except StateUnavailable as exc:
        log.warning("%s %s: shared state unavailable: %s", request.method, request.path, exc)
        message = "The gateway's shared state is unreachable; try again shortly"
        if request.path.startswith("/api/"):
            return json_error(503, message, code="state_unavailable")
        return error_page(503, "Temporarily unavailable", message)
    except web.HTTPException as exc:
        if exc.status >= 400 and not request.path.startswith("/api/") and exc.content_type != "text/html":
            return error_page(exc.status, exc.reason, _friendly(exc.status))
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return json_error(
                500, "Internal error; the request id is in the X-Request-Id header", code="internal"
            )
        return error_page(500, "Something went wrong", f"The gateway hit an internal error (request {rid}).")
    finally:
        request_id.reset(token)


def _friendly(status: int) -> str:
    return {
        404: "There is nothing at this address.",
        405: "This address does not accept that kind of request.",
        403: "You may not do that.",
        413: "The request was too large.",
    }.get(status, "The request could not be served.")
