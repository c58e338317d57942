"""Fixtures for the browser tests: the demo cloud and gateway on loopback, and a headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.support.browser import chromium
from tests.support.gateway import RunningGateway, demo_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with demo_stack(tmp_path) as gateway:
        yield gateway


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b
