"""The suite's one way to wait for a condition: poll it, with a deadline.

Not a sleep used as synchronisation: the check looks at the state itself (a console released, an audit
line written, a process listening), and the deadline turns a hang into a failure that names what was
awaited.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(
    check: Callable[[], T | Awaitable[T]],
    within: float = 5.0,
    what: str = "condition",
    *,
    every: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `check` (plain or async) until it returns something truthy, and return that.

    The first polls follow quickly (1 ms, doubling), then one every `every` seconds: a fast condition
    is seen at once, a slow one costs little. At the deadline the test fails naming `what` and the
    last value, followed by `detail()` (read then: a log tail, what was seen instead).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = 0.001
    while True:
        value: Any = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            message = f"timed out after {within} s waiting for {what} (last: {value!r})"
            raise AssertionError(f"{message}\n{detail()}" if detail else message)
        await asyncio.sleep(pause)
        pause = min(pause * 2, every)
