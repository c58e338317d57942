"""Several real gateway processes behind a real nginx, sharing one real Redis: the scaled-out deployment.

Everything runs on loopback. nginx uses deploy/nginx/novnc-gateway.conf itself (TLS, round robin,
WebSocket upgrade), adapted only in its listen ports, certificate paths and upstream addresses. To reach
one particular replica a test connects to it directly and sends what nginx would have forwarded (the
session cookie, `X-Forwarded-Proto: https`, the public Origin): the replicas trust 127.0.0.1 as their
proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.sim.certs import make_self_signed
from gateway.sim.demo import DemoCloud, demo_config_data
from tests.support import nginx
from tests.support.gateway import ConsoleRefused, RecordingTransport, Seen
from tests.support.polling import wait_for
from tests.support.processes import GatewayProcess, free_port
from tests.support.redis_server import RedisServer
from tests.support.rfb_client import RFBClient

WAIT = 10.0
PER_USER = 2
CONSOLE_TTL = 6.0  # state.redis.console_ttl for these replicas: the ghost-console bound under test
SYNC_INTERVAL = 2.0  # min(5, console_ttl / 3): how often a replica re-registers its live consoles


@dataclass
class Cluster:
    cloud: DemoCloud
    redis: RedisServer
    replicas: list[GatewayProcess]
    lb: nginx.Nginx
    front: str  # the public origin: https://127.0.0.1:<nginx port>
    http_front: str  # nginx's plain-HTTP listener (redirects to HTTPS)
    tls: ssl.SSLContext
    tmp: Path


async def _start_replicas(configs: list[dict[str, Any]], tmp: Path) -> list[GatewayProcess]:
    results = await asyncio.gather(
        *(GatewayProcess.start(c, tmp, name=f"replica-{i}") for i, c in enumerate(configs)),
        return_exceptions=True,
    )
    started = [r for r in results if isinstance(r, GatewayProcess)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for replica in started:
            await replica.stop()
        raise failed[0]
    return started


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        cloud = DemoCloud(tmp_path / "cloud")
        stack.push_async_callback(cloud.stop)
        await cloud.start()
        redis = RedisServer(tmp_path / "redis")
        stack.callback(redis.stop)
        redis.start()

        https_port, http_port = free_port(), free_port()
        front = f"https://127.0.0.1:{https_port}"
        base = demo_config_data(cloud, port=0)  # one config, so one set of session keys for all replicas
        configs = []
        for i in range(2):
            data = json.loads(json.dumps(base))
            data["server"].update(
                listen=f"127.0.0.1:{free_port()}",
                public_origins=[front],
                trusted_proxies=["127.0.0.1/32"],
                drain_timeout=1,
            )
            data["session"]["secure_cookie"] = True
            data["state"] = {"backend": "redis", "redis": {"url": redis.url, "console_ttl": CONSOLE_TTL}}
            data["limits"] = {"per_user": PER_USER}
            data["audit"] = {"target": str(tmp_path / f"audit-{i}.jsonl")}
            configs.append(data)
        replicas = await _start_replicas(configs, tmp_path)
        for replica in replicas:
            stack.push_async_callback(replica.stop)
        for replica in replicas:
            replica.cloud = cloud

        certs = make_self_signed(tmp_path / "lb-certs", hostnames=("localhost",), ips=("127.0.0.1",))
        site = nginx.adapt(
            nginx.EXAMPLE.read_text(),
            cert=certs.server_cert,
            key=certs.server_key,
            https_port=https_port,
            http_port=http_port,
            upstreams={"novnc_gateway": [r.url.removeprefix("http://") for r in replicas]},
        )
        prefix = tmp_path / "nginx"
        lb = nginx.Nginx(prefix, nginx.prepare(prefix, site), ports=[https_port, http_port])
        stack.callback(lb.stop)
        await lb.start()

        tls = ssl.create_default_context(cafile=str(certs.ca_cert))
        yield Cluster(cloud, redis, replicas, lb, front, f"http://127.0.0.1:{http_port}", tls, tmp_path)


class Browser:
    """A browser at the public origin; `via=replica` sends what nginx would forward straight to a replica."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=cluster.tls)
        )
        self.direct = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.seen = Seen()
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()
        await self.direct.close()

    def _forwarded(self) -> dict[str, str]:
        cookies = self.http.cookie_jar.filter_cookies(URL(self.cluster.front))
        return {
            "Cookie": "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items()),
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": "127.0.0.1",
        }

    async def request(
        self, method: str, path: str, payload: object = None, *, via: GatewayProcess | None = None
    ) -> tuple[int, Any]:
        headers = {"Origin": self.cluster.front}
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        if via is None:
            session, url = self.http, self.cluster.front + path
        else:
            session, url = self.direct, via.url + path
            headers.update(self._forwarded())
        async with session.request(
            method, url, json=payload, headers=headers, allow_redirects=False
        ) as response:
            body = await response.read()
            try:
                return response.status, json.loads(body) if body else None
            except ValueError:
                return response.status, body.decode(errors="replace")

    async def login(self, user: str) -> None:
        status, body = await self.request("POST", "/api/login", {"user": user, "password": user})
        assert status == 200, (status, body)
        status, me = await self.request("GET", "/api/me")
        assert status == 200, me
        self.csrf = me["csrf"]

    async def open_console(self, name: str, *, via: GatewayProcess | None = None) -> RecordingTransport:
        server_id = next(s.id for s in self.cluster.cloud.servers if s.name == name)
        path = f"/ws/console/demo/{server_id}"
        if via is None:
            ws = await self.http.ws_connect(
                self.cluster.front.replace("https://", "wss://") + path, origin=self.cluster.front
            )
        else:
            ws = await self.direct.ws_connect(
                via.ws_url(path), origin=self.cluster.front, headers=self._forwarded()
            )
        transport = RecordingTransport(ws, self.seen)
        await transport.hello()  # a refusal raises ConsoleRefused with the close frame's code and reason
        return transport

    async def probe(self, replica: GatewayProcess, path: str) -> tuple[int, Any]:
        """What a load balancer's health check sees: no cookie, no forwarded headers."""
        async with self.direct.get(replica.url + path) as response:
            return response.status, await response.json()

    async def consoles(self, via: GatewayProcess) -> list[dict[str, Any]]:
        status, body = await self.request("GET", "/api/admin/sessions", via=via)
        assert status == 200, (status, body)
        return body["consoles"]


@pytest.fixture
async def browsers(cluster: Cluster) -> AsyncIterator[list[Browser]]:
    made: list[Browser] = []

    async def close_all() -> None:
        for b in made:
            await b.close()

    try:
        yield made
    finally:
        await close_all()


def new_browser(cluster: Cluster, browsers: list[Browser]) -> Browser:
    browser = Browser(cluster)
    browsers.append(browser)
    return browser


async def connected(transport: RecordingTransport) -> RFBClient:
    client = RFBClient(transport)
    await client.handshake()
    update = await client.full_update()
    assert update.rects, "a framebuffer update arrived through the gateway"
    return client


async def still_relaying(client: RFBClient) -> None:
    """Typing a key makes the simulated desktop change, and the change arrives: bytes flow both ways."""
    await client.request_update(incremental=True)
    await client.type_text("x")
    update = await client.next_update()
    assert update.rects


async def close_frame(transport: RecordingTransport) -> tuple[int, str]:
    """The close frame's code and reason, as a browser's close event reports them."""
    async with asyncio.timeout(WAIT):
        while await transport.recv() is not None:
            pass
    return transport.close_code or 1006, transport.close_reason or ""


def pid_of(replica_label: str) -> int:
    """Replica labels are host-pid-random."""
    return int(replica_label.rsplit("-", 2)[1])


async def test_sign_in_and_console_through_the_load_balancer(
    cluster: Cluster, browsers: list[Browser]
) -> None:
    demo = new_browser(cluster, browsers)
    await demo.login("demo")
    # Round robin spreads these over both replicas; every one must accept the session cookie.
    for _ in range(4):
        status, me = await demo.request("GET", "/api/me")
        assert status == 200 and me["user"] == "demo"
    for replica in cluster.replicas:
        status, me = await demo.request("GET", "/api/me", via=replica)
        assert status == 200 and me["user"] == "demo", replica.url

    transport = await demo.open_console("web-01")  # the WebSocket upgrade through nginx
    client = await connected(transport)
    await still_relaying(client)
    console_id = transport.notices[0]["console_id"]

    admin = new_browser(cluster, browsers)
    await admin.login("admin")
    for replica in cluster.replicas:
        listed = {c["id"]: c for c in await admin.consoles(replica)}
        assert console_id in listed
    await transport.close()

    status, _ = await demo.request("GET", "/metrics")
    assert status == 404, "the example keeps /metrics off the public listener"
    async with (
        aiohttp.ClientSession() as plain,
        plain.get(cluster.http_front + "/servers", allow_redirects=False) as response,
    ):
        assert response.status == 301
        assert response.headers["Location"].startswith("https://")


async def test_console_on_one_replica_is_terminated_through_another(
    cluster: Cluster, browsers: list[Browser]
) -> None:
    a, b = cluster.replicas
    demo, admin = new_browser(cluster, browsers), new_browser(cluster, browsers)
    await demo.login("demo")
    await admin.login("admin")
    transport = await demo.open_console("web-01", via=a)
    await connected(transport)
    console_id = transport.notices[0]["console_id"]

    listed = {c["id"]: c for c in await admin.consoles(b)}
    assert console_id in listed, "B lists the console that A relays"
    assert pid_of(listed[console_id]["replica"]) == a.pid
    assert listed[console_id]["user"] == "demo"

    started = time.monotonic()
    status, body = await admin.request("POST", f"/api/admin/consoles/{console_id}/terminate", via=b)
    assert status == 200, body
    code, reason = await close_frame(transport)
    latency = time.monotonic() - started
    print(f"\nterminate through B -> close on A's socket: {latency * 1000:.1f} ms")
    assert code == 4000
    assert "administrator" in reason
    assert latency < 1.0

    async def gone_everywhere() -> bool:
        for replica in cluster.replicas:
            if any(c["id"] == console_id for c in await admin.consoles(replica)):
                return False
        return True

    await wait_for(gone_everywhere, WAIT, "the console to leave every replica's list")


async def test_per_user_limit_holds_across_replicas(cluster: Cluster, browsers: list[Browser]) -> None:
    a, b = cluster.replicas
    demo = new_browser(cluster, browsers)
    await demo.login("demo")
    first = await demo.open_console("web-01", via=a)
    second = await demo.open_console("db-01", via=b)
    for replica in (a, b):
        with pytest.raises(ConsoleRefused) as refused:
            await demo.open_console("build-runner", via=replica)
        assert refused.value.code == 4429
        assert refused.value.reason == f"You already have {PER_USER} consoles open; close one first"

    # Another user is not affected by demo's count.
    viewer = new_browser(cluster, browsers)
    await viewer.login("viewer")
    other = await viewer.open_console("web-01", via=a)
    await other.close()

    # Closing one on A frees a slot that B sees.
    await first.close()

    async def opens_on_b() -> RecordingTransport | None:
        try:
            return await demo.open_console("build-runner", via=b)
        except ConsoleRefused as exc:
            assert exc.code == 4429
            return None

    third = await wait_for(opens_on_b, WAIT, "a free console slot on B", every=0.2)
    await third.close()
    await second.close()


async def test_redis_outage_keeps_live_consoles_and_refuses_new_ones(
    cluster: Cluster, browsers: list[Browser]
) -> None:
    a, b = cluster.replicas
    demo, admin = new_browser(cluster, browsers), new_browser(cluster, browsers)
    await demo.login("demo")
    await admin.login("admin")
    transport = await demo.open_console("web-01", via=a)
    client = await connected(transport)
    console_id = transport.notices[0]["console_id"]

    cluster.redis.stop()  # SIGKILL

    await still_relaying(client)
    for replica in (a, b):
        # Sign-outs and limits cannot be checked: the console socket is closed with the documented reason.
        with pytest.raises(ConsoleRefused) as refused:
            await demo.open_console("db-01", via=replica)
        assert refused.value.code == 4429
        assert refused.value.reason == "The gateway cannot check limits right now; try again shortly"
        status, body = await demo.probe(replica, "/readyz")
        assert status == 503
        assert "shared state unreachable" in body["problems"]
    status, body = await demo.request("GET", "/api/servers", via=b)
    assert status == 503
    assert body["code"] == "state_unavailable"
    assert "shared state is unreachable" in body["error"]
    await still_relaying(client)

    cluster.redis.restart()  # same port, empty: nothing was persisted

    async def ready_everywhere() -> bool:
        for replica in (a, b):
            status, _ = await demo.probe(replica, "/readyz")
            if status != 200:
                return False
        return True

    await wait_for(ready_everywhere, WAIT, "every replica to be ready again")
    fresh = await demo.open_console("db-01", via=b)
    await connected(fresh)
    await still_relaying(client)

    async def relisted() -> bool:
        return any(c["id"] == console_id for c in await admin.consoles(b))

    # A's sync loop writes the surviving console back into the emptied Redis.
    await wait_for(relisted, SYNC_INTERVAL + WAIT, "A's console to be listed again")
    await fresh.close()
    await transport.close()


async def test_killed_replica_leaves_its_console_listed_no_longer_than_the_ttl(
    cluster: Cluster, browsers: list[Browser]
) -> None:
    a, b = cluster.replicas
    demo, admin = new_browser(cluster, browsers), new_browser(cluster, browsers)
    await demo.login("demo")
    await admin.login("admin")
    transport = await demo.open_console("web-01", via=a)
    await connected(transport)
    console_id = transport.notices[0]["console_id"]
    assert any(c["id"] == console_id for c in await admin.consoles(b))

    assert a.proc is not None
    a.proc.kill()  # SIGKILL: no release, no goodbye
    killed = time.monotonic()
    a.proc.wait(timeout=5)

    async def gone() -> bool:
        return not any(c["id"] == console_id for c in await admin.consoles(b))

    await wait_for(gone, CONSOLE_TTL + WAIT, "the killed replica's console to expire", every=0.25)
    ghost = time.monotonic() - killed
    print(f"\nghost console listed for {ghost:.2f} s after SIGKILL (bound {CONSOLE_TTL:.0f} s)")
    # The bound counts from the console's last refresh, which came before the kill; the slack covers
    # this loop's polling period and the admin request.
    assert ghost <= CONSOLE_TTL + 1.5

    # nginx steers around the dead replica; the survivor serves every request.
    for _ in range(4):
        status, _ = await demo.request("GET", "/api/me")
        assert status == 200
    fresh = await demo.open_console("web-01")
    await connected(fresh)
    await fresh.close()
