"""Run the real gateway against the demo cloud on loopback, and act as a browser that records what it sees."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.services import Gateway
from gateway.sim.demo import DemoCloud, demo_config_data
from gateway.sim.ecs_api import SimServer
from gateway.web.keys import GATEWAY
from tests.support.polling import wait_for
from tests.support.rfb_client import AiohttpWSTransport

WAIT = 10.0


@dataclass
class RunningGateway:
    url: str
    app: web.Application
    runner: web.AppRunner
    cloud: DemoCloud
    audit_path: Path

    @property
    def origin(self) -> str:
        return self.url

    @property
    def gw(self) -> Gateway:
        return self.app[GATEWAY]

    def ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://", 1) + path

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]

    def audited(self, event: str, **match: object) -> dict[str, Any] | None:
        """The first audit line of `event` with the `match`ing fields, if the gateway has written it."""
        for entry in self.audit_events():
            if entry["event"] == event and all(entry.get(k) == v for k, v in match.items()):
                return entry
        return None

    async def wait_for_audit(self, event: str, **match: object) -> dict[str, Any]:
        """The first audit line of `event` with the `match`ing fields, once the gateway has written it."""

        def seen() -> str:
            return f"have {[e['event'] for e in self.audit_events()]}"

        return await wait_for(
            lambda: self.audited(event, **match), WAIT, f"audit event {event} {match}", detail=seen
        )

    async def stop(self) -> None:
        await self.runner.cleanup()


def server_id(cloud: DemoCloud, name: str) -> str:
    return next(s.id for s in cloud.servers if s.name == name)


@asynccontextmanager
async def demo_cloud_serving(
    directory: Path, server: SimServer, address: tuple[str, int]
) -> AsyncIterator[DemoCloud]:
    """A running demo cloud with one server whose console is the real VNC server at `address`."""
    demo = DemoCloud(directory, servers=(server,))
    demo.rfb_addr[server.id] = address
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


async def start_gateway(
    cloud: DemoCloud, tmp_path: Path, tweak: Callable[[dict[str, Any]], None] | None = None
) -> RunningGateway:
    """The gateway on a socket bound before the config is made, so its origin is known (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    data = demo_config_data(cloud, port=port)
    audit_path = tmp_path / f"audit-{port}.jsonl"
    data["audit"] = {"target": str(audit_path)}
    if tweak is not None:
        tweak(data)
    config = GatewayConfig.model_validate(data)
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningGateway(f"http://127.0.0.1:{port}", app, runner, cloud, audit_path)


@asynccontextmanager
async def demo_stack(
    tmp_path: Path, tweak: Callable[[dict[str, Any]], None] | None = None, **cloud: Any
) -> AsyncIterator[RunningGateway]:
    """A demo cloud (`cloud` are DemoCloud's options) and the gateway in front of it, both stopped after."""
    demo = DemoCloud(tmp_path / "cloud", **cloud)
    await demo.start()
    try:
        gateway = await start_gateway(demo, tmp_path, tweak)
        try:
            yield gateway
        finally:
            await gateway.stop()
    finally:
        await demo.stop()


@dataclass
class Seen:
    """Everything a browser received: bodies, headers, cookies, WebSocket frames and close reasons."""

    chunks: list[str] = field(default_factory=list)

    def add(self, item: object) -> None:
        if isinstance(item, bytes):
            self.chunks.append(item.decode("latin-1"))
        else:
            self.chunks.append(str(item))

    def text(self) -> str:
        return "\n".join(self.chunks)


class RecordingTransport(AiohttpWSTransport):
    """RFB over the gateway socket: binary frames are RFB, text frames are gateway notices (kept apart)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, seen: Seen) -> None:
        super().__init__(ws)
        self.seen = seen
        self.notices: list[dict[str, Any]] = []
        self.close_reason: str | None = None

    async def recv(self) -> bytes | None:
        while True:
            msg = await self.ws.receive()
            self.seen.add(msg.data if msg.data is not None else "")
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.notices.append(json.loads(msg.data))
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                return msg.data
            self._closed(msg)
            return None

    def _closed(self, msg: aiohttp.WSMessage) -> None:
        """Take the code from the close frame itself: aiohttp may report 1006 if its reply races the drop."""
        if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
            self.close_code = msg.data
        else:
            self.close_code = self.ws.close_code
        self.close_reason = msg.extra if isinstance(msg.extra, str) else None
        self.seen.add(f"close {self.close_code} {self.close_reason}")

    async def hello(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=WAIT)
        self.seen.add(msg.data if msg.data is not None else "")
        if msg.type != aiohttp.WSMsgType.TEXT:
            self._closed(msg)
            raise ConsoleRefused(self.close_code, self.close_reason)
        notice = json.loads(msg.data)
        self.notices.append(notice)
        return notice


class ConsoleRefused(Exception):
    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Operator:
    """A browser stand-in: a cookie jar, a browser's Origin header, and a record of all it received."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.gateway = gateway
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.seen = Seen()
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def _record(self, response: aiohttp.ClientResponse) -> tuple[int, Any]:
        body = await response.read()
        self.seen.add(str(response.status))
        for name, value in response.headers.items():
            self.seen.add(f"{name}: {value}")
        self.seen.add(body)
        try:
            return response.status, json.loads(body) if body else None
        except ValueError:
            return response.status, body.decode(errors="replace")

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.get(self.gateway.url + path, allow_redirects=False, **kwargs) as response:
            return await self._record(response)

    async def post(
        self, path: str, payload: object = None, *, csrf: bool = True, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Origin": self.gateway.origin, **kwargs.pop("headers", {})}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        async with self.http.post(
            self.gateway.url + path, json=payload, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            return await self._record(response)

    async def login(self, user: str, password: str | None = None) -> None:
        status, body = await self.post("/api/login", {"user": user, "password": password or user}, csrf=False)
        assert status == 200, (status, body)
        status, me = await self.get("/api/me")
        assert status == 200, me
        self.csrf = me["csrf"]

    async def open_console(
        self,
        name_or_id: str,
        *,
        cloud: str = "demo",
        origin: str | None = None,
        justification: str | None = None,
    ) -> RecordingTransport:
        """Connect the console socket and read the hello; raises ConsoleRefused with code and reason."""
        ids = {s.name: s.id for s in self.gateway.cloud.servers}
        target = ids.get(name_or_id, name_or_id)
        ws = await self.http.ws_connect(
            self.gateway.ws_url(f"/ws/console/{cloud}/{target}"),
            params={"justification": justification} if justification is not None else None,
            origin=origin or self.gateway.origin,
            autoping=True,
        )
        transport = RecordingTransport(ws, self.seen)
        await transport.hello()
        return transport


def behind_sso_proxy(data: dict[str, Any]) -> None:
    """Config tweak: the tests' peer (127.0.0.1) is a trusted SSO proxy sending oauth2-proxy's headers."""
    data["auth"]["proxy_headers"] = {"enabled": True, "trusted_networks": ["127.0.0.1/32"]}


async def as_asserted(op: Operator, user: str, groups: str) -> dict[str, Any]:
    """From now on every request of `op` carries what the SSO proxy asserts; returns /api/me as seen then."""
    op.http.headers.update({"X-Auth-Request-User": user, "X-Auth-Request-Groups": groups})
    status, me = await op.get("/api/me")
    assert status == 200, me
    op.csrf = me["csrf"]
    return dict(me)
