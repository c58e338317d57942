"""Password checks run off the event loop (issue 10, item 10): scrypt takes ~100 ms a sign-in, and on the
loop it froze every console on the replica for that long."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from gateway.auth.passwords import DUMMY_HASH, PasswordPool, PasswordPoolBusy
from tests.support.gateway import Operator, RunningGateway


async def test_the_event_loop_keeps_running_while_a_password_is_checked(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ticker on the loop must make progress during every scrypt run: a right password, a wrong one,
    and an unknown user (checked against the dummy hash so that timing does not tell who exists)."""
    ticks = 0
    during: list[int] = []  # ticks seen while each scrypt call ran
    real_scrypt = hashlib.scrypt

    def observed_scrypt(*args: Any, **kwargs: Any) -> bytes:
        start = ticks
        try:
            return real_scrypt(*args, **kwargs)
        finally:
            during.append(ticks - start)

    monkeypatch.setattr(hashlib, "scrypt", observed_scrypt)
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    op = Operator(gateway)
    try:
        for user, password, expected in [("demo", "demo", 200), ("demo", "wrong", 401), ("nobody", "x", 401)]:
            status, body = await op.post("/api/login", {"user": user, "password": password}, csrf=False)
            assert status == expected, body
    finally:
        stop.set()
        await task
        await op.close()
    assert len(during) == 3, during
    assert all(n > 0 for n in during), f"the loop stood still during a password check: {during}"


async def test_a_full_pool_refuses_at_once_instead_of_queueing_without_bound() -> None:
    pool = PasswordPool(workers=1, max_pending=2)
    try:
        checks = [asyncio.create_task(pool.verify("guess", DUMMY_HASH)) for _ in range(2)]
        await asyncio.sleep(0)  # both have started: one runs, one waits for the only worker
        with pytest.raises(PasswordPoolBusy):
            await pool.verify("one too many", DUMMY_HASH)
        assert await asyncio.gather(*checks) == [False, False]
        assert await pool.verify("again", None) is False  # room again once they finished
    finally:
        pool.close()
