"""The host allow-list, TLS, and opening the upstream socket (console URL forms: test_console_urls.py)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.upstream import (
    HostAllowlist,
    UpstreamError,
    UpstreamErrorKind,
    UpstreamTarget,
    build_ssl_context,
    open_upstream,
    upstream_session,
)

SECRET = "S3cr3tT0ken-1234"

# --- HostAllowlist -----------------------------------------------------------------------


def test_allowlist_exact_wildcard_ports_and_ips() -> None:
    allow = HostAllowlist(
        [
            "console.example.com",
            "*.nova.example.org",
            "10.1.2.3",
            "[2001:db8::7]:6080",
            "huawei.example.net:8002",
        ]
    )
    assert allow.allows("console.example.com", 443)
    assert allow.allows("CONSOLE.Example.com.", 6080)
    assert not allow.allows("evil-console.example.com", 443)
    assert not allow.allows("console.example.com.evil.org", 443)
    assert allow.allows("a.nova.example.org", 6080)
    assert allow.allows("a.b.c.nova.example.org", 6080)
    assert not allow.allows("nova.example.org", 6080)  # the apex is not a subdomain
    assert not allow.allows("anova.example.org", 6080)
    assert allow.allows("10.1.2.3", 1)
    assert not allow.allows("10.1.2.4", 1)
    assert allow.allows("2001:db8:0::7", 6080)
    assert allow.allows("[2001:db8::7]", 6080)
    assert not allow.allows("2001:db8::7", 6081)
    assert allow.allows("huawei.example.net", 8002)
    assert not allow.allows("huawei.example.net", 443)
    assert not allow.allows("", 443)
    assert not allow.allows("127.1", 443)


def test_allowlist_idna() -> None:
    allow = HostAllowlist(["bücher.example", "*.xn--caf-dma.example"])
    assert allow.allows("xn--bcher-kva.example", 443)
    assert allow.allows("BÜCHER.example", 443)
    assert allow.allows("x.café.example", 443)


def test_empty_allowlist_allows_nothing() -> None:
    assert not HostAllowlist([]).allows("localhost", 80)


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "*",
        "*.com",
        "a*.example.com",
        "*.*.example.com",
        "h.example:0",
        "h.example:x",
        "[::1",
        "[zz]:1",
        "*.10.0.0.1",
        "bad host.example",
        "-x.example",
    ],
)
def test_allowlist_rejects_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError) as info:
        HostAllowlist([pattern])
    assert repr(pattern) in str(info.value)


def test_allowlist_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        HostAllowlist("console.example.com")  # type: ignore[arg-type]


# --- TLS -----------------------------------------------------------------------------------


def _write_self_signed(tmp: Path, *, sans: list[x509.GeneralName] | None = None) -> tuple[Path, Path]:
    if sans is None:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(sans),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_build_ssl_context() -> None:
    ctx = build_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ctx = build_ssl_context(verify=False)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


# --- open_upstream against local servers -------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Server:
        async def record(request: web.Request) -> web.StreamResponse:
            self.requests.append(request)
            return await handler(request)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", record)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    made: list[Server] = []
    yield made
    for s in made:
        if s.runner is not None:
            await s.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with upstream_session() as session:
        yield session


async def ws_echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=("binary",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def target_for(port: int, scheme: str = "ws", host: str = "127.0.0.1") -> UpstreamTarget:
    return UpstreamTarget(scheme=scheme, host=host, port=port, path="/websockify", token=SECRET)


OPEN_ARGS = {"connect_timeout": 5.0, "max_msg_size": 1 << 20}


async def test_open_upstream_sends_token_no_origin_and_binary(
    servers: list[Server], http: aiohttp.ClientSession
) -> None:
    srv = await Server().start(ws_echo)
    servers.append(srv)
    ws = await open_upstream(
        http, target_for(srv.port), allowlist=HostAllowlist(["127.0.0.1"]), ssl_context=None, **OPEN_ARGS
    )
    try:
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_bytes()) == b"\x00\x01"
        assert ws.protocol == "binary"
    finally:
        await ws.close()
    req = srv.requests[0]
    assert req.path == "/websockify"
    assert req.query["token"] == SECRET
    assert "Origin" not in req.headers
    assert req.headers["Sec-WebSocket-Protocol"] == "binary"
    assert "Sec-WebSocket-Extensions" not in req.headers  # no permessage-deflate on the hot path
    assert "Cookie" not in req.headers


async def test_allowlist_is_checked_before_connecting(
    servers: list[Server], http: aiohttp.ClientSession
) -> None:
    srv = await Server().start(ws_echo)
    servers.append(srv)
    with pytest.raises(UpstreamError) as info:
        await open_upstream(
            http,
            target_for(srv.port),
            allowlist=HostAllowlist(["console.example.com"]),
            ssl_context=None,
            **OPEN_ARGS,
        )
    assert info.value.kind is UpstreamErrorKind.NOT_ALLOWED
    assert srv.requests == []
    assert SECRET not in str(info.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_refused(http: aiohttp.ClientSession) -> None:
    with pytest.raises(UpstreamError) as info:
        await open_upstream(
            http,
            target_for(_closed_port()),
            allowlist=HostAllowlist(["127.0.0.1"]),
            ssl_context=None,
            **OPEN_ARGS,
        )
    assert info.value.kind is UpstreamErrorKind.REFUSED
    assert info.value.user_message == "the console proxy could not be reached"
    assert SECRET not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__


async def test_timeout(http: aiohttp.ClientSession) -> None:
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamError) as info:
            await open_upstream(
                http,
                target_for(port),
                allowlist=HostAllowlist(["127.0.0.1"]),
                ssl_context=None,
                connect_timeout=0.3,
                max_msg_size=1024,
            )
        assert accepted.is_set()
        assert info.value.kind is UpstreamErrorKind.TIMEOUT
        assert SECRET not in str(info.value)
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("status", "kind"), [(404, UpstreamErrorKind.HANDSHAKE), (403, UpstreamErrorKind.EXPIRED)]
)
async def test_http_refusal(
    status: int, kind: UpstreamErrorKind, servers: list[Server], http: aiohttp.ClientSession
) -> None:
    async def refuse(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=f"no {SECRET}")

    srv = await Server().start(refuse)
    servers.append(srv)
    with pytest.raises(UpstreamError) as info:
        await open_upstream(
            http, target_for(srv.port), allowlist=HostAllowlist(["127.0.0.1"]), ssl_context=None, **OPEN_ARGS
        )
    assert info.value.kind is kind
    assert f"HTTP {status}" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


async def test_tls_verification(tmp_path: Path, servers: list[Server], http: aiohttp.ClientSession) -> None:
    cert, key = _write_self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    srv = await Server().start(ws_echo, ssl_context=server_ctx)
    servers.append(srv)
    allow = HostAllowlist(["127.0.0.1", "localhost"])

    with pytest.raises(UpstreamError) as info:
        await open_upstream(
            http, target_for(srv.port, "wss"), allowlist=allow, ssl_context=build_ssl_context(), **OPEN_ARGS
        )
    assert info.value.kind is UpstreamErrorKind.TLS
    assert info.value.user_message == "the console proxy's TLS certificate was not trusted"
    assert SECRET not in str(info.value)

    for ctx in (build_ssl_context(ca_file=str(cert)), build_ssl_context(verify=False)):
        ws = await open_upstream(
            http, target_for(srv.port, "wss"), allowlist=allow, ssl_context=ctx, **OPEN_ARGS
        )
        await ws.send_bytes(b"tls")
        assert await ws.receive_bytes() == b"tls"
        await ws.close()

    # a trusted certificate for another name is still refused
    (tmp_path / "other").mkdir()
    other_cert, other_key = _write_self_signed(tmp_path / "other", sans=[x509.DNSName("other.test")])
    other_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ctx.load_cert_chain(other_cert, other_key)
    other = await Server().start(ws_echo, ssl_context=other_ctx)
    servers.append(other)
    with pytest.raises(UpstreamError) as info:
        await open_upstream(
            http,
            target_for(other.port, "wss"),
            allowlist=allow,
            ssl_context=build_ssl_context(ca_file=str(other_cert)),
            **OPEN_ARGS,
        )
    assert info.value.kind is UpstreamErrorKind.TLS


async def test_only_the_redirect_refusing_session_may_connect() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="upstream_session"):
            await open_upstream(
                session, target_for(1), allowlist=HostAllowlist(["127.0.0.1"]), ssl_context=None, **OPEN_ARGS
            )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("where", ["same host", "other host"])
async def test_every_redirect_is_refused(
    status: int, where: str, servers: list[Server], http: aiohttp.ClientSession
) -> None:
    """Even to an allowed host: the allow-list and the audit judge the first URL only."""
    srv = await Server().start(ws_echo)
    servers.append(srv)
    host = "127.0.0.1" if where == "same host" else "127.0.0.2"

    redirect = {
        301: web.HTTPMovedPermanently,
        302: web.HTTPFound,
        303: web.HTTPSeeOther,
        307: web.HTTPTemporaryRedirect,
        308: web.HTTPPermanentRedirect,
    }[status]

    async def answer(request: web.Request) -> web.StreamResponse:
        raise redirect(f"http://{host}:{srv.port}/websockify?token=elsewhere")

    first = await Server().start(answer)
    servers.append(first)
    with pytest.raises(UpstreamError) as info:
        await open_upstream(
            http,
            target_for(first.port),
            allowlist=HostAllowlist(["127.0.0.1", "127.0.0.2"]),
            ssl_context=None,
            **OPEN_ARGS,
        )
    assert info.value.kind is UpstreamErrorKind.REDIRECT
    assert f"HTTP {status} to {host}" in str(info.value)
    assert "elsewhere" not in str(info.value) and SECRET not in str(info.value)
    assert len(first.requests) == 1 and srv.requests == []
