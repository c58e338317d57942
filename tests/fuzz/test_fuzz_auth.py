"""Session cookies and JWTs from hostile clients and proxies.

Cookie: any text decodes to a SessionError (never another exception), and no change to a real cookie
yields a session. JWT: any text or any structurally plausible token fails with AuthError; a token whose
header or payload was altered never yields claims other than the signer's.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.auth.cookie import SessionCodec, SessionError
from gateway.auth.identity import METHODS, AuthError, Identity, identity_from_claims
from gateway.auth.jwks import StaticKey, verify_jwt
from tests.fuzz import tried

NOW = 1_700_000_000.0
KEYS = [bytes(range(32)), bytes(range(1, 33))]
CODEC = SessionCodec(KEYS, idle_lifetime=3600, absolute_lifetime=86400)
OLD_CODEC = SessionCodec([bytes(range(2, 34))], idle_lifetime=3600, absolute_lifetime=86400)

names = st.text(min_size=1, max_size=40)
identities = st.builds(
    Identity,
    user=names,
    groups=st.lists(st.text(max_size=30), max_size=30).map(tuple),
    email=st.one_of(st.none(), st.text(max_size=40)),
    method=st.sampled_from(METHODS),
)


@given(st.text(max_size=600))
def test_any_text_is_refused_as_a_session_error(value: str) -> None:
    tried("cookie: arbitrary text")
    with pytest.raises(SessionError):
        CODEC.decode(value, now=NOW)


@given(st.binary(min_size=0, max_size=400))
def test_any_base64url_payload_is_refused(raw: bytes) -> None:
    tried("cookie: arbitrary base64url")
    value = base64.urlsafe_b64encode(b"\x01" + raw).rstrip(b"=").decode()
    with pytest.raises(SessionError):
        CODEC.decode(value, now=NOW)


@given(identities)
def test_real_sessions_round_trip(identity: Identity) -> None:
    tried("cookie: round trip")
    session = CODEC.new_session(identity, now=NOW)
    try:
        value = CODEC.encode(session)
    except SessionError:
        return  # too large for a cookie: refused at issue time, never truncated
    back = CODEC.decode(value, now=NOW + 1)
    assert (back.user, back.groups, back.email, back.method, back.csrf) == (
        session.user,
        session.groups,
        session.email,
        session.method,
        session.csrf,
    )
    assert not back.stale_key
    # A cookie from a key still configured but not first decodes and asks to be re-issued.
    assert (
        SessionCodec([KEYS[1], KEYS[0]], idle_lifetime=3600, absolute_lifetime=86400)
        .decode(value, now=NOW)
        .stale_key
    )


@given(identities, st.data())
def test_every_change_to_a_real_cookie_is_refused(identity: Identity, data: st.DataObject) -> None:
    tried("cookie: mutated real cookies")
    try:
        value = CODEC.encode(CODEC.new_session(identity, now=NOW))
    except SessionError:
        return
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. "
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "insert", "delete", "swap-key"]))
    i = data.draw(st.integers(0, len(value) - 1))
    if kind == "flip":
        mutated = (
            value[:i] + data.draw(st.sampled_from(alphabet).filter(lambda c: c != value[i])) + value[i + 1 :]
        )
    elif kind == "truncate":
        mutated = value[:i]
    elif kind == "append":
        mutated = value + data.draw(st.text(st.sampled_from(alphabet), min_size=1, max_size=8))
    elif kind == "insert":
        mutated = value[:i] + data.draw(st.sampled_from(alphabet)) + value[i:]
    elif kind == "delete":
        mutated = value[:i] + value[i + 1 :]
    else:
        mutated = OLD_CODEC.encode(OLD_CODEC.new_session(identity, now=NOW))  # a key we do not know
    with pytest.raises(SessionError):
        CODEC.decode(mutated, now=NOW)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4), st.sampled_from(["oidc", "x"]))
@example({"_t": ""}, "oidc")  # `make fuzz` found it: a payload key named like the envelope's own field
@example({"p": "", "t": ""}, "oidc")
def test_sealed_values_never_pass_for_another_purpose_or_a_session(
    payload: dict[str, str], purpose: str
) -> None:
    tried("cookie: sealed values")
    sealed = CODEC.seal(payload, purpose=purpose, now=NOW)
    assert CODEC.unseal(sealed, purpose=purpose, max_age=60, now=NOW) == payload
    with pytest.raises(SessionError):
        CODEC.unseal(sealed, purpose=purpose + "2", max_age=60, now=NOW)
    with pytest.raises(SessionError):
        CODEC.decode(sealed, now=NOW)


# -- JWTs --------------------------------------------------------------------------------------

_KEY = ec.generate_private_key(ec.SECP256R1())
_PEM = _KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
_OTHER = ec.generate_private_key(ec.SECP256R1())
_KEYS = StaticKey(_PEM.decode())


def _verify(token: str, *, algorithms: tuple[str, ...] = ("ES256",)) -> dict[str, Any]:
    return asyncio.run(
        verify_jwt(
            token,
            _KEYS,
            algorithms=algorithms,
            issuer="https://idp",
            audience="gw",
            clock_skew=60,
            now=NOW,
            what="assertion",
        )
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_GOOD_CLAIMS = {"iss": "https://idp", "aud": "gw", "exp": NOW + 300, "email": "a@example.com"}
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.text(max_size=400))
def test_any_text_is_refused(token: str) -> None:
    tried("jwt: arbitrary text")
    with pytest.raises(AuthError):
        _verify(token)


@given(json_values, json_values, st.binary(max_size=80))
def test_any_header_and_payload_with_a_junk_signature_is_refused(
    header: Any, payload: Any, sig: bytes
) -> None:
    tried("jwt: junk structure")
    token = ".".join(_b64(json.dumps(x).encode()) for x in (header, payload)) + "." + _b64(sig)
    with pytest.raises(AuthError):
        _verify(token)


@given(
    st.sampled_from(["none", "HS256", "ES256", "RS256", "ES384", "EdDSA", "", "es256"]),
    st.one_of(st.none(), st.text(max_size=10), st.integers()),
    st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "email"]), json_values, max_size=6),
    st.booleans(),
)
def test_only_properly_signed_fresh_tokens_for_us_pass(
    alg: str, kid: Any, claims: dict[str, Any], right_key: bool
) -> None:
    tried("jwt: signed variants")
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    head_and_body = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims, default=str).encode())
    if alg == "HS256":
        # The classic confusion attack: the public key used as an HMAC secret.
        sig = jwt.api_jws.get_algorithm_by_name("HS256").sign(head_and_body.encode(), _PEM)
        token = head_and_body + "." + _b64(sig)
    elif alg == "ES256":
        signer = jwt.api_jws.get_algorithm_by_name("ES256")
        sig = signer.sign(head_and_body.encode(), _KEY if right_key else _OTHER)
        token = head_and_body + "." + _b64(sig)
    else:
        token = head_and_body + "." + _b64(b"\0" * 64)
    try:
        got = _verify(token)
    except AuthError:
        return
    # Accepted: it must be exactly what a good signer issues.
    assert alg == "ES256" and right_key
    assert got.get("iss") == "https://idp"
    aud = got.get("aud")
    assert aud == "gw" or (isinstance(aud, list) and "gw" in aud)
    assert isinstance(got.get("exp"), int | float) and got["exp"] + 60 >= NOW


@given(st.data())
def test_altering_a_valid_token_never_changes_who_it_names(data: st.DataObject) -> None:
    tried("jwt: mutated valid tokens")
    token = jwt.encode(_GOOD_CLAIMS, _KEY, algorithm="ES256")
    i = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=")
    )
    mutated = token[:i] + replacement + token[i + 1 :]
    try:
        claims = _verify(mutated)
    except AuthError:
        return
    # base64url's unused trailing bits make a few one-character changes decode to the same bytes.
    assert claims == _GOOD_CLAIMS


@given(json_values, st.sampled_from(["email", "preferred_username", "a.b"]))
def test_claims_map_to_a_clean_identity_or_an_auth_error(claims: Any, username_claim: str) -> None:
    tried("jwt: claims to identity")
    if not isinstance(claims, dict):
        claims = {"email": claims}
    try:
        identity = identity_from_claims(
            claims, username_claim=username_claim, email_claim="email", groups_claim="groups", method="oidc"
        )
    except AuthError:
        return
    assert identity.user and identity.user == identity.user.strip()
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in identity.user)
    assert len(identity.user) <= 256


def test_the_fuzzed_verifier_accepts_a_good_token() -> None:
    """Guards the properties above from passing vacuously (a verifier that refuses everything)."""
    token = jwt.encode(_GOOD_CLAIMS, _KEY, algorithm="ES256")
    assert _verify(token) == _GOOD_CLAIMS
