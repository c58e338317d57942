"""Resource measurements for leak checks: file descriptors, asyncio tasks, threads and memory, of this
process (in-process gateways) or of another one (GatewayProcess), plus a settle helper that waits for
counts to come back down instead of sleeping."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class Snapshot:
    fds: int
    tasks: int  # -1 when not measurable (another process)
    threads: int
    rss: int  # bytes
    connections: int  # open TCP sockets

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def minus(self, other: Snapshot) -> dict[str, int]:
        return {k: v - getattr(other, k) for k, v in asdict(self).items()}


def _tcp(proc: psutil.Process) -> int:
    try:
        return len(proc.net_connections(kind="tcp"))
    except (psutil.AccessDenied, AttributeError):
        return len(proc.connections(kind="tcp"))


def here() -> Snapshot:
    """This process, from inside its event loop (tasks counted there)."""
    gc.collect()
    proc = psutil.Process()
    return Snapshot(
        fds=len(os.listdir("/proc/self/fd")),
        tasks=len(asyncio.all_tasks()),
        threads=proc.num_threads(),
        rss=proc.memory_info().rss,
        connections=_tcp(proc),
    )


def of_pid(pid: int) -> Snapshot:
    proc = psutil.Process(pid)
    return Snapshot(
        fds=proc.num_fds(),
        tasks=-1,
        threads=proc.num_threads(),
        rss=proc.memory_info().rss,
        connections=_tcp(proc),
    )


async def settle(
    measure: Callable[[], Snapshot],
    baseline: Snapshot,
    *,
    fd_slack: int = 0,
    task_slack: int = 0,
    within: float = 10.0,
) -> Snapshot:
    """Poll until fds and tasks are back within slack of `baseline` (closing is asynchronous);
    returns the last measurement either way, so the caller's assertion shows the real numbers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        now = measure()
        fds_ok = now.fds <= baseline.fds + fd_slack
        tasks_ok = now.tasks < 0 or now.tasks <= baseline.tasks + task_slack
        if (fds_ok and tasks_ok) or loop.time() > deadline:
            return now
        await asyncio.sleep(0.05)
