"""Fixtures shared by the integration tests: the demo cloud, gateways on loopback, signed-in operators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.demo import DemoCloud
from tests.support.gateway import Operator, RunningGateway, start_gateway
from tests.support.keystone import Account, Keystone
from tests.support.redis_server import RedisServer

Tweak = Callable[[dict[str, Any]], None]


@pytest.fixture(params=[True, False], ids=["fast_path", "public_path"])
def frame_passthrough(request: pytest.FixtureRequest) -> bool:
    """The relay tests run twice: with aiohttp's frame pass-through (gateway/consoles/aiohttp_fastpath.py)
    and with it forced off, as `console.frame_passthrough = false` does."""
    return bool(request.param)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[DemoCloud]:
    demo = DemoCloud(tmp_path / "cloud")
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


@pytest.fixture
async def gateways(
    cloud: DemoCloud, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """Start gateways (each with an optional config tweak); all are stopped at the end."""
    started: list[RunningGateway] = []

    async def start(tweak: Tweak | None = None) -> RunningGateway:
        running = await start_gateway(cloud, tmp_path, tweak)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.stop()


@pytest.fixture
async def gateway(gateways: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    return await gateways()


@pytest.fixture
async def sign_in() -> AsyncIterator[Callable[..., Awaitable[Operator]]]:
    """Operators signed in as a demo user; all are closed at the end."""
    operators: list[Operator] = []

    async def make(gateway: Any, user: str, password: str | None = None) -> Operator:
        op = Operator(gateway)
        operators.append(op)
        await op.login(user, password)
        return op

    try:
        yield make
    finally:
        for op in operators:
            await op.close()


@pytest.fixture
async def operator(gateway: RunningGateway) -> AsyncIterator[Operator]:
    op = Operator(gateway)
    try:
        yield op
    finally:
        await op.close()


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Keystone, Account]]:
    """A real Keystone, bootstrapped once per test session (about 20 s), with the gateway's account."""
    ks = Keystone(tmp_path_factory.mktemp("keystone")).start()
    try:
        yield ks, ks.provision()
    finally:
        ks.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, for gateways that share state."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
