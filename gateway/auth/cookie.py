"""The browser's single session cookie: the whole session, encrypted and authenticated with AES-GCM.

No server-side session store is needed, so any gateway replica can read any cookie. Key rotation: keys[0]
encrypts, every configured key decrypts; the cookie names its key by an id derived from the key (a hash),
so a cookie from a removed key is reported precisely instead of as tampering.

Wire format (base64url, no padding) of: version byte | key id (8) | nonce (12) | ciphertext+tag.
Random 96-bit nonces are safe far beyond any realistic number of cookies issued under one key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .identity import AuthError, Identity

COOKIE_NAME = "__Host-novnc-gw"
INSECURE_COOKIE_NAME = "novnc-gw"
KEY_BYTES = 32
REFRESH_INTERVAL = 60.0
# Browsers cap name=value+attributes near 4096 bytes; keep the value well under it.
MAX_COOKIE_VALUE = 3800

_VERSION = 1
_KID_BYTES = 8
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER = 1 + _KID_BYTES + _NONCE_BYTES
_AAD_LABEL = b"novnc-gateway session v1"
_EXPIRED_MESSAGE = "Your session has expired. Please sign in again."


class SessionError(AuthError):
    """The cookie cannot be used; `reason` says exactly why (malformed, tampered, unknown key, expired)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, _EXPIRED_MESSAGE)


@dataclass(slots=True)
class SessionData:
    sid: str
    user: str
    groups: tuple[str, ...]
    email: str | None
    method: str
    created: float
    last_seen: float
    csrf: str = field(repr=False)
    id_token_hint: str | None = field(default=None, repr=False)
    # When the user last proved who they are, and how strongly (OIDC auth_time and acr), for rules that
    # want a recent or strong sign-in for control. None: not known (the provider did not say).
    auth_time: float | None = None
    acr: str | None = None
    # Set by decode when an older (still configured) key was used, so the cookie gets re-issued under keys[0].
    stale_key: bool = field(default=False, repr=False, compare=False)

    @property
    def identity(self) -> Identity:
        return Identity(user=self.user, groups=self.groups, email=self.email, method=self.method)


def key_id(key: bytes) -> bytes:
    """A short public identifier of a key: a hash, so the cookie never carries key material."""
    return hashlib.sha256(b"novnc-gateway session key id\x00" + key).digest()[:_KID_BYTES]


def generate_key() -> str:
    """A fresh 32-byte key, base64url without padding (what `novnc-gateway keygen` prints)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).rstrip(b"=").decode("ascii")


def parse_key(text: str) -> bytes:
    """Accept base64url or standard base64 (padding optional) of exactly 32 bytes.

    Errors name the problem but never echo the text, which is a secret.
    """
    cleaned = "".join(text.split())
    if not cleaned:
        raise ValueError("session key is empty")
    cleaned = cleaned.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("session key is not valid base64/base64url") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"session key must decode to {KEY_BYTES} bytes, got {len(raw)} bytes")
    return raw


def cookie_name(secure: bool) -> str:
    """`__Host-` requires Secure; browsers drop such cookies over plain http, so insecure mode renames it."""
    return COOKIE_NAME if secure else INSECURE_COOKIE_NAME


def cookie_attributes(secure: bool) -> dict[str, object]:
    """Keyword arguments for aiohttp's `response.set_cookie` (no Domain: required by `__Host-`)."""
    return {"httponly": True, "secure": secure, "samesite": "Lax", "path": "/"}


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class SessionCodec:
    def __init__(self, keys: Sequence[bytes], *, idle_lifetime: float, absolute_lifetime: float) -> None:
        if not keys:
            raise ValueError("at least one session key is required")
        for index, key in enumerate(keys):
            if len(key) != KEY_BYTES:
                raise ValueError(f"session key #{index} must be {KEY_BYTES} bytes, got {len(key)}")
        if idle_lifetime <= 0 or absolute_lifetime <= 0:
            raise ValueError("session lifetimes must be positive")
        self._primary_kid = key_id(keys[0])
        self._primary = AESGCM(keys[0])
        self._by_kid: dict[bytes, AESGCM] = {}
        for key in keys:
            self._by_kid.setdefault(key_id(key), AESGCM(key))
        self.idle_lifetime = float(idle_lifetime)
        self.absolute_lifetime = float(absolute_lifetime)

    def __repr__(self) -> str:
        return (
            f"SessionCodec(keys={len(self._by_kid)}, idle={self.idle_lifetime}, "
            f"absolute={self.absolute_lifetime})"
        )

    def new_session(
        self, identity: Identity, *, now: float, auth_time: float | None = None, acr: str | None = None
    ) -> SessionData:
        """`auth_time`: when the user authenticated. A local sign-in checked the password just now; OIDC
        passes what the ID token says, which may be earlier (the provider's own session); None: unknown."""
        return SessionData(
            auth_time=now if auth_time is None and identity.method == "local" else auth_time,
            acr=acr,
            sid=secrets.token_urlsafe(16),
            user=identity.user,
            groups=tuple(identity.groups),
            email=identity.email,
            method=identity.method,
            created=now,
            last_seen=now,
            csrf=secrets.token_urlsafe(32),
        )

    def touch(self, data: SessionData, *, now: float) -> SessionData:
        """A copy seen at `now` (re-encode it to slide the idle window)."""
        return dataclasses.replace(data, last_seen=now, stale_key=False)

    def needs_refresh(self, data: SessionData, *, now: float) -> bool:
        """Re-issue at most once a minute to slide the idle window, and at once after a key rotation."""
        return data.stale_key or now - data.last_seen >= REFRESH_INTERVAL

    def encode(self, data: SessionData) -> str:
        payload = {
            "s": data.sid,
            "u": data.user,
            "g": list(data.groups),
            "e": data.email,
            "m": data.method,
            "c": data.created,
            "l": data.last_seen,
            "x": data.csrf,
        }
        if data.auth_time is not None:
            payload["a"] = data.auth_time
        if data.acr is not None:
            payload["r"] = data.acr
        if data.id_token_hint:
            value = self._seal({**payload, "h": data.id_token_hint})
            if len(value) <= MAX_COOKIE_VALUE:
                return value
            # The hint only makes logout nicer; drop it rather than the session.
        value = self._seal(payload)
        if len(value) > MAX_COOKIE_VALUE:
            raise SessionError(
                f"session does not fit in a cookie ({len(value)} bytes, {len(data.groups)} groups); "
                "reduce the groups sent by the identity provider"
            )
        return value

    def _seal(self, payload: dict[str, object], label: bytes = _AAD_LABEL) -> str:
        plain = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        header = bytes([_VERSION]) + self._primary_kid
        sealed = self._primary.encrypt(nonce, plain, label + header)
        return _b64encode(header + nonce + sealed)

    def _open(self, value: str, label: bytes = _AAD_LABEL) -> tuple[bytes, bytes]:
        raw = self._unwrap(value)
        header, nonce, sealed = raw[: 1 + _KID_BYTES], raw[1 + _KID_BYTES : _HEADER], raw[_HEADER:]
        kid = header[1:]
        aead = self._by_kid.get(kid)
        if aead is None:
            raise SessionError("session cookie signed with a key that is no longer configured")
        try:
            return aead.decrypt(nonce, sealed, label + header), kid
        except InvalidTag:
            raise SessionError("session cookie tampered (authentication failed)") from None

    def seal(self, payload: dict[str, object], *, purpose: str, now: float) -> str:
        """Seal a short-lived value (e.g. a pending OIDC login) under the session keys.

        The purpose is bound into the authenticated data, so such a value can never pass as a session.
        The payload is one member of an envelope (`{"t": issued, "p": payload}`), never merged into it,
        so no key of the caller's can collide with the envelope's own fields. Values sealed by releases
        before this envelope (pending OIDC sign-ins, at most 10 minutes old) read as malformed: that
        sign-in starts again; session cookies do not use sealing and are unaffected.
        """
        return self._seal({"t": now, "p": payload}, _AAD_LABEL + b"/" + purpose.encode())

    def unseal(self, value: str, *, purpose: str, max_age: float, now: float) -> dict[str, object]:
        plain, _kid = self._open(value, _AAD_LABEL + b"/" + purpose.encode())
        try:
            envelope = json.loads(plain)
            issued, payload = float(envelope["t"]), envelope["p"]
            if not isinstance(payload, dict):
                raise TypeError("payload")
        except (ValueError, KeyError, TypeError):
            raise SessionError(f"{purpose} cookie malformed (authenticated but unreadable payload)") from None
        if now - issued > max_age:
            raise SessionError(f"{purpose} cookie expired")
        return payload

    def decode(self, value: str, *, now: float) -> SessionData:
        plain, kid = self._open(value)
        data = self._parse(plain)
        data.stale_key = kid != self._primary_kid
        if now - data.created > self.absolute_lifetime:
            raise SessionError("session absolute expired")
        if now - data.last_seen > self.idle_lifetime:
            raise SessionError("session idle expired")
        return data

    @staticmethod
    def _unwrap(value: str) -> bytes:
        if not value or len(value) > MAX_COOKIE_VALUE * 2 or not value.isascii():
            raise SessionError("session cookie malformed (empty, oversize or non-ASCII)")
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise SessionError("session cookie malformed (not base64url)") from None
        # Reject non-canonical encodings so that every character of the cookie is covered by the tag.
        if _b64encode(raw) != value:
            raise SessionError("session cookie malformed (not canonical base64url)")
        if len(raw) < _HEADER + _TAG_BYTES:
            raise SessionError("session cookie malformed (too short)")
        if raw[0] != _VERSION:
            raise SessionError(f"session cookie malformed (unknown format version {raw[0]})")
        return raw

    @staticmethod
    def _parse(plain: bytes) -> SessionData:
        try:
            obj = json.loads(plain)
            groups = obj["g"]
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise TypeError("groups")
            data = SessionData(
                sid=str(obj["s"]),
                user=str(obj["u"]),
                groups=tuple(groups),
                email=obj["e"] if isinstance(obj["e"], str) else None,
                method=str(obj["m"]),
                created=float(obj["c"]),
                last_seen=float(obj["l"]),
                csrf=str(obj["x"]),
                id_token_hint=obj.get("h") if isinstance(obj.get("h"), str) else None,
                auth_time=float(obj["a"]) if "a" in obj else None,
                acr=obj["r"] if isinstance(obj.get("r"), str) else None,
            )
        except (ValueError, KeyError, TypeError):
            raise SessionError("session cookie malformed (authenticated but unreadable payload)") from None
        return data
