"""HTML pages: static files with no inline script; data comes from the JSON API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.policy import Permission
from gateway.web.keys import GATEWAY, SESSION
from gateway.web.session_cookie import current

routes = web.RouteTableDef()


def _page(request: web.Request, name: str) -> web.FileResponse:
    static: Path = request.app[GATEWAY].config.server.static_dir
    return web.FileResponse(static / name, headers={"Content-Type": "text/html; charset=utf-8"})


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/servers" if request.get(SESSION) else "/login")


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "login.html")


@routes.get("/servers")
async def servers_page(request: web.Request) -> web.StreamResponse:
    current(request)
    return _page(request, "servers.html")


@routes.get("/console/{cloud}/{server_id}")
@routes.get("/join/{console_id}")
async def console_page(request: web.Request) -> web.StreamResponse:
    """The console page; under /join it is in observer mode, watching a live console (docs/shadowing.md)."""
    current(request)
    return _page(request, "console.html")


@routes.get("/admin")
async def admin_page(request: web.Request) -> web.StreamResponse:
    session = current(request)
    policy = request.app[GATEWAY].policy
    admin = policy.is_admin(session.user, session.groups).permission is not Permission.NONE
    if not admin and not policy.is_approver(session.groups):  # approvers see the access requests there
        raise web.HTTPForbidden(reason="Administrators and approvers only")
    return _page(request, "admin.html")


def _reviewer(request: web.Request) -> None:
    """The recordings pages exist only for reviewers (docs/policy.md, "Reviewers"); for anyone else they
    are not found, like the recordings themselves."""
    session = current(request)
    if not request.app[GATEWAY].policy.is_reviewer(session.user, session.groups):
        raise web.HTTPNotFound()


@routes.get("/recordings")
async def recordings_page(request: web.Request) -> web.StreamResponse:
    _reviewer(request)
    return _page(request, "recordings.html")


@routes.get("/recordings/{recording_id}")
async def player_page(request: web.Request) -> web.StreamResponse:
    _reviewer(request)
    return _page(request, "player.html")
