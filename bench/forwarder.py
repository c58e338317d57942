"""A zero-work TCP forwarder in front of the WebSocket source: the ceiling for any relay process.

It moves bytes between two sockets and does nothing else (no WebSocket parsing, no framing, no
checks), on uvloop when installed. Whatever throughput it loses against the direct connection is
what one extra user-space hop costs on this machine: a relay that does real work cannot beat it.
Run as `python -m bench.forwarder TARGET_PORT`; prints its own port.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from bench.source import LOOPBACK, raise_nofile, run_loop


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(target_port: int) -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()

    def accepted() -> _Side:
        down = _Side()

        async def connect() -> None:
            up = _Side()
            up.peer, down.peer = down, up
            try:
                await loop.create_connection(lambda: up, LOOPBACK, target_port)
            except OSError:
                if down.transport is not None:
                    down.transport.close()
                return
            assert up.transport is not None
            for chunk in down.early:
                up.transport.write(chunk)
            down.early.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return down

    server = await loop.create_server(accepted, LOOPBACK, 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    run_loop(lambda: main(int(sys.argv[1])), "uvloop")
