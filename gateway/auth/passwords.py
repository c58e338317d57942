"""Local user passwords: scrypt with a self-describing encoded hash.

Format: ``scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>`` (standard base64, no padding), where N = 2**ln.
The parameters travel with the hash so they can be raised later without invalidating existing users.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import threading
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor

DEFAULT_LN = 15
DEFAULT_R = 8
DEFAULT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Accepted ranges: wide enough for any sane setting, narrow enough that a hostile config cannot make one
# verification take minutes or gigabytes.
_LN_RANGE = range(10, 21)
_R_RANGE = range(1, 33)
_P_RANGE = range(1, 17)
# Off-loop checks: at most this many at once (CPU, and 32 MiB each at the default cost) ...
HASH_WORKERS = 2
# ... and at most this many running or waiting; beyond that a sign-in is refused at once. At ~100 ms a
# check, the last one waits about 1.6 s.
MAX_PENDING = 32

# A hash of a random password nobody knows. Verifying against it for unknown users makes their sign-in take
# as long as a real user's, so response time does not reveal which user names exist.
DUMMY_HASH = "scrypt$ln=15,r=8,p=1$a9O+HkdxCTZZV4OBm7i9mQ$x8zSGIAPkImAQzhAV2UuI98h+A1VW3K7+iveEP+Dgjw"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"password hash {what} is not valid base64") from None


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    # NFC so the same password typed on different systems hashes the same.
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    n = 1 << ln
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * n * r + (1 << 20))


def hash_password(password: str, *, ln: int = DEFAULT_LN, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    if ln not in _LN_RANGE or r not in _R_RANGE or p not in _P_RANGE:
        raise ValueError("scrypt parameters out of range")
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, ln, r, p, _HASH_BYTES)
    return f"scrypt$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 4:
        raise ValueError("password hash must look like scrypt$ln=..,r=..,p=..$salt$hash")
    scheme, params, salt_text, hash_text = parts
    if scheme != "scrypt":
        raise ValueError(f"password hash scheme {scheme[:20]!r} is not supported (only scrypt)")
    values: dict[str, int] = {}
    for item in params.split(","):
        name, sep, number = item.partition("=")
        if not sep or name not in ("ln", "r", "p") or not number.isdigit() or name in values:
            raise ValueError("password hash parameters must be ln=<int>,r=<int>,p=<int>")
        values[name] = int(number)
    if set(values) != {"ln", "r", "p"}:
        raise ValueError("password hash parameters must include ln, r and p")
    ln, r, p = values["ln"], values["r"], values["p"]
    if ln not in _LN_RANGE or r not in _R_RANGE or p not in _P_RANGE:
        raise ValueError(
            f"password hash parameters out of range (ln {_LN_RANGE.start}-{_LN_RANGE.stop - 1}, "
            f"r {_R_RANGE.start}-{_R_RANGE.stop - 1}, p {_P_RANGE.start}-{_P_RANGE.stop - 1})"
        )
    salt = _unb64(salt_text, "salt")
    digest = _unb64(hash_text, "digest")
    if len(salt) < 8:
        raise ValueError("password hash salt is shorter than 8 bytes")
    if not 16 <= len(digest) <= 64:
        raise ValueError("password hash digest must be 16 to 64 bytes")
    return ln, r, p, salt, digest


def check_hash(encoded: str) -> None:
    """Validate a configured hash at start-up, so a typo fails loudly before anyone signs in."""
    _parse(encoded)


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches; compares in constant time. ValueError only for a malformed hash."""
    ln, r, p, salt, expected = _parse(encoded)
    actual = _scrypt(password, salt, ln, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def verify_unknown_user(password: str) -> bool:
    """Spend the same time as a real verification, then fail: use it when the user name does not exist."""
    verify_password(password, DUMMY_HASH)
    return False


class PasswordPoolBusy(Exception):
    """More checks are running or waiting than the pool allows: refuse now rather than queue more."""


class PasswordPool:
    """Password checks on a few worker threads, never on the event loop.

    scrypt takes about 100 ms a check; on the loop that froze every console on the replica for as long,
    once per sign-in attempt. `hashlib.scrypt` releases the GIL, so the loop relays on while a worker
    hashes. `workers` bounds the CPU and memory in use; `max_pending` bounds the work a sign-in spray
    can pile up. A check counts until its thread is done with it, even if the request that asked for it
    has gone, so abandoned requests cannot queue unbounded work either.
    """

    def __init__(self, *, workers: int = HASH_WORKERS, max_pending: int = MAX_PENDING) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="password-check")
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    async def verify(self, password: str, encoded: str | None) -> bool:
        """`verify_password`, or for an unknown user (`encoded` None) `verify_unknown_user`, off the loop.

        Raises PasswordPoolBusy when `max_pending` checks are already running or waiting."""
        with self._lock:
            if self._pending >= self._max_pending:
                raise PasswordPoolBusy
            self._pending += 1
        try:
            if encoded is None:
                work = self._executor.submit(verify_unknown_user, password)
            else:
                work = self._executor.submit(verify_password, password, encoded)
        except BaseException:
            self._done(None)
            raise
        work.add_done_callback(self._done)
        return await asyncio.wrap_future(work)

    def _done(self, _: Future[bool] | None) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Drop checks not yet started and wait for the running ones (at most one scrypt each)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
