"""Test helpers: run the real oidc-provider (tests/support/oidc_provider.mjs) and sign in through it.

`start_oidc_provider()` starts node, waits for the issuer line on stdout (no sleeps), and returns a handle
whose `stop()` ends the process by PID. `sign_in()` plays the browser: follows redirects and submits the
devInteractions login and consent forms, returning the query the provider sends to the redirect URI.
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import aiohttp

NODE = os.environ.get("NODE", "/usr/bin/node")
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OIDCProvider:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def requests(self, path: str) -> int:
        """How many requests for `path` the provider has served (it logs each path, without the query)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if line.startswith("request ") and line.rsplit(" ", 1)[-1] == path)

    def stop(self, timeout: float = 5.0) -> None:
        """End the node process we started, by its PID (SIGTERM, then SIGKILL)."""
        proc = self.process
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def start_oidc_provider(
    *,
    redirect_uris: Sequence[str],
    post_logout_redirect_uris: Sequence[str] = (),
    client_id: str = "novnc-gateway",
    client_secret: str | None = None,
    id_token_alg: str = "RS256",  # noqa: S107 (an algorithm name, not a password)
    auth_method: str = "client_secret_basic",
    claims_in_userinfo_only: bool = False,
    acr: str | None = None,  # the authentication class every sign-in gets (ID token acr)
    port: int = 0,
    timeout: float = 20.0,
    log_dir: str | os.PathLike[str] | None = None,
) -> OIDCProvider:
    secret = client_secret or secrets.token_urlsafe(24)
    # --name=value throughout: a value may begin with "-" (token_urlsafe does, one time in 64), which
    # node's parseArgs takes for an option when it stands apart.
    argv = [
        NODE,
        str(SCRIPT),
        f"--port={port}",
        f"--client-id={client_id}",
        f"--client-secret={secret}",
        f"--id-token-alg={id_token_alg}",
        f"--auth-method={auth_method}",
        *(f"--redirect-uri={uri}" for uri in redirect_uris),
        *(f"--post-logout-redirect-uri={uri}" for uri in post_logout_redirect_uris),
    ]
    if claims_in_userinfo_only:
        argv.append("--claims-in-userinfo-only")
    if acr is not None:
        argv.append(f"--acr={acr}")
    fd, name = tempfile.mkstemp(prefix="oidc-provider-", suffix=".log", dir=log_dir)
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log:
        # stdin stays open: the script exits when it closes, so a killed test run leaves no orphan.
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    handle = OIDCProvider(
        issuer="",
        client_id=client_id,
        client_secret=secret,
        redirect_uris=tuple(redirect_uris),
        post_logout_redirect_uris=tuple(post_logout_redirect_uris),
        process=proc,
        log_path=log_path,
    )
    try:
        handle.issuer = _wait_for_issuer(proc, timeout)
    except BaseException:
        handle.stop()
        raise RuntimeError(f"oidc-provider did not start: {handle.log_tail()}") from None
    return handle


def _wait_for_issuer(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no issuer line from oidc-provider")
            if not selector.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"oidc-provider exited with {proc.wait()}")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode().strip()
    if not line.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"unexpected first line from oidc-provider: {line!r}")
    return line


class _FormParser(HTMLParser):
    """Collects <form> elements with their inputs (enough for oidc-provider's devInteractions pages)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(
                {"action": values.get("action", ""), "method": values.get("method", "get"), "fields": {}}
            )
        elif tag == "input" and self.forms and values.get("name"):
            fields = self.forms[-1]["fields"]
            assert isinstance(fields, dict)
            fields[values["name"]] = values.get("value", "")


def parse_forms(html: str) -> list[dict[str, object]]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


async def sign_in(
    authorization_url: str,
    *,
    redirect_uri: str,
    login: str = "alice",
    password: str = "any-password",  # noqa: S107 (devInteractions accept any password)
    max_steps: int = 20,
) -> dict[str, str]:
    """Drive the provider like a browser; return the query parameters delivered to `redirect_uri`."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP-address host need unsafe=True
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        url, method, form = authorization_url, "GET", None
        for _ in range(max_steps):
            async with browser.request(method, url, data=form, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    url, method, form = urllib.parse.urljoin(url, resp.headers["Location"]), "GET", None
                    if url.startswith(redirect_uri):
                        query = urllib.parse.urlsplit(url).query
                        return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                    continue
                body = await resp.text()
                if resp.status != 200:
                    raise AssertionError(f"provider answered {resp.status} at {url}: {body[:500]}")
            forms = parse_forms(body)
            if not forms:
                raise AssertionError(f"no form on the provider page {url}: {body[:500]}")
            chosen = forms[0]
            fields = dict(chosen["fields"])  # type: ignore[call-overload]
            if fields.get("prompt") == "login":
                fields["login"], fields["password"] = login, password
            url = urllib.parse.urljoin(url, str(chosen["action"]))
            method, form = str(chosen["method"]).upper(), fields
        raise AssertionError("sign-in did not reach the redirect URI")
