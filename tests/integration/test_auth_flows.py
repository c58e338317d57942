"""Sign-in methods, sessions, CSRF and security headers, through the real gateway app on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import expect
from yarl import URL

from gateway.auth.cookie import SessionData, cookie_name, generate_key
from gateway.auth.identity import Identity
from tests.support.browser import chromium, new_page
from tests.support.gateway import ConsoleRefused, Operator, RunningGateway
from tests.support.oidc import sign_in, start_oidc_provider
from tests.support.rfb_client import RFBClient


async def test_security_headers_on_every_kind_of_response(gateways: Callable[..., Any]) -> None:
    gateway = await gateways()
    async with aiohttp.ClientSession() as http:
        for path in ("/login", "/api/auth/methods", "/static/css/app.css", "/novnc/core/rfb.js", "/nope"):
            async with http.get(gateway.url + path) as response:
                csp = response.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp
                assert "frame-ancestors 'none'" in csp
                assert "unsafe-inline" not in csp
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Referrer-Policy"] == "no-referrer"
                assert response.headers["X-Request-Id"]
        async with http.get(gateway.url + "/nope") as response:
            assert response.status == 404
            assert "Traceback" not in await response.text()
        async with http.get(gateway.url + "/login", headers={"X-Forwarded-Proto": "https"}) as response:
            assert "Strict-Transport-Security" not in response.headers, "untrusted proxy header"
    behind_proxy = await gateways(lambda d: d["server"].update(trusted_proxies=["127.0.0.1/32"]))
    async with (
        aiohttp.ClientSession() as http,
        http.get(behind_proxy.url + "/login", headers={"X-Forwarded-Proto": "https"}) as response,
    ):
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_pages_carry_no_inline_script(gateways: Callable[..., Any]) -> None:
    gateway = await gateways()
    for page in ("login.html", "servers.html", "console.html", "admin.html"):
        html = (gateway.gw.config.server.static_dir / page).read_text()
        assert "<script>" not in html and " on" + "click=" not in html and "style=" not in html


async def test_csrf_and_cross_origin_posts_are_refused(gateways: Callable[..., Any]) -> None:
    gateway = await gateways()
    operator = Operator(gateway)
    try:
        await operator.login("demo")
        status, body = await operator.post("/api/logout", csrf=False)
        assert (status, body["code"]) == (403, "csrf")
        status, body = await operator.post("/api/logout", headers={"Origin": "https://evil.example"})
        assert (status, body["code"]) == (403, "csrf")
        status, _ = await operator.get("/api/me")
        assert status == 200, "the refused requests changed nothing"
        status, body = await operator.post(
            "/api/login",
            {"user": "demo", "password": "demo"},
            csrf=False,
            headers={"Origin": "https://evil.example"},
        )
        assert status == 403
    finally:
        await operator.close()


async def test_open_redirect_after_sign_in_is_neutralised(gateways: Callable[..., Any]) -> None:
    gateway = await gateways()
    operator = Operator(gateway)
    try:
        for hostile in ("//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)"):
            status, body = await operator.post(
                "/api/login", {"user": "demo", "password": "demo", "next": hostile}, csrf=False
            )
            assert status == 200
            assert body["next"] == "/servers"
        status, body = await operator.post(
            "/api/login", {"user": "demo", "password": "demo", "next": "/console/demo/x"}, csrf=False
        )
        assert body["next"] == "/console/demo/x"
    finally:
        await operator.close()


async def test_local_sign_in_is_throttled(
    gateways: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateways()
    operator = Operator(gateway)
    try:
        statuses = []
        for _ in range(7):
            status, _body = await operator.post("/api/login", {"user": "demo", "password": "bad"}, csrf=False)
            statuses.append(status)
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
        status, body = await operator.post("/api/login", {"user": "demo", "password": "demo"}, csrf=False)
        assert status == 429, "the right password does not bypass the throttle"
        assert "try again in" in body["error"]
        failed = [e for e in gateway.audit_events() if e["event"] == "login_failed"]
        assert {e["reason"] for e in failed} == {"bad credentials", "throttled"}
    finally:
        await operator.close()


async def _cookie_for(gateway: RunningGateway, user: str) -> str:
    operator = Operator(gateway)
    try:
        await operator.login(user)
        cookies = operator.http.cookie_jar.filter_cookies(URL(gateway.url))
        return cookies["novnc-gw"].value
    finally:
        await operator.close()


async def _me(gateway: RunningGateway, cookie: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(gateway.url + "/api/me", headers={"Cookie": f"novnc-gw={cookie}"}) as response,
    ):
        return response.status, await response.json()


async def test_sessions_survive_restart_and_rotate_keys(
    gateways: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    old_key, new_key = generate_key(), generate_key()
    first = await gateways(lambda d: d["session"].update(keys=[old_key]))
    cookie = await _cookie_for(first, "demo")
    await first.stop()
    # Another process (a restart, or another replica) with the same key reads the same cookie.
    second = await gateways(lambda d: d["session"].update(keys=[old_key]))
    assert (await _me(second, cookie))[0] == 200
    rotated = await gateways(lambda d: d["session"].update(keys=[new_key, old_key]))
    assert (await _me(rotated, cookie))[0] == 200
    retired = await gateways(lambda d: d["session"].update(keys=[new_key]))
    caplog.set_level(logging.INFO, logger="gateway.web")
    assert await _me(retired, cookie) == (
        401,
        {"error": "Sign in first", "code": "unauthenticated", "reason": "session_ended"},
    )
    assert any("no longer configured" in r.getMessage() for r in caplog.records)
    tampered = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
    assert (await _me(rotated, tampered))[0] == 401
    assert any("tampered" in r.getMessage() for r in caplog.records)


async def test_signing_in_over_a_session_due_for_refresh_keeps_the_new_sign_in(
    gateways: Callable[..., Any],
) -> None:
    """The old cookie's sliding refresh must not overwrite the cookie the sign-in just issued."""
    gateway = await gateways()
    gw = gateway.gw
    demo = Identity(user="demo", groups=gw.local_users["demo"][1], method="local")
    stale = gw.codec.encode(gw.codec.new_session(demo, now=time.time() - 120))  # last seen 2 min ago
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.post(
            gateway.url + "/api/login",
            json={"user": "viewer", "password": "viewer"},
            headers={"Origin": gateway.origin, "Cookie": f"novnc-gw={stale}"},
        ) as response,
    ):
        assert response.status == 200
        issued = response.cookies["novnc-gw"].value
    status, me = await _me(gateway, issued)
    assert (status, me["user"]) == (200, "viewer")


async def test_logout_closes_live_consoles_and_revokes_the_cookie(gateways: Callable[..., Any]) -> None:
    gateway = await gateways()
    operator = Operator(gateway)
    try:
        await operator.login("demo")
        cookie = operator.http.cookie_jar.filter_cookies(URL(gateway.url))["novnc-gw"].value
        transport = await operator.open_console("web-01")
        client = RFBClient(transport)
        await client.handshake()
        status, body = await operator.post("/api/logout")
        assert status == 200 and body["next"].startswith("/login")
        await client.wait_closed()
        assert transport.close_code == 4001
        assert (await _me(gateway, cookie))[0] == 401, "a copied cookie no longer works after sign-out"
        closed = await gateway.wait_for_audit("console_closed")
        assert closed["closed_by"] == "logout"
    finally:
        await operator.close()


async def test_expired_sign_in_closes_the_console(gateways: Callable[..., Any]) -> None:
    gateway = await gateways(lambda d: d["session"].update(idle_lifetime=2, absolute_lifetime=2))
    operator = Operator(gateway)
    try:
        await operator.login("demo")
        transport = await operator.open_console("web-01")
        client = RFBClient(transport)
        await client.handshake()
        started = time.monotonic()
        await asyncio.wait_for(client.wait_closed(), 10)
        assert transport.close_code == 4004
        assert time.monotonic() - started < 5
    finally:
        await operator.close()


def _es256_pair(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "proxy-public.pem"
    path.write_bytes(pem)
    return key, path


def _assertion(key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://sso.example", "aud": "novnc-gateway", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})


def _proxy_jwt(public: Path, header: str) -> dict[str, Any]:
    """The auth.proxy_jwt section that trusts what `_assertion` signs, read from `header`."""
    return {
        "enabled": True,
        "header": header,
        "public_key_file": str(public),
        "issuer": "https://sso.example",
        "audience": "novnc-gateway",
    }


async def test_signed_proxy_assertion(
    gateways: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, public = _es256_pair(tmp_path)

    def tweak(data: dict[str, Any]) -> None:
        data["auth"]["proxy_jwt"] = _proxy_jwt(public, "X-Pomerium-Jwt-Assertion")
        data["policy"]["rules"].append({"name": "sso-ops", "groups": ["sso-ops"], "permission": "control"})

    gateway = await gateways(tweak)
    header = "X-Pomerium-Jwt-Assertion"
    good = _assertion(key, email="erin@example.com", groups=["sso-ops"])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(gateway.url + "/api/me", headers={header: good}) as response:
            assert response.status == 200
            me = await response.json()
        assert (me["user"], me["method"], me["groups"]) == ("erin@example.com", "proxy-jwt", ["sso-ops"])
        async with http.get(gateway.url + "/api/servers", headers={header: good}) as response:
            assert len((await response.json())["servers"]) == 4
    caplog.set_level(logging.WARNING, logger="gateway.web")
    bad_cases = {
        "wrong audience": _assertion(key, email="e@x", aud="other"),
        "expired": _assertion(key, email="e@x", exp=int(time.time()) - 600),
        "wrong issuer": _assertion(key, email="e@x", iss="https://evil.example"),
        "alg none": jwt.encode({"email": "e@x", "aud": "novnc-gateway"}, None, algorithm="none"),
    }
    for label, token in bad_cases.items():
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
            http.get(gateway.url + "/api/me", headers={header: token}) as response,
        ):
            assert response.status == 401, label
            assert (await response.json())["reason"] == "proxy_refused", label
    refusals = [r.getMessage() for r in caplog.records if "signed identity header refused" in r.getMessage()]
    assert len(refusals) == len(bad_cases)


async def test_bearer_assertion_signs_in_through_the_middleware(
    gateways: Callable[..., Any], tmp_path: Path
) -> None:
    """oauth2-proxy's --pass-authorization-header form: the assertion arrives as `Authorization: Bearer`."""
    key, public = _es256_pair(tmp_path)

    def tweak(data: dict[str, Any]) -> None:
        data["auth"]["proxy_jwt"] = _proxy_jwt(public, "Authorization")

    gateway = await gateways(tweak)
    good = _assertion(key, email="erin@example.com", groups=["sso-ops"])
    foreign = _assertion(key, email="erin@example.com", aud="another-app")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for scheme in ("Bearer", "bearer"):
            headers = {"Authorization": f"{scheme} {good}"}
            async with http.get(gateway.url + "/api/me", headers=headers) as response:
                assert response.status == 200, scheme
                me = await response.json()
            assert (me["user"], me["method"]) == ("erin@example.com", "proxy-jwt")
        refused = {"Authorization": f"Bearer {foreign}"}
        async with http.get(gateway.url + "/api/me", headers=refused) as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "proxy_refused"


async def test_plain_identity_headers_only_from_trusted_proxies(
    gateways: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    def trusting(networks: list[str]) -> Callable[[dict[str, Any]], None]:
        def tweak(data: dict[str, Any]) -> None:
            data["auth"]["proxy_headers"] = {"enabled": True, "trusted_networks": networks}

        return tweak

    headers = {"X-Auth-Request-User": "mallory", "X-Auth-Request-Groups": "operators"}
    trusted = await gateways(trusting(["127.0.0.0/8"]))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(trusted.url + "/api/me", headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["user"] == "mallory"
    untrusted = await gateways(trusting(["10.99.0.0/16"]))
    caplog.set_level(logging.WARNING)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(untrusted.url + "/api/me", headers=headers) as response:
            assert response.status == 401
    assert any("spoofed identity header" in r.getMessage() for r in caplog.records)


@pytest.fixture
async def oidc_gateway(gateways: Callable[..., Any], tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """A gateway signing in through a real oidc-provider registered for that gateway's callback."""
    providers: list[Any] = []

    async def start(
        rule: dict[str, Any] | None = None, acr: str | None = None, **oidc: Any
    ) -> tuple[RunningGateway, Any]:
        """`rule`: more settings for the SSO user's rule; `acr`: the class the provider signs in with."""

        def tweak(data: dict[str, Any]) -> None:
            origin = f"http://{data['server']['listen']}"
            provider = start_oidc_provider(
                redirect_uris=[origin + "/auth/oidc/callback"], log_dir=tmp_path, acr=acr
            )
            providers.append(provider)
            data["auth"]["oidc"] = {
                "enabled": True,
                "issuer": provider.issuer,
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
                **oidc,
            }
            sso_rule = {"name": "sso-users", "users": ["alice"], "permission": "control", **(rule or {})}
            data["policy"]["rules"].append(sso_rule)

        gateway = await gateways(tweak)
        return gateway, providers[-1]

    try:
        yield start
    finally:
        for provider in providers:
            provider.stop()


@pytest.mark.browser
async def test_oidc_sign_in_in_chromium_then_console(oidc_gateway: Callable[..., Any]) -> None:
    """The full redirect dance with a real OpenID provider, then a console opened by the SSO user."""
    gateway, provider = await oidc_gateway(
        scopes=["openid", "profile", "email", "groups"], groups_claim="groups"
    )
    async with chromium() as browser:
        context, page, _traffic = await new_page(browser)
        await page.goto(gateway.url + "/login")
        await page.get_by_test_id("login-sso").click()
        await page.wait_for_url(provider.issuer + "/**")
        await page.locator("input[name=login]").fill("alice")
        await page.locator("input[name=password]").fill("any-password")
        await page.locator("button[type=submit]").click()
        consent = page.locator("button[type=submit]")
        if await consent.count() and not page.url.startswith(gateway.url):
            await consent.click()
        await page.wait_for_url(gateway.url + "/servers")
        await expect(page.get_by_test_id("me-user")).to_have_text("alice")
        row = page.get_by_test_id("server-row").filter(has_text="web-01")
        await row.get_by_test_id("server-open").click()
        await expect(page.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=15_000
        )
        await context.close()
    login = await gateway.wait_for_audit("login", method="oidc")
    assert login["user"] == "alice"


async def test_oidc_callback_with_forged_state_is_refused(oidc_gateway: Callable[..., Any]) -> None:
    gateway, _provider = await oidc_gateway()
    operator = Operator(gateway)
    try:
        status, _ = await operator.get("/auth/oidc/start?next=/servers")
        assert status == 302
        status, body = await operator.get("/auth/oidc/callback?code=forged&state=forged")
        assert status == 302
        assert "Traceback" not in str(body)
        failed = await gateway.wait_for_audit("login_failed", method="oidc")
        assert "state" in failed["reason"]
        status, _ = await operator.get("/api/me")
        assert status == 401
    finally:
        await operator.close()


async def test_oidc_discovery_and_jwks_are_fetched_once_not_per_sign_in(
    oidc_gateway: Callable[..., Any],
) -> None:
    """Issue 10 item 12: every start and callback fetched both afresh; now they are cached with a TTL."""
    gateway, provider = await oidc_gateway()
    for _ in range(2):
        operator = Operator(gateway)
        try:
            for _abandoned_then_real in range(2):
                async with operator.http.get(
                    gateway.url + "/auth/oidc/start?next=/servers", allow_redirects=False
                ) as response:
                    assert response.status == 302
                    authorization_url = response.headers["Location"]
            query = await sign_in(authorization_url, redirect_uri=provider.redirect_uri)
            status, _ = await operator.get("/auth/oidc/callback?" + urllib.parse.urlencode(query))
            assert status == 302
            status, me = await operator.get("/api/me")
            assert (status, me["user"]) == (200, "alice")
        finally:
            await operator.close()
    assert provider.requests("/.well-known/openid-configuration") == 1
    assert provider.requests("/jwks") == 1
    assert provider.requests("/token") == 2, "the count is of real traffic: one code exchange per sign-in"


async def test_console_refused_for_user_without_permission(gateways: Callable[..., Any]) -> None:
    def tweak(data: dict[str, Any]) -> None:
        data["auth"]["local"]["users"].append(
            {
                "name": "nobody",
                "password_hash": data["auth"]["local"]["users"][0]["password_hash"],
                "groups": [],
            }
        )

    gateway = await gateways(tweak)
    operator = Operator(gateway)
    try:
        await operator.login("nobody", "demo")
        status, body = await operator.get("/api/servers")
        assert (status, body["servers"]) == (200, [])
        with pytest.raises(ConsoleRefused) as refused:
            await operator.open_console("web-01")
        assert refused.value.code == 4403
        denied = await gateway.wait_for_audit("console_denied")
        assert denied["rule"] is None
    finally:
        await operator.close()


async def oidc_sign_in(operator: Operator, provider: Any, start: str) -> tuple[int, dict[str, str]]:
    """Through the real provider from `start` (a gateway path); the callback's status and query."""
    async with operator.http.get(operator.gateway.url + start, allow_redirects=False) as response:
        assert response.status == 302
        authorization = response.headers["Location"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorization).query))
    callback = await sign_in(authorization, redirect_uri=provider.redirect_uri)
    status, _ = await operator.get("/auth/oidc/callback?" + urllib.parse.urlencode(callback))
    return status, query


async def test_oidc_step_up_asks_the_provider_again_and_checks_auth_time(
    oidc_gateway: Callable[..., Any],
) -> None:
    gateway, provider = await oidc_gateway(rule={"max_auth_age": "10m"})
    operator = Operator(gateway)

    def session() -> SessionData:
        raw = next(c.value for c in operator.http.cookie_jar if c.key == cookie_name(False))
        return gateway.gw.codec.decode(raw, now=time.time())

    try:
        await oidc_sign_in(operator, provider, "/auth/oidc/start?next=/servers")
        # Asked for nothing, the provider does not say when alice authenticated: not enough for control.
        assert session().auth_time is None
        refused = await operator.open_console("web-01")
        assert refused.notices == [{"type": "step_up", "method": "oidc", "max_age": 600, "acr_values": []}]
        assert await refused.recv() is None
        assert refused.close_code == 4407
        assert refused.close_reason == (
            "This console needs a sign-in within the last 10 minutes; sign in again"
        )
        denied = await gateway.wait_for_audit("console_denied", rule="sso-users")
        assert denied["reason"] == refused.close_reason

        path = "/console/demo/" + gateway.cloud.servers[0].id
        status, asked = await oidc_sign_in(operator, provider, f"/auth/oidc/start?next={path}&max_age=600")
        assert (status, asked["max_age"], asked["prompt"]) == (302, "600", "login")
        auth_time = session().auth_time  # from the ID token, checked against max_age by the callback
        assert auth_time is not None and abs(time.time() - auth_time) < 60
        transport = await operator.open_console("web-01")
        assert transport.notices[0]["type"] == "hello" and transport.notices[0]["permission"] == "control"
        await transport.close()
    finally:
        await operator.close()


async def test_oidc_step_up_refuses_a_sign_in_without_the_asked_acr(oidc_gateway: Callable[..., Any]) -> None:
    """The suite's provider authenticates with no acr: a console that wants one is not opened by it."""
    gateway, provider = await oidc_gateway(rule={"acr_values": ["urn:example:mfa"]})
    operator = Operator(gateway)
    try:
        status, asked = await oidc_sign_in(
            operator, provider, "/auth/oidc/start?next=/servers&acr_values=urn:example:mfa"
        )
        assert asked["acr_values"] == "urn:example:mfa"
        failed = await gateway.wait_for_audit("login_failed", method="oidc")
        assert "acr" in failed["reason"]
        status, _ = await operator.get("/api/me")
        assert status == 401
    finally:
        await operator.close()


@pytest.mark.browser
async def test_oidc_step_up_in_chromium_returns_to_the_console(oidc_gateway: Callable[..., Any]) -> None:
    """The console page sends the user through the provider again (prompt=login, max_age) and back to the
    same console, which then opens."""
    gateway, provider = await oidc_gateway(rule={"max_auth_age": "10m"})

    async def provider_login(page: Any) -> None:
        await page.wait_for_url(provider.issuer + "/**")
        await page.locator("input[name=login]").fill("alice")
        await page.locator("input[name=password]").fill("any-password")
        await page.locator("button[type=submit]").click()
        consent = page.locator("button[type=submit]")
        if await consent.count() and not page.url.startswith(gateway.url):
            await consent.click()

    async with chromium() as browser:
        context, page, _traffic = await new_page(browser)
        await page.goto(gateway.url + "/login")
        await page.get_by_test_id("login-sso").click()
        await provider_login(page)
        await page.wait_for_url(gateway.url + "/servers")
        console = f"{gateway.url}/console/demo/{gateway.cloud.servers[0].id}"
        await page.goto(console)
        await provider_login(page)  # the step-up: the provider asks for the password again
        await page.wait_for_url(console)
        await expect(page.get_by_test_id("console-status")).to_have_attribute(
            "data-state", "connected", timeout=15_000
        )
        await context.close()
    opened = await gateway.wait_for_audit("console_opened", rule="sso-users")
    assert opened["permission"] == "control"
    assert (await gateway.wait_for_audit("console_denied", rule="sso-users"))["reason"].startswith(
        "This console needs a sign-in within the last 10 minutes"
    )


async def test_step_up_reads_auth_time_and_acr_from_the_proxy_assertion(
    gateways: Callable[..., Any], tmp_path: Path
) -> None:
    key, public = _es256_pair(tmp_path)
    header = "X-Pomerium-Jwt-Assertion"

    def tweak(data: dict[str, Any]) -> None:
        data["auth"]["proxy_jwt"] = _proxy_jwt(public, header)
        data["policy"]["rules"].append(
            {
                "name": "sso-ops-fresh",
                "groups": ["sso-ops"],
                "permission": "control",
                "max_auth_age": "10m",
                "acr_values": ["urn:example:mfa"],
            }
        )

    gateway = await gateways(tweak)
    now = int(time.time())
    cases = [
        ({"auth_time": now - 30, "acr": "urn:example:mfa"}, None),
        ({"auth_time": now - 3600, "acr": "urn:example:mfa"}, "within the last 10 minutes"),
        ({"auth_time": now - 30, "acr": "urn:example:pwd"}, "stronger sign-in (urn:example:mfa)"),
        ({}, "within the last 10 minutes"),
    ]
    for claims, refused in cases:
        operator = Operator(gateway)
        try:
            asserted = _assertion(key, email="erin@example.com", groups=["sso-ops"], **claims)
            operator.http.headers[header] = asserted
            transport = await operator.open_console("web-01")
            if refused is None:
                assert transport.notices[0]["permission"] == "control", claims
            else:
                assert transport.notices[0]["type"] == "step_up", claims
                assert await transport.recv() is None
                assert transport.close_code == 4407
                assert refused in (transport.close_reason or "")
                assert "the sign-in proxy does not vouch for that" in (transport.close_reason or "")
            await transport.close()
        finally:
            await operator.close()


async def test_oidc_step_up_accepts_the_acr_the_provider_confirms(oidc_gateway: Callable[..., Any]) -> None:
    """A provider that signs in with the asked class (the suite's oidc-provider, stamping acr): the ID
    token's acr is checked, kept in the session, and the console that wants it opens."""
    gateway, provider = await oidc_gateway(rule={"acr_values": ["urn:example:mfa"]}, acr="urn:example:mfa")
    operator = Operator(gateway)
    try:
        await oidc_sign_in(operator, provider, "/auth/oidc/start?next=/servers")
        refused = await operator.open_console("web-01")  # no class asked for at sign-in: none is known
        assert refused.notices[0]["acr_values"] == ["urn:example:mfa"]
        status, asked = await oidc_sign_in(
            operator, provider, "/auth/oidc/start?next=/servers&acr_values=urn:example:mfa"
        )
        assert (status, asked["acr_values"]) == (302, "urn:example:mfa")
        raw = next(c.value for c in operator.http.cookie_jar if c.key == cookie_name(False))
        assert gateway.gw.codec.decode(raw, now=time.time()).acr == "urn:example:mfa"
        transport = await operator.open_console("web-01")
        assert transport.notices[0]["type"] == "hello" and transport.notices[0]["permission"] == "control"
        await transport.close()
    finally:
        await operator.close()
