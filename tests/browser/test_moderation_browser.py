"""Moderated consoles in two headless Chromium pages against a real Xvnc running a program that shows what
is typed: the operator's typing reaches nothing until a moderator joins, reaches the program while they
watch, stops when they leave (pause) or ends the console (terminate), and the moderator can end it. Held
input is dropped, not queued: what was typed while held never arrives later.

The cross-replica case runs the same story with two gateway processes on one real Redis, each behind its
own real nginx (the shipped example config, its upstream narrowed to that replica): the operator's page
goes through one, the moderator's through the other, so the console and its moderator are on different
replicas by construction."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from gateway.sim.certs import make_self_signed
from gateway.sim.demo import DemoCloud, demo_config_data
from gateway.sim.ecs_api import SimServer
from tests.support import nginx
from tests.support.browser import sign_in
from tests.support.echo_console import echo_console_fixtures
from tests.support.gateway import start_gateway
from tests.support.polling import wait_for
from tests.support.processes import GatewayProcess, free_port
from tests.support.redis_server import RedisServer
from tests.support.vnc_servers import XVNC
from tests.support.x_echo import XEcho

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(XVNC is None, reason="Xvnc (tigervnc-standalone-server) is not installed"),
]
WAIT_MS = 15_000
XVNC_ID = "5a5a5a5a-0000-4000-8000-00000000e1e1"


def moderated(on_leave: str = "pause") -> Any:
    """demo (operators) gets control only while a moderator from support (viewer) watches; support may
    join without the owner's approval."""

    def tweak(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-operators-control":
                rule["moderation"] = {"groups": ["support"], "on_leave": on_leave, "grace": 0}
            if rule["name"] == "demo-support-view":
                rule.update(join=True, join_approval="none")

    return tweak


session, echo, cloud = echo_console_fixtures(SimServer(id=XVNC_ID, name="moderated-xvnc"))


async def page_of(browser: Browser, base: str, user: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    page = await context.new_page()
    await sign_in(page, base, user, user)
    return context, page


async def banner(page: Page, state: str) -> None:
    await expect(page.get_by_test_id("moderation-banner")).to_have_attribute(
        "data-state", state, timeout=WAIT_MS
    )


async def open_owner(page: Page, base: str) -> None:
    await page.goto(f"{base}/console/demo/{XVNC_ID}")
    await expect(page.get_by_test_id("console-status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )
    await banner(page, "waiting")
    await expect(page.get_by_test_id("moderation-banner")).to_contain_text("waiting for 1 moderator")


async def watch(page: Page, base: str, console_id: str) -> None:
    await page.goto(f"{base}/join/{console_id}")
    await expect(page.get_by_test_id("console-status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )


async def type_into(page: Page, text: str) -> None:
    await page.get_by_test_id("console-screen").click()
    await page.keyboard.type(text)


async def console_id_from(audit: Path) -> str:
    def opened() -> str | None:
        if not audit.exists():
            return None
        lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
        return next((e["console_id"] for e in lines if e["event"] == "console_opened"), None)

    return await wait_for(opened, 10, "the owner's console_opened line")


async def story(
    browser: Browser, echo: XEcho, owner_base: str, moderator_base: str, console_audit: Path
) -> tuple[Page, Page]:
    """The operator types while held, while moderated, while paused and again moderated; returns both pages
    with the moderator watching."""
    _, owner = await page_of(browser, owner_base, "demo")
    await open_owner(owner, owner_base)
    await type_into(owner, "held")  # dropped at the gateway: noVNC sends it, Xvnc never sees it
    console_id = await console_id_from(console_audit)

    _, moderator = await page_of(browser, moderator_base, "viewer")
    await watch(moderator, moderator_base, console_id)
    await banner(owner, "moderated")
    await expect(owner.get_by_test_id("moderation-banner")).to_have_text("Moderated by viewer")
    await type_into(owner, "ok")
    await wait_for(lambda: echo.typed == "ok", 15, "the moderated typing at the X program")  # not "heldok"

    await moderator.goto("about:blank")  # the moderator leaves
    await banner(owner, "paused")
    await expect(owner.get_by_test_id("moderation-banner")).to_contain_text(
        "Input paused because viewer left"
    )
    await type_into(owner, "zz")
    await watch(moderator, moderator_base, console_id)
    await banner(owner, "moderated")
    await type_into(owner, "!")
    await wait_for(lambda: echo.typed == "ok!", 15, "typing after the moderator came back")  # no "zz"
    return owner, moderator


async def ended_by_moderator(owner: Page, moderator: Page) -> None:
    await moderator.get_by_test_id("moderation-end").click()
    await expect(owner.get_by_test_id("failure-title")).to_have_text("Closed by moderation", timeout=WAIT_MS)
    await expect(owner.get_by_test_id("failure-reason")).to_have_text("Ended by moderator viewer")
    await expect(owner.get_by_test_id("failure-code")).to_have_text("Close code 4005")


async def test_a_moderated_console_takes_input_only_while_its_moderator_watches(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho, browser: Browser
) -> None:
    gateway = await start_gateway(cloud, tmp_path, moderated())
    try:
        owner, moderator = await story(browser, echo, gateway.url, gateway.url, gateway.audit_path)
        await ended_by_moderator(owner, moderator)
        assert echo.typed == "ok!"
    finally:
        await gateway.stop()


async def test_terminate_closes_the_console_when_its_moderator_leaves(
    cloud: DemoCloud, tmp_path: Path, echo: XEcho, browser: Browser
) -> None:
    gateway = await start_gateway(cloud, tmp_path, moderated(on_leave="terminate"))
    try:
        _, owner = await page_of(browser, gateway.url, "demo")
        await open_owner(owner, gateway.url)
        console_id = await console_id_from(gateway.audit_path)
        _, moderator = await page_of(browser, gateway.url, "viewer")
        await watch(moderator, gateway.url, console_id)
        await banner(owner, "moderated")
        await moderator.goto("about:blank")
        await expect(owner.get_by_test_id("failure-title")).to_have_text(
            "Closed by moderation", timeout=WAIT_MS
        )
        await expect(owner.get_by_test_id("failure-reason")).to_have_text("Closed because viewer left")
    finally:
        await gateway.stop()


# -- two replicas, each behind its own nginx, on one Redis ----------------------------------------------


@dataclass
class Fronts:
    replicas: list[GatewayProcess]
    fronts: list[str]  # https://127.0.0.1:<nginx port>, one per replica
    audits: list[Path]


@pytest.fixture
async def fronts(cloud: DemoCloud, tmp_path: Path) -> AsyncIterator[Fronts]:
    async with contextlib.AsyncExitStack() as stack:
        redis = RedisServer(tmp_path / "redis")
        stack.callback(redis.stop)
        redis.start()
        ports = [(free_port(), free_port()) for _ in range(2)]
        front_urls = [f"https://127.0.0.1:{https}" for https, _ in ports]
        base = demo_config_data(cloud, port=0)  # one set of session keys for both replicas
        moderated()(base)
        replicas, audits = [], []
        for i in range(2):
            data = json.loads(json.dumps(base))
            data["server"].update(
                listen=f"127.0.0.1:{free_port()}", public_origins=front_urls, trusted_proxies=["127.0.0.1/32"]
            )
            data["session"]["secure_cookie"] = True
            data["state"] = {"backend": "redis", "redis": {"url": redis.url}}
            audits.append(tmp_path / f"audit-{i}.jsonl")
            data["audit"] = {"target": str(audits[-1])}
            replica = await GatewayProcess.start(data, tmp_path, name=f"replica-{i}")
            stack.push_async_callback(replica.stop)
            replicas.append(replica)
        certs = make_self_signed(tmp_path / "lb-certs", hostnames=("localhost",), ips=("127.0.0.1",))
        for i, (replica, (https, plain)) in enumerate(zip(replicas, ports, strict=True)):
            site = nginx.adapt(
                nginx.EXAMPLE.read_text(),
                cert=certs.server_cert,
                key=certs.server_key,
                https_port=https,
                http_port=plain,
                upstreams={"novnc_gateway": [replica.url.removeprefix("http://")]},
            )
            prefix = tmp_path / f"nginx-{i}"
            lb = nginx.Nginx(prefix, nginx.prepare(prefix, site), ports=[https])
            stack.callback(lb.stop)
            await lb.start()
        yield Fronts(replicas, front_urls, audits)


async def test_the_moderator_on_another_replica_moderates_and_ends_the_console(
    fronts: Fronts, echo: XEcho, browser: Browser
) -> None:
    owner, moderator = await story(browser, echo, fronts.fronts[0], fronts.fronts[1], fronts.audits[0])
    await ended_by_moderator(owner, moderator)
    assert echo.typed == "ok!"

    def lines(i: int, event: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, fronts.audits[i].read_text().splitlines()) if e["event"] == event]

    # The console ran on replica 0, its moderator watched through replica 1 (which also took the end).
    assert [e["user"] for e in lines(0, "console_opened")] == ["demo"]
    assert [e["user"] for e in lines(1, "observer_joined")] == ["viewer", "viewer"]
    assert [e["moderation"] for e in lines(0, "console_moderation")] == [
        "waiting",
        "moderated",
        "paused",
        "moderated",
    ]
    assert [(e["moderation"], e["user"]) for e in lines(1, "console_moderation")] == [("ended", "viewer")]
