"""The gateway's parts, built once from the config and shared by every handler.

Kept apart from app.py so that a config reload can rebuild what changes (policy, users, limits) while the
long-lived parts (HTTP clients, the state store, live consoles) stay.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp

from gateway.audit import AuditLog
from gateway.auth.assertion import AssertionVerifier
from gateway.auth.cookie import SessionCodec, parse_key
from gateway.auth.identity import Identity
from gateway.auth.jwks import JWKSCache
from gateway.auth.oidc import OIDCClient, OIDCSettings
from gateway.auth.passwords import PasswordPool
from gateway.auth.proxy_headers import TrustedHeaders
from gateway.auth.throttle import SignInThrottle
from gateway.clouds.base import CloudProvider
from gateway.config import GatewayConfig
from gateway.consoles.codes import CLOSE_POLICY, CLOSE_SIGNIN_EXPIRED
from gateway.consoles.keepalive import KeepAlive
from gateway.consoles.registry import ConsoleRegistry, LiveConsole
from gateway.metrics import Metrics
from gateway.policy import Permission, Policy
from gateway.recording.format import Keyring
from gateway.recording.recorder import RecordingSettings
from gateway.recording.store import RecordingStore
from gateway.state.base import ConsoleRecord, StateStore
from gateway.upstream import HostAllowlist, build_ssl_context
from gateway.web.http import IPNetwork, parse_networks

log = logging.getLogger("gateway")

REASON_REMOVED = "Your sign-in is no longer valid; the console was closed"


def _secret(value: object) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)  # type: ignore[union-attr]


@dataclass
class Gateway:
    """Everything a request handler needs; `apply_config()` swaps the parts a SIGHUP may change."""

    config: GatewayConfig
    store: StateStore
    audit: AuditLog
    metrics: Metrics
    http: aiohttp.ClientSession  # identity providers
    upstream_http: aiohttp.ClientSession  # console proxies (upstream.upstream_session)
    registry: ConsoleRegistry
    clouds: dict[str, CloudProvider]
    replica: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )
    draining: bool = False
    last_cloud_ok: float = 0.0
    started: float = field(default_factory=time.time)
    passwords: PasswordPool = field(default_factory=PasswordPool)
    recordings: RecordingStore | None = None  # where consoles are recorded and reviewed (None: no keys)
    keepalive: KeepAlive = field(default_factory=KeepAlive)  # pings every console's sockets, one timer

    # Rebuilt from config by `apply_config`.
    policy: Policy = field(init=False)
    codec: SessionCodec = field(init=False)
    throttle: SignInThrottle = field(init=False)
    allowlist: HostAllowlist = field(init=False)
    upstream_ssl: ssl.SSLContext | None = field(init=False)
    origins: list[str] = field(init=False)
    trusted_proxies: list[IPNetwork] = field(init=False)
    oidc: OIDCClient | None = field(init=False, default=None)
    assertion: AssertionVerifier | None = field(init=False, default=None)
    trusted_headers: TrustedHeaders | None = field(init=False, default=None)
    local_users: dict[str, tuple[str, tuple[str, ...]]] = field(init=False, default_factory=dict)
    recording_keys: Keyring | None = field(init=False, default=None)  # seal, verify, encrypt recordings
    recording: RecordingSettings | None = field(init=False, default=None)  # what new recordings use

    def __post_init__(self) -> None:
        self.apply_config(self.config)
        self.registry.on_identity = self.identity_changed
        self.registry.on_grants_ended = self.grants_ended

    def apply_config(self, config: GatewayConfig) -> None:
        """Build every config-derived part first, then swap them in together (no half-applied reload)."""
        recording = config.recording
        policy = Policy(config.policy, record=recording.default, record_input=recording.record_input)
        keys = None
        if recording.hmac_keys:
            keys = Keyring.from_secrets(
                [_secret(k) for k in recording.hmac_keys], [_secret(k) for k in recording.encryption_keys]
            )
        codec = SessionCodec(
            [parse_key(_secret(k)) for k in config.session.keys],
            idle_lifetime=config.session.idle_lifetime,
            absolute_lifetime=config.session.absolute_lifetime,
        )
        local = config.auth.local
        throttle = SignInThrottle(
            self.store,
            per_user=local.throttle_per_user,
            per_address=local.throttle_per_address,
            window=local.throttle_window,
        )
        up = config.upstream
        allowlist = HostAllowlist(up.allowed_hosts)
        upstream_ssl = build_ssl_context(
            verify=up.verify_tls, ca_file=str(up.ca_file) if up.ca_file else None
        )
        oidc = None
        if config.auth.oidc.enabled:
            o = config.auth.oidc
            oidc = OIDCClient(
                OIDCSettings(
                    issuer=o.issuer,
                    client_id=o.client_id,
                    client_secret=_secret(o.client_secret),
                    redirect_uri=o.redirect_uri or f"{config.server.origins()[0]}/auth/oidc/callback",
                    scopes=tuple(o.scopes),
                    username_claim=o.username_claim,
                    email_claim=o.email_claim,
                    groups_claim=o.groups_claim,
                    clock_skew=o.clock_skew,
                    ca_file=str(o.ca_file) if o.ca_file else None,
                ),
                self.http,
            )
        assertion = None
        if config.auth.proxy_jwt.enabled:
            pj = config.auth.proxy_jwt
            assertion = AssertionVerifier(
                header=pj.header,
                issuer=pj.issuer,
                audience=pj.audience,
                jwks=JWKSCache(pj.jwks_url, self.http) if pj.jwks_url else None,
                public_key_pem=pj.public_key_file.read_text() if pj.public_key_file else None,
                algorithms=tuple(pj.algorithms),
                username_claim=pj.username_claim,
                email_claim=pj.email_claim,
                groups_claim=pj.groups_claim,
                clock_skew=pj.clock_skew,
            )
        headers = None
        ph = config.auth.proxy_headers
        if ph.enabled:
            headers = TrustedHeaders(
                networks=ph.trusted_networks,
                user_header=ph.user_header,
                email_header=ph.email_header,
                groups_header=ph.groups_header,
                groups_separator=ph.groups_separator,
            )
        users = (
            {u.name: (_secret(u.password_hash), tuple(u.groups)) for u in local.users}
            if local.enabled
            else {}
        )

        self.config = config
        self.policy = policy
        self.codec = codec
        self.throttle = throttle
        self.allowlist = allowlist
        self.upstream_ssl = upstream_ssl
        self.origins = config.server.origins()
        self.trusted_proxies = parse_networks(config.server.trusted_proxies)
        self.oidc = oidc
        self.assertion = assertion
        self.trusted_headers = headers
        self.local_users = users
        self.recording_keys = keys
        self.recording = (
            None
            if keys is None
            else RecordingSettings(
                keys,
                segment_seconds=recording.segment_seconds,
                segment_bytes=recording.segment_bytes,
                max_pending=recording.max_pending,
            )
        )

    def current_groups(self, user: str, method: str, last_known: Sequence[str]) -> tuple[str, ...] | None:
        """The groups that govern `user` now. A local user's come from the running config (None once the
        user is removed, or local sign-in is off); anyone else's are what their identity source last
        asserted (`last_known`), since the gateway learns a change only when the source says so."""
        if method != "local":
            return tuple(last_known)
        entry = self.local_users.get(user)
        return None if entry is None else entry[1]

    def redecide(
        self,
        groups_of: Callable[[ConsoleRecord], Sequence[str] | None],
        consoles: Iterable[LiveConsole] | None = None,
    ) -> int:
        """Re-decide live consoles (all of this replica's by default) with each user's current groups and
        the current policy.

        The one mechanism behind a reload and an identity change: `groups_of` says a console's user's
        groups now (None: the user no longer exists, the console closes with 4004). A console whose
        permission went down closes with 4003 and the reason; the page offers to reopen, which gives the
        new permission (view, or a refusal). A live relay is not switched to view-only in place: the page
        and the RFB stream were set up for control (cursor, keyboard capture, clipboard), and a clean reopen
        is easier to reason about than a mid-stream change of the filter. Returns how many were closed.
        """
        rank = {Permission.NONE: 0, Permission.VIEW: 1, Permission.CONTROL: 2}
        closed = 0
        for live in list(self.registry.local.values() if consoles is None else consoles):
            if live.server is None or live.closed_by is not None:
                continue
            record = live.record
            groups = groups_of(record)
            if groups is None:
                live.terminate(CLOSE_SIGNIN_EXPIRED, REASON_REMOVED, "user_removed")
                closed += 1
                continue
            record.groups = list(groups)
            grants = live.grants(time.time())
            if record.watching:  # an observer's console: what counts is whether they may still watch
                if not self.policy.may_join(record.user, groups, live.server, grants).allowed:
                    live.terminate(CLOSE_POLICY, "You may no longer watch this console", "policy")
                    closed += 1
                continue
            decision = self.policy.decide(record.user, groups, live.server, grants)
            permission = decision.permission
            moderation = list(decision.demands.moderation.groups if decision.demands.moderation else ())
            if (
                permission is Permission.CONTROL
                and record.permission == "control"
                and moderation != record.moderation
            ):
                # Moderation added, removed or given to other groups: the console reopens under the new one.
                live.terminate(CLOSE_POLICY, "The moderation this console needs changed; reopen it", "policy")
                closed += 1
            elif rank[permission] < rank[Permission(record.permission)]:
                live.terminate(
                    CLOSE_POLICY,
                    "Your access to this server was withdrawn"
                    if permission is Permission.NONE
                    else "Your permission on this server changed; reopen the console",
                    "policy",
                )
                closed += 1
        return closed

    def grants_ended(self, consoles: list[LiveConsole]) -> int:
        """Consoles opened through an access grant that has now ended: re-decided without it (downgraded
        consoles close with 4003 and the reason, like any other re-decision)."""
        closed = self.redecide(lambda record: record.groups, consoles)
        if closed:
            log.info("%d console(s) closed: their access grant ended", closed)
        return closed

    def identity_changed(self, identity: Identity) -> int:
        """Re-decide the live consoles of `identity`'s user (signed in by its method) with its groups."""
        theirs = [
            live
            for live in self.registry.local.values()
            if (live.record.user, live.record.method) == (identity.user, identity.method)
        ]
        closed = self.redecide(lambda _record: identity.groups, theirs)
        if closed:
            log.info("%d console(s) of %s closed: their groups changed", closed, identity.user)
        return closed
