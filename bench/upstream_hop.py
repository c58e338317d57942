"""`python -m bench.upstream_hop [--mib N]`: the upstream hop alone, three ways (docs/performance.md).

A source process streams pre-encoded server frames (the bench's `64k` and `mix` profiles) over a
WebSocket; this process receives them and forwards each binary message, framed for the browser, to a
TCP sink in the source process that discards it. Compared, on the same stream and sink:

- `aiohttp receive`: aiohttp's public API (`receive()`, then a frame header and the payload written),
  which is what `console.frame_passthrough = false` does;
- `aiohttp pass-through`: the gateway's fast path (consoles/aiohttp_fastpath.py) as the relay uses it;
- `picows`: picows's frame callbacks (`WSFrame.get_payload_as_memoryview`), header and payload written.

All three honour the sink's flow control. Reported: MB/s and this process's CPU seconds per GB.
picows is not a dependency of the project: `pip install picows` into the venv to run its part.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import importlib.util
import multiprocessing
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bench.protocol import profile
from gateway.consoles.aiohttp_fastpath import Passthrough, _Hooks
from gateway.consoles.relay_core import RelayStats

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _header(size: int) -> bytes:
    if size < 126:
        return struct.pack("!BB", 0x82, size)
    if size < 65536:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)


def _frames(name: str, total: int) -> bytes:
    return b"".join(_header(size) + bytes(size) for size in profile(name, total).sizes)


# -- the source and the sink (their own process) ------------------------------------------------------


async def _serve(blob: bytes, ports: Any) -> None:
    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 - the protocol's hash
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await reader.readexactly(7)  # the client's one-byte "go" (masked): it is ready to forward
        view = memoryview(blob)
        for start in range(0, len(blob), 1 << 20):
            writer.write(view[start : start + (1 << 20)])
            await writer.drain()
        await reader.read()  # until the client leaves
        writer.close()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 20):
            pass
        writer.close()

    src = await asyncio.start_server(source, "127.0.0.1", 0)
    snk = await asyncio.start_server(sink, "127.0.0.1", 0)
    ports.put((src.sockets[0].getsockname()[1], snk.sockets[0].getsockname()[1]))
    await asyncio.Event().wait()


def _server_process(blob: bytes, ports: Any) -> None:
    asyncio.run(_serve(blob, ports))


# -- the forwarders -----------------------------------------------------------------------------------


class _Sink(asyncio.Protocol):
    """The 'browser' side: a TCP connection with aiohttp-like flow-control hooks."""

    def __init__(self) -> None:
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.on_pause: Callable[[], None] = lambda: None
        self.on_resume: Callable[[], None] = lambda: None

    def pause_writing(self) -> None:
        self._paused = True
        self.on_pause()

    def resume_writing(self) -> None:
        self._paused = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None
        self.on_resume()

    async def _drain_helper(self) -> None:
        if self._paused:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class _Clock:
    """Wall and CPU time from the "go" to the last byte forwarded: connecting and closing left out."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


async def _aiohttp_receive(
    url: str, sink: _Sink, transport: asyncio.Transport, total: int, clock: _Clock
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=1 << 20) as ws:
        got = 0
        clock.start()
        await ws.send_bytes(b"g")
        while got < total:
            msg = await ws.receive()
            data = msg.data
            transport.writelines((_header(len(data)), data))
            got += len(data)
            if sink._paused:
                await sink._drain_helper()
        clock.stop()


class _Counted(Passthrough):
    """The fast path, telling when the whole stream has passed."""

    __slots__ = ("_done", "_stream_stats", "_total")

    def __init__(self, hooks: _Hooks, stats: RelayStats, total: int, done: asyncio.Future[None]) -> None:
        super().__init__(hooks, stats, 1 << 20, browser_gone=lambda: None, upstream_failed=lambda: None)
        self._stream_stats, self._total, self._done = stats, total, done

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        result = super().feed_data(data)
        if self._stream_stats.bytes_to_browser >= self._total and not self._done.done():
            self._done.set_result(None)
        return result


async def _aiohttp_passthrough(
    url: str, sink: _Sink, transport: asyncio.Transport, total: int, clock: _Clock
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=1 << 20) as ws:
        conn = ws._conn
        assert conn is not None and conn.protocol is not None
        hooks = _Hooks(ws._parser, ws._reader, conn.protocol, sink, transport)
        done = asyncio.get_running_loop().create_future()
        passthrough = _Counted(hooks, RelayStats(), total, done)
        conn.protocol._payload_parser = passthrough  # type: ignore[attr-defined]
        assert passthrough.try_forward()
        clock.start()
        await ws.send_bytes(b"g")
        await done
        clock.stop()


async def _picows(url: str, sink: _Sink, transport: asyncio.Transport, total: int, clock: _Clock) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    done = asyncio.get_running_loop().create_future()

    class Forward(WSListener):  # type: ignore[misc]
        got = 0

        def on_ws_connected(self, ws: Any) -> None:
            sink.on_pause = ws.underlying_transport.pause_reading
            sink.on_resume = ws.underlying_transport.resume_reading

        def on_ws_frame(self, ws: Any, frame: Any) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                payload = frame.get_payload_as_memoryview()
                transport.writelines((_header(len(payload)), payload))
                self.got += len(payload)
                if self.got >= total and not done.done():
                    done.set_result(None)

    ws, _ = await ws_connect(Forward, url, max_frame_size=1 << 20)
    clock.start()
    ws.send(WSMsgType.BINARY, b"g")
    await done
    clock.stop()
    ws.disconnect()


async def _one(kind: str, ports: tuple[int, int], total: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_connection(_Sink, "127.0.0.1", ports[1])
    run = {
        "aiohttp receive": _aiohttp_receive,
        "aiohttp pass-through": _aiohttp_passthrough,
        "picows": _picows,
    }
    clock = _Clock()
    await run[kind](f"ws://127.0.0.1:{ports[0]}/", sink, transport, total, clock)
    transport.close()
    return total / clock.wall / 1e6, clock.cpu / (total / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="bytes per stream, MiB")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    kinds = ["aiohttp receive", "aiohttp pass-through"]
    if importlib.util.find_spec("picows") is not None:
        kinds.append("picows")
    else:
        print("picows is not installed: its row is left out (pip install picows)")
    for name in ("64k", "mix"):
        total = profile(name, args.mib << 20).total
        ports: Any = multiprocessing.Queue()
        server = multiprocessing.Process(
            target=_server_process, args=(_frames(name, args.mib << 20), ports), daemon=True
        )
        server.start()
        try:
            port_pair = ports.get(timeout=30)
            results: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.rounds):  # the kinds take turns, so load from elsewhere hits all of them
                for kind in kinds:
                    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
                    with runner:
                        results.setdefault(kind, []).append(runner.run(_one(kind, port_pair, total)))
            for kind, rounds in results.items():
                mbps = sorted(r[0] for r in rounds)[len(rounds) // 2]
                cpu = sorted(r[1] for r in rounds)[len(rounds) // 2]
                print(
                    f"{name:4} {kind:22} {mbps:8.1f} MB/s  {cpu:5.2f} core·s per GB (median of {len(rounds)})"
                )
        finally:
            server.terminate()
            server.join()


if __name__ == "__main__":
    main()
