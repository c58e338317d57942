from __future__ import annotations

import pytest

from gateway.auth.passwords import (
    DUMMY_HASH,
    check_hash,
    hash_password,
    verify_password,
    verify_unknown_user,
)

# Low cost keeps the suite fast; one test covers the default parameters.
FAST = {"ln": 10, "r": 8, "p": 1}


def test_default_hash_format_and_verification() -> None:
    encoded = hash_password("correct horse battery staple")
    scheme, params, salt, digest = encoded.split("$")
    assert (scheme, params) == ("scrypt", "ln=15,r=8,p=1")
    assert salt and digest and "correct" not in encoded
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapl", encoded)


def test_salted_and_self_describing() -> None:
    a, b = hash_password("pw", **FAST), hash_password("pw", **FAST)
    assert a != b
    assert a.startswith("scrypt$ln=10,r=8,p=1$")
    assert verify_password("pw", a) and verify_password("pw", b)


def test_wrong_and_odd_passwords_return_false_without_raising() -> None:
    encoded = hash_password("s3cret", **FAST)
    for attempt in ["", "S3cret", "s3cret ", "\x00", "é" * 1000]:
        assert verify_password(attempt, encoded) is False


def test_unicode_is_normalised() -> None:
    encoded = hash_password("caf\u00e9", **FAST)  # precomposed
    assert verify_password("cafe\u0301", encoded)  # decomposed, same text


@pytest.mark.parametrize(
    ("encoded", "problem"),
    [
        ("", "must look like"),
        ("plain-text-password", "must look like"),
        ("bcrypt$ln=10,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "scheme 'bcrypt' is not supported"),
        ("scrypt$n=1024,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "parameters must be"),
        ("scrypt$ln=10,r=8$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "must include ln, r and p"),
        ("scrypt$ln=30,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "out of range"),
        ("scrypt$ln=10,r=8,p=1$!!!$AAAAAAAAAAAAAAAAAAAAAA", "salt is not valid base64"),
        ("scrypt$ln=10,r=8,p=1$AAAAAAAAAAA$%%%", "digest is not valid base64"),
        ("scrypt$ln=10,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA", "salt is shorter"),
        ("scrypt$ln=10,r=8,p=1$AAAAAAAAAAA$AAAA", "digest must be"),
    ],
)
def test_malformed_hash_names_the_problem(encoded: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        verify_password("anything", encoded)
    with pytest.raises(ValueError, match=problem):
        check_hash(encoded)


def test_dummy_hash_is_valid_and_unknown_users_always_fail() -> None:
    check_hash(DUMMY_HASH)
    assert verify_unknown_user("") is False
    assert verify_unknown_user("any password at all") is False


def test_hash_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match=r"out of range"):
        hash_password("pw", ln=4)
