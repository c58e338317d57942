"""The set-up tests of a console on a real Xvnc running the echo program share: the Xvnc, the echo program on
its display, and a demo cloud whose one server's console is that Xvnc.

`echo_console_fixtures` makes the three fixtures (`session`, `echo`, `cloud`) for one module, so each
module names its own server (id, name, tags) and screen size without copying the set-up."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.demo import DemoCloud
from gateway.sim.ecs_api import SimServer
from tests.support.gateway import demo_cloud_serving
from tests.support.vnc_servers import XvncSession, xvnc_session
from tests.support.x_echo import XEcho, x_echo

__all__ = ["echo_console_fixtures"]


def echo_console_fixtures(
    server: SimServer, *, geometry: str = "640x480"
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """Fixtures `session` (an Xvnc whose desktop is named after `server`), `echo` (the echo program on it)
    and `cloud` (a demo cloud serving `server` with that Xvnc as its console). Assign them at module level:
    `session, echo, cloud = echo_console_fixtures(SimServer(...))`."""

    @pytest.fixture
    def session(tmp_path: Path) -> Iterator[XvncSession]:
        with xvnc_session(tmp_path / "xvnc.log", desktop=server.name, geometry=geometry) as xvnc:
            yield xvnc

    @pytest.fixture
    async def echo(session: XvncSession) -> AsyncIterator[XEcho]:
        async with x_echo(session.display) as program:
            yield program

    @pytest.fixture
    async def cloud(tmp_path: Path, session: XvncSession) -> AsyncIterator[DemoCloud]:
        # A copy per test: a test may change its server (lock it, stop it) without touching the next.
        fresh = copy.deepcopy(server)
        async with demo_cloud_serving(tmp_path / "cloud", fresh, (session.host, session.port)) as demo:
            yield demo

    return session, echo, cloud
