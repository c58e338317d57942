"""The demo console end to end: RFB server over TCP, and through the real websockify over TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
from cryptography import x509

from gateway.sim.certs import CertPaths, make_self_signed
from gateway.sim.novncproxy import NovncProxy
from gateway.sim.rfb_server import RFBServer
from gateway.sim.screen import COLOUR_BARS, TITLE_HEIGHT
from gateway.sim.token_plugin import TokenStore
from tests.support.rfb_client import (
    AiohttpWSTransport,
    ClientPixelFormat,
    RFBClient,
    RFBClientProtocol,
    StreamTransport,
)

WIDTH, HEIGHT = 800, 600


@pytest.fixture
async def rfb() -> AsyncIterator[tuple[RFBServer, str, int]]:
    server = RFBServer(name="web-01", server_id="srv-0001")
    host, port = await server.start()
    try:
        yield server, host, port
    finally:
        await server.stop()


async def _tcp_client(host: str, port: int, version: tuple[int, int] = (3, 8)) -> RFBClient:
    client = RFBClient(await StreamTransport.connect(host, port), version=version)
    await client.handshake()
    return client


def _distinct_pixels(client: RFBClient) -> int:
    fb = client.proto.framebuffer
    bpp = client.proto.pixel_format.bytes_per_pixel  # type: ignore[union-attr]
    return len({bytes(fb[i : i + bpp]) for i in range(0, len(fb), bpp * 7)})


# ------------------------------------------------------------------------------------ RFB over TCP


async def test_full_update_then_typing_round_trips_as_incremental_updates(rfb) -> None:
    server, host, port = rfb
    client = await _tcp_client(host, port)
    try:
        init = client.server_init
        assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "web-01")
        update = await client.full_update()
        assert [(r.x, r.y, r.width, r.height) for r in update.rects] == [(0, 0, WIDTH, HEIGHT)]
        assert _distinct_pixels(client) > 5

        for ch in "hi":
            # Asked before anything changed: the server must hold the request, so the first update
            # to arrive is the one caused by the key, not an empty or unchanged one.
            await client.request_update(True)
            before = bytes(client.proto.framebuffer)
            await client.key(ord(ch))
            update = await client.next_update()
            assert len(update.rects) == 1
            (rect,) = update.rects
            assert rect.y >= TITLE_HEIGHT and rect.width * rect.height < WIDTH * HEIGHT // 20
            region = (rect.x, rect.y, rect.width, rect.height)
            assert client.proto.region_bytes(*region) != client.proto.region_bytes(*region, source=before)
        assert server.keys_received == [ord("h"), ord("i")]
        assert server.screen.typed == "hi"
    finally:
        await client.close()


@pytest.mark.parametrize("big_endian", [False, True])
async def test_16bpp_pixel_format_is_honoured(rfb, big_endian: bool) -> None:
    _, host, port = rfb
    client = await _tcp_client(host, port)
    try:
        await client.set_pixel_format(ClientPixelFormat(16, 16, big_endian, True, 31, 63, 31, 11, 5, 0))
        update = await client.full_update()
        assert len(client.proto.framebuffer) == WIDTH * HEIGHT * 2 and update.rects
        seen = {client.proto.pixel(x, TITLE_HEIGHT // 2) for x in range(WIDTH - 100, WIDTH)}
        assert set(COLOUR_BARS) <= seen  # pure channels survive 5/6/5 bits exactly
    finally:
        await client.close()


async def test_protocol_3_3_client_is_served(rfb) -> None:
    _, host, port = rfb
    client = await _tcp_client(host, port, version=(3, 3))
    try:
        await client.full_update()
        assert _distinct_pixels(client) > 5
    finally:
        await client.close()


async def test_one_viewer_sees_another_viewers_typing(rfb) -> None:
    server, host, port = rfb
    typist, watcher = await _tcp_client(host, port), await _tcp_client(host, port)
    try:
        await watcher.full_update()
        await watcher.request_update(True)
        await typist.key(ord("x"))
        update = await watcher.next_update()
        assert update.rects and server.connections == 2
    finally:
        await typist.close()
        await watcher.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello
        b"RFB 003.008\n\x02",  # security type it never offered
    ],
)
async def test_garbage_in_the_handshake_closes_only_that_connection(rfb, garbage: bytes) -> None:
    server, host, port = rfb
    reader, writer = await asyncio.open_connection(host, port)
    try:
        assert await reader.readexactly(12) == b"RFB 003.008\n"
        writer.write(garbage)
        async with asyncio.timeout(5):
            await reader.read()  # returns at EOF: the server hung up
    finally:
        writer.close()
    client = await _tcp_client(host, port)  # and it still serves others
    await client.full_update()
    await client.close()
    assert server.total_connections == 2


@pytest.mark.parametrize(
    "message",
    [bytes([99]), struct.pack(">B3xi", 6, 64 << 20), struct.pack(">BBHII", 255, 2, 0, 0, 0)],
)
async def test_bad_messages_after_the_handshake_close_the_connection(rfb, message: bytes) -> None:
    _, host, port = rfb
    client = await _tcp_client(host, port)
    try:
        await client.send_raw(message)
        await client.wait_closed()
    finally:
        await client.close()


async def test_pointer_cut_text_and_fences_are_accepted(rfb) -> None:
    _, host, port = rfb
    client = await _tcp_client(host, port)
    try:
        client.proto.pointer_event(1, 10, 10)
        client.proto.cut_text(b"x" * 100_000)
        await client.send_raw(client.proto.data_to_send())
        await client.send_raw(struct.pack(">BBHHHH", 150, 1, 0, 0, 10, 10))  # EnableContinuousUpdates
        await client.send_raw(struct.pack(">B3xIB", 248, 1 << 31 | 1, 3) + b"abc")  # fence request
        update = await client.full_update()  # the connection survived all of it
        assert update.rects
    finally:
        await client.close()


async def test_a_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    server = RFBServer(name="n", server_id="i", handshake_timeout=0.2)
    host, port = await server.start()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        async with asyncio.timeout(5):
            assert await reader.read() == b"RFB 003.008\n"  # then EOF, without our saying a word
        writer.close()
    finally:
        await server.stop()


async def test_a_client_that_never_reads_does_not_block_others_or_stop(rfb) -> None:
    server, host, port = rfb
    # A viewer with a tiny receive window asks for many full frames and never reads them.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    slow = RFBClientProtocol()
    while slow.server_init is None:
        slow.receive_data(await reader.read(4096))
        writer.write(slow.data_to_send())
    for _ in range(20):
        slow.request_update(False)
    writer.write(slow.data_to_send())

    fast = await _tcp_client(host, port)
    async with asyncio.timeout(5):
        await fast.full_update()
        await fast.request_update(True)
        await fast.key(ord("z"))
        assert (await fast.next_update()).rects
    assert server.connections == 2
    await fast.close()
    async with asyncio.timeout(5):
        await server.stop()  # with the stalled viewer still connected
    assert server.connections == 0
    writer.close()


async def test_a_key_flood_is_coalesced_and_the_server_stays_responsive(rfb) -> None:
    server, host, port = rfb
    flooder, other = await _tcp_client(host, port), await _tcp_client(host, port)
    try:
        await other.full_update()
        await other.request_update(True)
        for _ in range(20_000):
            flooder.proto.key_event(ord("f"), True)
            flooder.proto.key_event(ord("f"), False)
        await flooder.send_raw(flooder.proto.data_to_send())
        async with asyncio.timeout(5):
            assert (await other.next_update()).rects
            assert (await flooder.full_update()).rects  # its own connection still answers
        assert len(server.keys_received) == 20_000
        assert server.screen.version < 1_000  # renders per burst, not per key
    finally:
        await flooder.close()
        await other.close()


# ------------------------------------------------------------------------------ websockify over TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return make_self_signed(tmp_path_factory.mktemp("certs"), hostnames=("localhost",), ips=("127.0.0.1",))


@pytest.fixture
async def proxy(tmp_path: Path, certs: CertPaths) -> AsyncIterator[NovncProxy]:
    novnc = NovncProxy(workdir=tmp_path / "novnc", certs=certs)
    await novnc.start()
    try:
        yield novnc
    finally:
        await novnc.stop()


def _ws_url(console_url: str) -> str:
    """The design notes' console-URL-to-WebSocket table (only what the tests need)."""
    parts = urlsplit(console_url)
    query = parse_qs(parts.query)
    scheme = "wss" if parts.scheme == "https" else "ws"
    if "token" in query:
        return f"{scheme}://{parts.netloc}/websockify?token={query['token'][0]}"
    return f"{scheme}://{parts.netloc}/{unquote(query['path'][0]).lstrip('/')}"


async def _open_console(
    ws_url: str, ctx: ssl.SSLContext, **kwargs: object
) -> tuple[aiohttp.ClientSession, RFBClient]:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(ws_url, ssl=ctx, **kwargs)
    except BaseException:
        await session.close()
        raise
    return session, RFBClient(AiohttpWSTransport(ws))


async def test_console_works_through_websockify_over_tls(proxy: NovncProxy, rfb) -> None:
    server, host, port = rfb
    url = proxy.issue(host, port)
    assert url.startswith(f"https://127.0.0.1:{proxy.port}/vnc_auto.html?token=")
    assert url.endswith("&lang=EN&tLength=70")
    assert len(parse_qs(urlsplit(url).query)["token"][0]) == 43

    session, client = await _open_console(_ws_url(url), proxy.client_ssl_context())
    try:
        assert client.transport.ws.protocol is None  # type: ignore[attr-defined]
        init = await client.handshake()
        assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "web-01")
        await client.full_update()
        assert _distinct_pixels(client) > 5
        await client.request_update(True)
        await client.key(ord("k"))
        assert (await client.next_update()).rects
        assert server.keys_received == [ord("k")]
    finally:
        await client.close()
        await session.close()


async def test_websockify_selects_binary_when_offered(proxy: NovncProxy, rfb) -> None:
    _, host, port = rfb
    session, client = await _open_console(
        _ws_url(proxy.issue(host, port)), proxy.client_ssl_context(), protocols=("binary",)
    )
    try:
        assert client.transport.ws.protocol == "binary"  # type: ignore[attr-defined]
        await client.handshake()
    finally:
        await client.close()
        await session.close()


async def test_a_token_works_once_then_websockify_hangs_up_before_the_upgrade(proxy: NovncProxy, rfb) -> None:
    _, host, port = rfb
    ws_url = _ws_url(proxy.issue(host, port))
    session, client = await _open_console(ws_url, proxy.client_ssl_context())
    try:
        await client.handshake()
        # Observed: websockify checks the token *before* answering the upgrade and, on failure,
        # closes the TLS connection without any HTTP response -> aiohttp ServerDisconnectedError
        # (nova's own proxy instead sends 101 and then closes: 1006). Both mean "console expired".
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _open_console(ws_url, proxy.client_ssl_context())
    finally:
        await client.close()
        await session.close()
    with pytest.raises(aiohttp.ServerDisconnectedError):  # and still refused after the first has gone
        await _open_console(ws_url, proxy.client_ssl_context())


async def test_only_one_of_many_concurrent_uses_of_a_token_wins(proxy: NovncProxy, rfb) -> None:
    _, host, port = rfb
    ws_url = _ws_url(proxy.issue(host, port))
    results = await asyncio.gather(
        *(_open_console(ws_url, proxy.client_ssl_context()) for _ in range(6)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    try:
        assert len(winners) == 1
        assert all(isinstance(e, aiohttp.ServerDisconnectedError) for e in losers)
        await winners[0][1].handshake()
    finally:
        for session, client in winners:
            await client.close()
            await session.close()


@pytest.mark.parametrize("token", ["expired", "A" * 43, "not-a-token", ""])
async def test_expired_unknown_and_malformed_tokens_are_refused(proxy: NovncProxy, rfb, token: str) -> None:
    _, host, port = rfb
    if token == "expired":
        token = parse_qs(urlsplit(proxy.issue(host, port, ttl=0)).query)["token"][0]
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _open_console(
            f"wss://127.0.0.1:{proxy.port}/websockify?token={token}", proxy.client_ssl_context()
        )


async def test_nova_style_url_carries_the_token_in_path(tmp_path: Path, certs: CertPaths, rfb) -> None:
    _, host, port = rfb
    novnc = NovncProxy(workdir=tmp_path / "nova", certs=certs, url_style="nova")
    await novnc.start()
    try:
        url = novnc.issue(host, port)
        assert url.startswith(f"https://127.0.0.1:{novnc.port}/vnc_auto.html?path=%3Ftoken%3D")
        ws_url = _ws_url(url)
        assert ws_url.startswith(f"wss://127.0.0.1:{novnc.port}/?token=")
        session, client = await _open_console(ws_url, novnc.client_ssl_context())
        try:
            await client.handshake()
            await client.full_update()
        finally:
            await client.close()
            await session.close()
    finally:
        await novnc.stop()


async def test_a_client_that_does_not_trust_the_ca_fails_verification(proxy: NovncProxy, rfb) -> None:
    _, host, port = rfb
    ws_url = _ws_url(proxy.issue(host, port))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _open_console(ws_url, ssl.create_default_context())
    # The token was not spent by the failed attempt (TLS failed before any HTTP).
    session, client = await _open_console(ws_url, proxy.client_ssl_context())
    await client.handshake()
    await client.close()
    await session.close()


async def test_stop_ends_websockify_and_its_connection_handlers(
    tmp_path: Path, certs: CertPaths, rfb
) -> None:
    _, host, port = rfb
    novnc = NovncProxy(workdir=tmp_path / "n", certs=certs)
    await novnc.start()
    assert novnc.startup_seconds is not None and novnc.startup_seconds < 10
    pid = novnc.pid
    assert pid is not None
    session, client = await _open_console(_ws_url(novnc.issue(host, port)), novnc.client_ssl_context())
    try:
        await client.handshake()
        await novnc.stop()
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # nothing left in its process group, forked handlers included
        await client.wait_closed()
        assert novnc.pid is None
    finally:
        await client.close()
        await session.close()


def test_token_store_keeps_no_usable_token_on_disk(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    token = store.issue("127.0.0.1", 5900, ttl=60)
    files = list(store.directory.iterdir())
    assert len(files) == 1 and store.pending() == 1
    assert token not in files[0].name and token.encode() not in files[0].read_bytes()
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert store.consume(token) == ("127.0.0.1", 5900)
    assert store.consume(token) is None
    assert list(store.directory.iterdir()) == []


def test_token_store_sweeps_expired_tokens(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    stale = store.issue("h", 1, ttl=-1)
    fresh = store.issue("h", 2, ttl=60)  # issuing sweeps
    assert store.pending() == 1
    assert store.consume(stale) is None and store.consume(fresh) == ("h", 2)


def test_certificates_are_short_lived_with_sans_and_a_private_key_file(tmp_path: Path) -> None:
    paths = make_self_signed(tmp_path, hostnames=("localhost", "novnc.test"), ips=("127.0.0.1", "::1"))
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "novnc.test"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=2, minutes=10)
    assert stat.S_IMODE(paths.server_key.stat().st_mode) == 0o600
    assert not any(p.name.startswith("ca-key") for p in tmp_path.iterdir())
    ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
    ctx.load_cert_chain(paths.server_cert, paths.server_key)  # key matches certificate
