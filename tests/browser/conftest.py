"""Fixtures for the browser tests: the demo cloud and gateway on loopback, and a headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from gateway.sim.demo import DemoCloud
from tests.support.browser import chromium
from tests.support.gateway import RunningGateway, start_gateway


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    cloud = DemoCloud(tmp_path / "cloud")
    await cloud.start()
    gateway = await start_gateway(cloud, tmp_path)
    try:
        yield gateway
    finally:
        await gateway.stop()
        await cloud.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b
