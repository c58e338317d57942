"""The `openstack` provider against a real Keystone and the Nova simulator (tokens validated by Keystone),
and console URLs a real websockify honours in front of the demo RFB servers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.clouds.base import CloudError, CloudErrorKind
from gateway.clouds.huawei import AKSKAuth, Credentials
from gateway.clouds.keystone import KeystoneAuth
from gateway.clouds.openstack import NovaCompute
from gateway.sim.demo import DemoCloud
from gateway.sim.nova_api import NovaServer, keystone_validator
from tests.support.gateway import Operator, start_gateway
from tests.support.keystone import OTHER_REGION, REGION, Account, Keystone
from tests.support.processes import free_port
from tests.support.rfb_client import RFBClient

WEB = NovaServer(id="0f1e2d3c-4b5a-4697-8a9b-0c1d2e3f4a01", name="nova-web", tags=("env=prod",))
SERVERS = (
    WEB,
    NovaServer(id="0f1e2d3c-4b5a-4697-8a9b-0c1d2e3f4a02", name="nova-migrating", task_state="migrating"),
    NovaServer(id="0f1e2d3c-4b5a-4697-8a9b-0c1d2e3f4a03", name="nova-deleting", task_state="deleting"),
    NovaServer(
        id="0f1e2d3c-4b5a-4697-8a9b-0c1d2e3f4a04",
        name="nova-building",
        status="BUILD",
        vm_state="building",
        task_state="spawning",
        host=None,
    ),
    NovaServer(id="0f1e2d3c-4b5a-4697-8a9b-0c1d2e3f4a05", name="nova-no-host", host=None),
    NovaServer(
        id="0f1e2d3c-4b5a-4697-8a9b-0c1d2e3f4a06", name="nova-locked", locked=True, locked_reason="audit"
    ),
)
Stack = tuple[Keystone, Account, DemoCloud]


@pytest.fixture
async def stack(keystone: tuple[Keystone, Account], tmp_path: Path) -> AsyncIterator[Stack]:
    """The demo cloud with its Nova side validating tokens against the real Keystone, whose catalog points
    the public RegionOne compute endpoint at it (the other two at a closed port)."""
    ks, account = keystone
    cloud = DemoCloud(
        tmp_path / "cloud",
        nova_servers=SERVERS,
        nova_project_id=account.project_id,
        nova_validate=keystone_validator(ks.url),
    )
    await cloud.start()
    nowhere = f"http://127.0.0.1:{free_port()}/v2.1"
    ks.point_endpoint(account.compute_endpoints[("public", REGION)], f"{cloud.nova_url}/v2.1")
    ks.point_endpoint(account.compute_endpoints[("internal", REGION)], nowhere)
    ks.point_endpoint(account.compute_endpoints[("public", OTHER_REGION)], nowhere)
    try:
        yield ks, account, cloud
    finally:
        await cloud.stop()


Make = Callable[..., NovaCompute]


@pytest.fixture
async def make(stack: Stack) -> AsyncIterator[Make]:
    ks, account, _ = stack
    made: list[NovaCompute] = []

    def build(*, app_cred: bool = False, region: str = REGION, **kw: Any) -> NovaCompute:
        if app_cred:
            auth = KeystoneAuth(
                url=ks.url,
                application_credential_id=account.app_cred_id,
                application_credential_secret=account.app_cred_secret,
            )
        else:
            auth = KeystoneAuth(
                url=ks.url,
                user=account.user,
                password=account.password,
                user_domain=account.user_domain,
                project_id=account.project_id,
            )
        options: dict[str, Any] = {
            "name": "lab",
            "region": region,
            "project_id": account.project_id,
            "auth": auth,
            "retries": 0,
        }
        options.update(kw)
        provider = NovaCompute(**options)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


async def test_password_sign_in_finds_compute_in_the_catalog_and_lists_servers(
    make: Make, stack: Stack
) -> None:
    provider = make()
    servers = await provider.list_servers()
    assert [s.name for s in servers] == [s.name for s in SERVERS]
    web = servers[0]
    assert (web.cloud, web.project_id, web.region, web.tags) == (
        "lab",
        stack[1].project_id,
        REGION,
        ("env=prod",),
    )
    assert servers[-1].locked and servers[-1].unavailable_reason() == "the server is locked"
    nova = stack[2].nova
    assert nova is not None
    # negotiated once, then the server calls ask for the microversion that carries locked and tags
    assert nova.calls[0][:2] == ("GET", "/v2.1/")
    assert nova.calls[1] == ("GET", "/v2.1/servers/detail", "compute 2.73")


async def test_application_credential_sign_in(make: Make) -> None:
    provider = make(app_cred=True)
    assert (await provider.get_server(WEB.id)).name == "nova-web"


async def test_catalog_choice_by_interface_and_region(make: Make, stack: Stack) -> None:
    ks, account, cloud = stack
    # the internal RegionOne endpoint now leads to the simulator, the public one nowhere
    ks.point_endpoint(account.compute_endpoints[("internal", REGION)], f"{cloud.nova_url}/v2.1")
    ks.point_endpoint(account.compute_endpoints[("public", REGION)], f"http://127.0.0.1:{free_port()}/v2.1")
    assert (await make(interface="internal").get_server(WEB.id)).id == WEB.id
    with pytest.raises(CloudError) as unreachable:
        await make(interface="public").get_server(WEB.id)
    assert unreachable.value.kind is CloudErrorKind.UNREACHABLE
    with pytest.raises(CloudError) as missing:
        await make(interface="internal", region=OTHER_REGION).get_server(WEB.id)
    assert missing.value.kind is CloudErrorKind.AUTH
    assert missing.value.user_message == (
        f"the cloud's service catalog has no internal compute endpoint in region {OTHER_REGION}"
    )


async def test_server_list_pages_with_limit_and_marker(make: Make, stack: Stack) -> None:
    servers = await make(page_size=2).list_servers()
    assert [s.id for s in servers] == [s.id for s in SERVERS]
    nova = stack[2].nova
    assert nova is not None
    pages = [path for method, path, _ in nova.calls if path.endswith("/servers/detail")]
    assert len(pages) == 4  # 2 + 2 + 2, then an empty page ends it


async def test_console_uses_remote_consoles_at_2_6(make: Make, stack: Stack) -> None:
    console = await make().remote_console(WEB.id)
    nova = stack[2].nova
    assert nova is not None
    assert ("POST", f"/v2.1/servers/{WEB.id}/remote-consoles", "compute 2.6") in nova.calls
    target = make().console_target(console)
    assert (target.scheme, target.path) == ("wss", "/")  # nova's ?path=%3Ftoken%3D form


async def test_microversion_fallback_to_os_get_vnc_console(make: Make, stack: Stack) -> None:
    nova = stack[2].nova
    assert nova is not None
    nova.max_version = (2, 5)
    provider = make()
    console = await provider.remote_console(WEB.id)
    assert ("POST", f"/v2.1/servers/{WEB.id}/action", None) in nova.calls
    assert not [c for c in nova.calls if c[1].endswith("/remote-consoles")]
    assert provider.console_target(console).path == "/"
    # a deployment whose version document is unreadable is asked at 2.6 and answers 406: the action follows
    nova.calls.clear()
    unknown = make(endpoint=f"{stack[2].nova_url}/v2.1/{stack[1].project_id}")
    unknown._discovered = True  # as when the version document could not be read
    await unknown.remote_console(WEB.id)
    posts = [(path.rsplit("/", 1)[-1], asked) for method, path, asked in nova.calls if method == "POST"]
    assert posts == [("remote-consoles", "compute 2.6"), ("action", None)]


async def test_token_revoked_mid_use_is_renewed_once(make: Make, stack: Stack) -> None:
    ks = stack[0]
    provider = make()
    await provider.get_server(WEB.id)
    assert isinstance(provider.auth, KeystoneAuth)
    first = await provider.auth.token(provider._api.identity)
    ks.revoke(first)
    assert (await provider.get_server(WEB.id)).id == WEB.id  # 401, one new token, the same call again
    assert await provider.auth.token(provider._api.identity) != first


async def test_token_is_renewed_before_it_expires(make: Make) -> None:
    now = [1000.0]
    provider = make()
    assert isinstance(provider.auth, KeystoneAuth)
    provider.auth._clock = lambda: now[0]
    first = await provider.auth.token(provider._api.identity)
    now[0] += 3600 - 600 - 1  # Keystone's tokens live an hour; renewal is due ten minutes before
    assert await provider.auth.token(provider._api.identity) == first
    now[0] += 2
    assert await provider.auth.token(provider._api.identity) != first


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("nova-migrating", "the server is being migrated"),
        ("nova-deleting", "the server is being deleted"),
        ("nova-building", "the server is still being built"),
        ("nova-no-host", "the server has no compute host to serve a console yet"),
    ],
)
async def test_409_states_become_clear_messages(make: Make, name: str, reason: str) -> None:
    server = next(s for s in SERVERS if s.name == name)
    with pytest.raises(CloudError) as refused:
        await make().remote_console(server.id)
    assert refused.value.kind is CloudErrorKind.BAD_STATE
    assert refused.value.user_message == reason
    assert refused.value.status == 409 and refused.value.code == "conflictingRequest"


async def test_huawei_stack_profile_signs_the_nova_paths_with_aksk(make: Make, stack: Stack) -> None:
    """Open Telekom Cloud's shape: /v2.1/{project_id}/servers/... at 2.6+, AK/SK instead of a token."""
    _, account, cloud = stack
    assert cloud.nova is not None
    cloud.nova.access_keys["OTCAKEXAMPLE0001"] = "otc-secret-key-for-the-test"
    endpoint = f"{cloud.nova_url}/v2.1/{{project_id}}"
    provider = make(
        auth=AKSKAuth(Credentials("OTCAKEXAMPLE0001", "otc-secret-key-for-the-test")), endpoint=endpoint
    )
    assert [s.id for s in await provider.list_servers()] == [s.id for s in SERVERS]
    console = await provider.remote_console(WEB.id)
    assert provider.console_target(console).path == "/"
    path = f"/v2.1/{account.project_id}/servers/{WEB.id}/remote-consoles"
    assert ("POST", path, "compute 2.6") in cloud.nova.calls
    cloud.nova.calls.clear()
    wrong = make(auth=AKSKAuth(Credentials("OTCAKEXAMPLE0001", "not-the-key")), endpoint=endpoint, retries=3)
    with pytest.raises(CloudError) as rejected:
        await wrong.get_server(WEB.id)
    assert rejected.value.kind is CloudErrorKind.AUTH
    assert [c for c in cloud.nova.calls if "/servers/" in c[1]] == [
        ("GET", f"/v2.1/{account.project_id}/servers/{WEB.id}", "compute 2.73")
    ], "a rejected signature is not retried"


async def test_unknown_server_is_not_found(make: Make) -> None:
    with pytest.raises(CloudError) as missing:
        await make().get_server("0f1e2d3c-0000-4000-8000-000000000000")
    assert missing.value.kind is CloudErrorKind.NOT_FOUND and missing.value.code == "itemNotFound"


async def test_console_opens_end_to_end_and_relays_rfb(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ks, account, cloud = stack
    caplog.set_level(logging.DEBUG)

    def add_lab(data: dict[str, Any]) -> None:
        data["clouds"].append(
            {
                "name": "lab",
                "provider": "openstack",
                "region": REGION,
                "project_id": account.project_id,
                "keystone": {
                    "url": f"{ks.url}/v3",  # written the usual way
                    "application_credential_id": account.app_cred_id,
                    "application_credential_secret": account.app_cred_secret,
                },
                "retries": 1,
            }
        )

    gateway = await start_gateway(cloud, tmp_path, add_lab)
    op = Operator(gateway)
    try:
        await op.login("demo")
        status, listing = await op.get("/api/servers")
        assert status == 200 and listing["errors"] == []
        assert {s["name"] for s in listing["servers"] if s["cloud"] == "lab"} == {s.name for s in SERVERS}
        transport = await op.open_console(WEB.id, cloud="lab")
        client = RFBClient(transport)
        assert "nova-web" in (await client.handshake()).name
        assert (await client.full_update()).rects, "a framebuffer update relayed from the RFB server"
        await transport.close()
        opened = await gateway.wait_for_audit("console_opened", server_id=WEB.id)
        assert opened["cloud"] == "lab"
        provider = gateway.gw.clouds["lab"]
        assert isinstance(provider.auth, KeystoneAuth)
        token = await provider.auth.token(provider._api.identity)  # type: ignore[attr-defined]
    finally:
        await op.close()
        await gateway.stop()
    # the gateway's Keystone token reached neither the browser nor a log line
    assert token not in op.seen.text() and token not in caplog.text
    assert account.app_cred_secret not in caplog.text
