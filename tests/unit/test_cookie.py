from __future__ import annotations

import base64
import os

import pytest

from gateway.auth.cookie import (
    _AAD_LABEL,
    COOKIE_NAME,
    MAX_COOKIE_VALUE,
    SessionCodec,
    SessionData,
    SessionError,
    cookie_attributes,
    cookie_name,
    generate_key,
    key_id,
    parse_key,
)
from gateway.auth.identity import Identity

NOW = 1_700_000_000.0
ALICE = Identity(user="alice", groups=("ops", "console-users"), email="alice@example.test", method="oidc")


def codec(*keys: bytes, idle: float = 900, absolute: float = 8 * 3600) -> SessionCodec:
    return SessionCodec(list(keys), idle_lifetime=idle, absolute_lifetime=absolute)


def raw(value: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def wrap(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_keeps_every_field() -> None:
    c = codec(os.urandom(32))
    data = c.new_session(ALICE, now=NOW)
    data.id_token_hint = "header.payload.signature"
    value = c.encode(data)
    assert value.isascii() and all(ch.isalnum() or ch in "-_" for ch in value)
    back = c.decode(value, now=NOW + 10)
    assert back == data
    assert back.identity == ALICE
    assert back.csrf == data.csrf and len(data.csrf) >= 32
    assert back.id_token_hint == "header.payload.signature"


def test_each_encoding_differs_and_secrets_stay_out_of_repr() -> None:
    key = os.urandom(32)
    c = codec(key)
    data = c.new_session(ALICE, now=NOW)
    assert c.encode(data) != c.encode(data)  # fresh nonce each time
    text = repr(data) + repr(c)
    assert data.csrf not in text and key.hex() not in text
    assert c.new_session(ALICE, now=NOW).sid != data.sid


def test_every_byte_of_the_cookie_is_authenticated() -> None:
    c = codec(os.urandom(32))
    value = c.encode(c.new_session(ALICE, now=NOW))
    original = raw(value)
    for index in range(len(original)):
        tampered = bytearray(original)
        tampered[index] ^= 0x01
        with pytest.raises(SessionError) as caught:
            c.decode(wrap(bytes(tampered)), now=NOW)
        if index == 0:
            assert "unknown format version" in caught.value.reason
        elif index < 9:  # the key id: indistinguishable from a key that was removed
            assert "no longer configured" in caught.value.reason
        else:
            assert caught.value.reason == "session cookie tampered (authentication failed)"


def test_text_level_tampering_is_rejected() -> None:
    c = codec(os.urandom(32))
    value = c.encode(c.new_session(ALICE, now=NOW))
    for index in (0, len(value) // 2, len(value) - 1):
        replacement = "A" if value[index] != "A" else "B"
        with pytest.raises(SessionError):
            c.decode(value[:index] + replacement + value[index + 1 :], now=NOW)
    for bad, reason in [
        ("", "empty"),
        ("a b", "non-ASCII|not base64url"),
        ("é", "non-ASCII"),
        ("abcd", "too short"),
        (value + "=", "not base64url|canonical"),
    ]:
        with pytest.raises(SessionError, match=reason):
            c.decode(bad, now=NOW)


def test_truncated_cookie_is_malformed_or_tampered() -> None:
    c = codec(os.urandom(32))
    value = c.encode(c.new_session(ALICE, now=NOW))
    with pytest.raises(SessionError, match=r"malformed|tampered"):
        c.decode(value[:-4], now=NOW)


def test_key_rotation() -> None:
    old, new = os.urandom(32), os.urandom(32)
    old_cookie = codec(old).encode(codec(old).new_session(ALICE, now=NOW))
    # New key first: old cookies still decode, flagged for re-issue under the new key.
    rotated = codec(new, old)
    data = rotated.decode(old_cookie, now=NOW + 1)
    assert data.user == "alice" and data.stale_key
    assert rotated.needs_refresh(data, now=NOW + 1)
    reissued = rotated.encode(rotated.touch(data, now=NOW + 1))
    assert raw(reissued)[1:9] == key_id(new)
    assert not codec(new).decode(reissued, now=NOW + 2).stale_key
    # Old key removed: the precise reason.
    with pytest.raises(SessionError, match=r"signed with a key that is no longer configured"):
        codec(new).decode(old_cookie, now=NOW + 1)


def test_key_id_is_not_the_key() -> None:
    key = os.urandom(32)
    value = codec(key).encode(codec(key).new_session(ALICE, now=NOW))
    assert key not in raw(value)
    assert key[:8] != key_id(key)


def test_idle_and_absolute_expiry() -> None:
    c = codec(os.urandom(32), idle=600, absolute=3600)
    data = c.new_session(ALICE, now=NOW)
    value = c.encode(data)
    assert c.decode(value, now=NOW + 600).user == "alice"
    with pytest.raises(SessionError, match=r"^session idle expired$"):
        c.decode(value, now=NOW + 601)
    # Kept alive by activity, the session still ends at the absolute lifetime.
    busy = c.encode(c.touch(data, now=NOW + 3500))
    assert c.decode(busy, now=NOW + 3600).user == "alice"
    with pytest.raises(SessionError, match=r"^session absolute expired$") as caught:
        c.decode(busy, now=NOW + 3601)
    assert "sign in again" in caught.value.user_message


def test_needs_refresh_after_a_minute() -> None:
    c = codec(os.urandom(32))
    data = c.new_session(ALICE, now=NOW)
    assert not c.needs_refresh(data, now=NOW + 59)
    assert c.needs_refresh(data, now=NOW + 60)
    assert not c.needs_refresh(c.touch(data, now=NOW + 60), now=NOW + 61)


def test_size_bound_drops_the_hint_then_refuses() -> None:
    c = codec(os.urandom(32))
    data = c.new_session(Identity(user="alice", groups=tuple(f"group-{i:03d}" for i in range(100))), now=NOW)
    data.id_token_hint = "x" * 3000
    value = c.encode(data)
    assert len(value) <= MAX_COOKIE_VALUE
    back = c.decode(value, now=NOW)
    assert back.id_token_hint is None and len(back.groups) == 100
    data.groups = tuple(f"a-rather-long-group-name-{i:04d}" for i in range(200))
    with pytest.raises(SessionError, match=r"does not fit in a cookie"):
        c.encode(data)


def test_unicode_identity_round_trips() -> None:
    c = codec(os.urandom(32))
    data = c.new_session(Identity(user="zoë", groups=("Ärzte", "日本"), email=None, method="local"), now=NOW)
    assert c.decode(c.encode(data), now=NOW) == data


def test_constructor_validates_keys() -> None:
    with pytest.raises(ValueError, match=r"at least one"):
        SessionCodec([], idle_lifetime=1, absolute_lifetime=1)
    with pytest.raises(ValueError, match=r"#1 must be 32 bytes, got 16"):
        SessionCodec([os.urandom(32), os.urandom(16)], idle_lifetime=1, absolute_lifetime=1)


def test_generate_and_parse_key() -> None:
    text = generate_key()
    key = parse_key(text)
    assert len(key) == 32 and "=" not in text
    assert parse_key(base64.b64encode(key).decode()) == key  # standard base64 with padding
    assert parse_key("  " + text + "\n") == key
    secret_like = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(ValueError, match=r"must decode to 32 bytes, got 16") as caught:
        parse_key(secret_like)
    assert secret_like not in str(caught.value)
    with pytest.raises(ValueError, match=r"not valid base64"):
        parse_key("!!!!" * 11)
    with pytest.raises(ValueError, match=r"empty"):
        parse_key("  ")


def test_cookie_name_and_attributes() -> None:
    assert cookie_name(True) == COOKIE_NAME == "__Host-novnc-gw"
    assert cookie_name(False) == "novnc-gw"
    attrs = cookie_attributes(True)
    assert attrs == {"httponly": True, "secure": True, "samesite": "Lax", "path": "/"}
    assert cookie_attributes(False)["secure"] is False and "domain" not in cookie_attributes(False)


def test_session_data_from_identity_fields() -> None:
    data = codec(os.urandom(32)).new_session(ALICE, now=NOW)
    assert isinstance(data, SessionData)
    assert (data.user, data.groups, data.email, data.method) == ("alice", ALICE.groups, ALICE.email, "oidc")
    assert data.created == data.last_seen == NOW


def test_sealed_payload_keys_never_meet_the_envelope() -> None:
    c = codec(os.urandom(32))
    for payload in ({"_t": ""}, {"t": "x", "p": {}}, {}):
        sealed = c.seal(payload, purpose="oidc", now=NOW)
        assert c.unseal(sealed, purpose="oidc", max_age=60, now=NOW) == payload
    with pytest.raises(SessionError, match="expired"):
        c.unseal(c.seal({}, purpose="oidc", now=NOW), purpose="oidc", max_age=60, now=NOW + 61)
    # A value sealed in the previous, merged format (a sign-in in flight across the upgrade) is refused
    # as malformed, never misread: that sign-in starts again.
    legacy = c._seal({"state": "s", "_t": NOW}, _AAD_LABEL + b"/oidc")
    with pytest.raises(SessionError, match="malformed"):
        c.unseal(legacy, purpose="oidc", max_age=60, now=NOW)
