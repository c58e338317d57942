"""The real HuaweiECS client against the simulated ECS API on loopback."""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from yarl import URL

from gateway.clouds.base import CloudError, CloudErrorKind, ConsoleURL
from gateway.clouds.huawei import AKSKAuth, Credentials, HuaweiECS, IAMTokenAuth
from gateway.clouds.huawei.signer import sign_request
from gateway.sim.ecs_api import Fault, SimServer, SimulatedECS, SimulatedIAM
from tests.support.ecs import serve

PROJECT = "0123456789abcdef0123456789abcdef"
AK, SK = "SIMAK0000000000000", "sim-secret-key-0000000000000000000000000"
DOMAIN, USER, PASSWORD = "sim-domain", "gateway-bot", "correct horse battery staple"


class Sim:
    """The simulator, its base URL and the console URLs it handed out."""

    def __init__(self, ecs: SimulatedECS, iam: SimulatedIAM, url: str, issued: list[str]) -> None:
        self.ecs, self.iam, self.url, self.issued = ecs, iam, url, issued


def _servers(n: int = 0) -> list[SimServer]:
    fixed = [
        SimServer(id="srv-active", name="web-1", tags=("env=prod", "team"), metadata={"owner": "ops"}),
        SimServer(id="srv-stopped", name="db-1", status="SHUTOFF", availability_zone="az2"),
        SimServer(id="srv-locked", name="web-2", locked=True),
    ]
    return fixed + [SimServer(id=f"srv-{i:05d}", name=f"bulk-{i}") for i in range(n)]


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Sim]:
    issued: list[str] = []

    def issue(server: SimServer) -> str:
        url = f"https://console.sim.test:8002/vnc_auto.html?token={secrets.token_hex(16)}&lang=EN&tLength=70"
        issued.append(url)
        return url

    extra = getattr(request, "param", 0)
    iam = SimulatedIAM(domain=DOMAIN, user=USER, password=PASSWORD, project_id=PROJECT)
    ecs = SimulatedECS(
        project_id=PROJECT,
        access_key=AK,
        secret_key=SK,
        servers=_servers(extra),
        issue_console=issue,
        iam=iam,
    )
    async with serve(ecs.app()) as url:
        yield Sim(ecs, iam, url, issued)
        ecs.release_delays()


ClientFactory = Callable[..., HuaweiECS]


@pytest.fixture
async def make_client(sim: Sim) -> AsyncIterator[ClientFactory]:
    clients: list[HuaweiECS] = []

    def make(**kw: object) -> HuaweiECS:
        options: dict = {
            "name": "sim",
            "region": "sim-region-1",
            "project_id": PROJECT,
            "auth": AKSKAuth(Credentials(AK, SK)),
            "endpoint": sim.url,
            "retries": 2,
            "backoff_base": 0.001,
            "backoff_max": 0.005,
            "connect_timeout": 2,
            "read_timeout": 2,
        }
        options.update(kw)
        client = HuaweiECS(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def recorder() -> tuple[list[tuple[str, str]], Callable[[str, str, float], None]]:
    seen: list[tuple[str, str]] = []

    def observe(op: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        seen.append((op, outcome))

    return seen, observe


async def expect_error(coro: object, kind: CloudErrorKind) -> CloudError:
    with pytest.raises(CloudError) as info:
        await coro  # type: ignore[misc]
    assert info.value.kind is kind, str(info.value)
    return info.value


# -- happy paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("sim", [2497], indirect=True)
async def test_list_follows_every_page(sim: Sim, make_client: ClientFactory) -> None:
    seen, observe = recorder()
    servers = await make_client(observe=observe).list_servers()
    assert len(servers) == 2500
    assert len({s.id for s in servers}) == 2500
    assert sim.ecs.calls == [("GET", f"/v1/{PROJECT}/cloudservers/detail")] * 3
    assert seen == [("list_servers", "ok")] * 3


@pytest.mark.parametrize("sim", [1997], indirect=True)
async def test_list_stops_when_count_is_reached(sim: Sim, make_client: ClientFactory) -> None:
    servers = await make_client().list_servers()
    assert len(servers) == 2000
    assert len(sim.ecs.calls) == 2  # no third, empty page


@pytest.mark.parametrize("sim", [2], indirect=True)
async def test_list_with_small_pages_uses_page_numbers(sim: Sim, make_client: ClientFactory) -> None:
    servers = await make_client(page_size=2).list_servers()
    assert [s.id for s in servers] == ["srv-active", "srv-stopped", "srv-locked", "srv-00000", "srv-00001"]
    assert len(sim.ecs.calls) == 3


async def test_get_server_maps_fields(make_client: ClientFactory) -> None:
    server = await make_client().get_server("srv-active")
    assert (server.cloud, server.id, server.name, server.status) == ("sim", "srv-active", "web-1", "ACTIVE")
    assert (server.project_id, server.region, server.availability_zone) == (PROJECT, "sim-region-1", "az1")
    assert server.tags == ("env=prod", "team")
    assert dict(server.metadata) == {"owner": "ops"}
    assert server.unavailable_reason() is None
    stopped = await make_client().get_server("srv-stopped")
    assert stopped.unavailable_reason() == "the server is stopped"


async def test_remote_console(sim: Sim, make_client: ClientFactory) -> None:
    console = await make_client().remote_console("srv-active")
    assert isinstance(console, ConsoleURL)
    assert console.reveal() == sim.issued[-1]
    assert (console.protocol, console.type) == ("vnc", "novnc")
    assert sim.ecs.console_bodies == [b'{"remote_console": {"protocol": "vnc", "type": "novnc"}}']
    assert sim.ecs.calls == [("POST", f"/v1/{PROJECT}/cloudservers/srv-active/remote_console")]


async def test_ping(make_client: ClientFactory) -> None:
    await make_client().ping()
    await expect_error(make_client(auth=AKSKAuth(Credentials(AK, "wrong"))).ping(), CloudErrorKind.AUTH)


async def test_temporary_credentials_are_accepted_by_signature(make_client: ClientFactory) -> None:
    creds = Credentials(AK, SK, security_token="sts-session-token")
    assert (await make_client(auth=AKSKAuth(creds)).get_server("srv-active")).id == "srv-active"


# -- documented errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_id", "kind", "code", "message"),
    [
        ("no-such-server", CloudErrorKind.NOT_FOUND, "Ecs.0114", "no such server in this project"),
        (
            "srv-stopped",
            CloudErrorKind.BAD_STATE,
            "Ecs.0100",
            "the server's current state does not allow a console",
        ),
        ("srv-locked", CloudErrorKind.LOCKED, "Ecs.0605", "the server is locked"),
    ],
)
async def test_console_errors_are_mapped_and_not_retried(
    sim: Sim, make_client: ClientFactory, server_id: str, kind: CloudErrorKind, code: str, message: str
) -> None:
    err = await expect_error(make_client().remote_console(server_id), kind)
    assert (err.code, err.user_message, err.status) == (code, message, 404 if code == "Ecs.0114" else 400)
    assert err.request_id and err.request_id in str(err)
    assert len(sim.ecs.calls) == 1


async def test_malformed_server_id_is_not_sent(sim: Sim, make_client: ClientFactory) -> None:
    for bad in ("../detail", "", "a/b", "x" * 200, "%2e%2e"):
        await expect_error(make_client().remote_console(bad), CloudErrorKind.NOT_FOUND)
    assert sim.ecs.calls == []


async def test_foreign_project_is_forbidden(sim: Sim, make_client: ClientFactory) -> None:
    err = await expect_error(make_client(project_id="f" * 32).list_servers(), CloudErrorKind.FORBIDDEN)
    assert err.code == "Ecs.0003"
    assert err.user_message == "the gateway has no permission in this project"
    assert len(sim.ecs.calls) == 1


@pytest.mark.parametrize(
    ("ak", "sk"), [(AK, "not-the-secret"), ("UNKNOWNAK", SK)], ids=["bad-secret", "bad-ak"]
)
async def test_bad_credentials_are_auth_and_never_retried(
    sim: Sim, make_client: ClientFactory, ak: str, sk: str
) -> None:
    seen, observe = recorder()
    client = make_client(auth=AKSKAuth(Credentials(ak, sk)), retries=3, observe=observe)
    err = await expect_error(client.remote_console("srv-active"), CloudErrorKind.AUTH)
    assert err.code == "APIGW.0301" and err.status == 401
    assert len(sim.ecs.calls) == 1
    assert seen == [("remote_console", "APIGW.0301")]
    assert sk not in str(err)


async def test_clock_skew_is_reported(sim: Sim, make_client: ClientFactory) -> None:
    skewed = AKSKAuth(Credentials(AK, SK), clock=lambda: datetime.now(UTC) - timedelta(minutes=20))
    err = await expect_error(make_client(auth=skewed).get_server("srv-active"), CloudErrorKind.AUTH)
    assert err.code == "APIGW.0303"
    assert "clock" in err.user_message
    assert len(sim.ecs.calls) == 1


# -- retries ------------------------------------------------------------------------------------


THROTTLED = {"error_code": "APIGW.0308", "error_msg": "Throttling threshold reached", "request_id": "r"}


async def test_429_with_retry_after_is_retried_and_succeeds(sim: Sim, make_client: ClientFactory) -> None:
    seen, observe = recorder()
    sim.ecs.inject(Fault(status=429, body=THROTTLED, headers={"Retry-After": "0"}, times=2))
    console = await make_client(observe=observe).remote_console("srv-active")
    assert console.reveal() == sim.issued[-1]
    assert len(sim.ecs.calls) == 3
    assert seen == [("remote_console", "APIGW.0308")] * 2 + [("remote_console", "ok")]


async def test_429_with_long_retry_after_fails_fast(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=429, body=THROTTLED, headers={"Retry-After": "120"}))
    err = await expect_error(make_client().remote_console("srv-active"), CloudErrorKind.THROTTLED)
    assert err.retry_after == 120
    assert err.user_message == "the cloud API is throttling, retry in 120 s"
    assert len(sim.ecs.calls) == 1


async def test_503_is_retried_then_gives_up(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=503, body=b"<html>busy</html>", times=10))
    err = await expect_error(make_client(retries=2).list_servers(), CloudErrorKind.UNREACHABLE)
    assert err.status == 503
    assert len(sim.ecs.calls) == 3


async def test_500_is_retried_then_succeeds(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=500, body={"error": {"code": "Ecs.0001", "message": "boom"}}))
    assert (await make_client().get_server("srv-active")).id == "srv-active"
    assert len(sim.ecs.calls) == 2


async def test_500_gives_up_as_internal(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=500, body={"error": {"code": "Ecs.0001", "message": "boom"}}, times=5))
    err = await expect_error(make_client(retries=1).get_server("srv-active"), CloudErrorKind.INTERNAL)
    assert err.code == "Ecs.0001" and "boom" in str(err)
    assert len(sim.ecs.calls) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused_is_unreachable(make_client: ClientFactory) -> None:
    seen, observe = recorder()
    client = make_client(endpoint=f"http://127.0.0.1:{_closed_port()}", retries=2, observe=observe)
    err = await expect_error(client.list_servers(), CloudErrorKind.UNREACHABLE)
    assert err.user_message == "the cloud API is unreachable"
    assert seen == [("list_servers", "unreachable")] * 3


async def test_read_timeout_is_unreachable(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=None, delay=30))
    client = make_client(read_timeout=0.2, retries=0)
    err = await expect_error(client.remote_console("srv-active"), CloudErrorKind.UNREACHABLE)
    assert "Timeout" in str(err)
    assert sim.issued == []


async def test_dropped_connection_is_retried(sim: Sim, make_client: ClientFactory) -> None:
    seen, observe = recorder()
    sim.ecs.inject(Fault(drop_connection=True))
    console = await make_client(observe=observe).remote_console("srv-active")
    assert console.reveal() == sim.issued[-1]
    assert seen == [("remote_console", "unreachable"), ("remote_console", "ok")]
    assert len(sim.ecs.calls) == 2


async def test_dropped_connections_give_up_unreachable(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(drop_connection=True, times=3))
    err = await expect_error(make_client(retries=2).remote_console("srv-active"), CloudErrorKind.UNREACHABLE)
    assert "ServerDisconnected" in str(err)
    assert len(sim.ecs.calls) == 3


# -- invalid responses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "names"),
    [
        (Fault(status=200, body=b"{not json"), "not valid JSON"),
        (Fault(status=200, body=b"[]"), "not a JSON object"),
        (Fault(status=200, body={"remote_console": {"url": 42}}), "remote_console.url"),
        (Fault(status=200, body={"console": {}}), "remote_console is missing"),
        (Fault(status=200, body=b"x" * (2 * 1024 * 1024)), "larger than"),
        (Fault(status=200, body=b"x" * (2 * 1024 * 1024), chunked=True), "larger than"),
    ],
    ids=["invalid-json", "not-object", "url-wrong-type", "missing", "huge", "huge-chunked"],
)
async def test_invalid_console_responses(
    sim: Sim, make_client: ClientFactory, fault: Fault, names: str
) -> None:
    sim.ecs.inject(fault)
    err = await expect_error(make_client().remote_console("srv-active"), CloudErrorKind.INVALID_RESPONSE)
    assert names in str(err)
    assert "xxxxxxxx" not in str(err)
    assert len(sim.ecs.calls) == 1  # a malformed answer is not retried


async def test_invalid_server_in_list_names_the_field(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=200, body={"count": 1, "servers": [{"id": "a", "name": "b", "status": 7}]}))
    err = await expect_error(make_client().list_servers(), CloudErrorKind.INVALID_RESPONSE)
    assert "servers[0].status" in str(err)


# -- secrets stay secret ------------------------------------------------------------------------


async def test_console_url_never_logged(
    sim: Sim, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    console = await client.remote_console("srv-active")
    sim.ecs.inject(Fault(status=503, times=1))
    again = await client.remote_console("srv-active")
    logging.getLogger("gateway.cloud").info("got %s and %r", console, again)
    token_urls = [console.reveal(), again.reveal()]
    tokens = [URL(u).query["token"] for u in token_urls]
    assert any(r.name == "gateway.cloud" for r in caplog.records)
    for secret in [*tokens, SK]:
        assert secret not in caplog.text
        assert secret not in str(console) and secret not in repr(again)


# -- IAM token auth -----------------------------------------------------------------------------


def iam_auth(sim: Sim, **kw: object) -> IAMTokenAuth:
    options: dict = {
        "domain": DOMAIN,
        "user": USER,
        "password": PASSWORD,
        "project_id": PROJECT,
        "region": "sim-region-1",
        "endpoint": sim.url,
    }
    options.update(kw)
    return IAMTokenAuth(**options)


async def test_iam_token_is_fetched_once_and_reused(sim: Sim, make_client: ClientFactory) -> None:
    client = make_client(auth=iam_auth(sim))
    assert len(await client.list_servers()) == 3
    await client.remote_console("srv-active")
    assert sim.iam.issued == 1
    assert sim.ecs.calls[0] == ("POST", "/v3/auth/tokens")
    assert len(sim.ecs.calls) == 3


async def test_iam_token_refreshed_once_on_401(sim: Sim, make_client: ClientFactory) -> None:
    client = make_client(auth=iam_auth(sim))
    await client.get_server("srv-active")
    sim.iam.revoke_all()
    assert (await client.get_server("srv-active")).id == "srv-active"
    assert sim.iam.issued == 2


async def test_iam_persistent_401_gives_up_after_one_refresh(
    sim: Sim, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sim.iam, "project_of", lambda token: None)
    err = await expect_error(make_client(auth=iam_auth(sim)).get_server("srv-active"), CloudErrorKind.AUTH)
    assert err.code == "APIGW.0301"
    assert sim.iam.issued == 2
    assert [c[0] for c in sim.ecs.calls] == ["POST", "GET", "POST", "GET"]


async def test_iam_wrong_password(
    sim: Sim, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(auth=iam_auth(sim, password="wrong-password-123"), retries=3)
    err = await expect_error(client.get_server("srv-active"), CloudErrorKind.AUTH)
    assert err.status == 401
    assert sim.ecs.calls == [("POST", "/v3/auth/tokens")]
    assert "wrong-password-123" not in caplog.text
    assert "wrong-password-123" not in repr(iam_auth(sim, password="wrong-password-123"))


async def test_iam_response_without_token_header(sim: Sim, make_client: ClientFactory) -> None:
    sim.ecs.inject(Fault(status=201, body={"token": {"expires_at": "2999-01-01T00:00:00Z"}}, path="/v3/"))
    err = await expect_error(make_client(auth=iam_auth(sim)).list_servers(), CloudErrorKind.INVALID_RESPONSE)
    assert "X-Subject-Token" in str(err)


# -- the simulator itself ------------------------------------------------------------------------


async def _raw(sim: Sim, method: str, path: str, body: bytes = b"", sk: str = SK) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "application/json"} if body else {}
    signed = sign_request(Credentials(AK, sk), method, sim.url + path, headers, body)
    async with aiohttp.ClientSession() as session:
        resp = await session.request(method, URL(signed.url, encoded=True), headers=signed.headers, data=body)
        await resp.read()
        return resp


async def _raw_json(sim: Sim, method: str, path: str, body: bytes = b"") -> tuple[int, dict, str | None]:
    resp = await _raw(sim, method, path, body)
    return resp.status, json.loads(await resp.read()), resp.headers.get("X-Request-Id")


async def test_sim_filters_and_validates_paging(sim: Sim) -> None:
    base = f"/v1/{PROJECT}/cloudservers/detail"
    status, doc, rid = await _raw_json(sim, "GET", base + "?name=WEB&limit=10")
    assert status == 200 and rid and {s["name"] for s in doc["servers"]} == {"web-1", "web-2"}
    assert doc["count"] == 2
    status, doc, _ = await _raw_json(sim, "GET", base + "?status=SHUTOFF")
    assert [s["id"] for s in doc["servers"]] == ["srv-stopped"]
    assert doc["servers"][0]["OS-EXT-STS:vm_state"] == "stopped"
    status, doc, _ = await _raw_json(sim, "GET", base + "?limit=1001")
    assert status == 400 and doc["error"]["code"] == "Ecs.0005"
    status, doc, _ = await _raw_json(sim, "GET", base + "?offset=2&limit=2")
    assert [s["id"] for s in doc["servers"]] == ["srv-locked"] and doc["count"] == 3


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"remote_console": {"protocol": "vnc", "type": "vnc"}}',
        b'{"remote_console": {"protocol": "spice", "type": "novnc"}}',
    ],
)
async def test_sim_validates_console_body(sim: Sim, body: bytes) -> None:
    status, doc, rid = await _raw_json(
        sim, "POST", f"/v1/{PROJECT}/cloudservers/srv-active/remote_console", body
    )
    assert status == 400 and doc["error"]["code"] == "Ecs.0005" and rid
    assert sim.issued == []


async def test_sim_auth_error_shape(sim: Sim) -> None:
    resp = await _raw(sim, "GET", f"/v1/{PROJECT}/cloudservers/srv-active", sk="bad")
    doc = json.loads(await resp.read())
    assert resp.status == 401
    assert doc["error_code"] == "APIGW.0301" and doc["request_id"] == resp.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"[]", "token.expires_at"),
        (b"nope", "not valid JSON"),
        ({"token": {"expires_at": "soon"}}, "ISO 8601"),
        ({"token": {"expires_at": "2001-01-01T00:00:00Z"}}, "in the past"),
    ],
)
async def test_iam_bad_token_bodies(sim: Sim, make_client: ClientFactory, body: object, names: str) -> None:
    sim.ecs.inject(Fault(status=201, body=body, headers={"X-Subject-Token": "t"}, path="/v3/"))  # type: ignore[arg-type]
    err = await expect_error(make_client(auth=iam_auth(sim)).list_servers(), CloudErrorKind.INVALID_RESPONSE)
    assert names in str(err)
    assert len(sim.ecs.calls) == 1
