"""A suite-wide detector for console tokens: every token the demo cloud issues, in every encoding we can
think of, searched for in whatever the tests hand it (responses, WebSocket messages, log records, files).

It keeps no haystacks, only the tokens' forms, and scans incrementally. Bytes are first mapped to a
"could be part of a token" mask with `bytes.translate` (C speed); only runs at least as long as the
shortest form are looked at closely, so megabytes of framebuffer data cost milliseconds.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Every character any form below can contain: urlsafe base64 (the token), standard base64, hex, '%'.
_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/%")
_MASK = bytes(1 if i in _ALPHABET else 0 for i in range(256))
_FIND_BELOW = 2000  # fewer forms than this: search each form with C `in`; more: slide windows over a set
# Files are read in chunks, so size costs only time: the 30-minute soak's audit trail (~100 MB) is read whole.
_MAX_FILE = 1024 * 1024 * 1024
_CHUNK = 4 * 1024 * 1024


def token_of(url: str) -> str | None:
    """The token of a console URL in either style (Huawei `?token=`, nova `?path=%3Ftoken%3D`)."""
    query = parse_qs(urlsplit(url).query)
    if "token" in query:
        return query["token"][0]
    if "path" in query:
        inner = parse_qs(urlsplit(unquote(query["path"][0])).query)
        if "token" in inner:
            return inner["token"][0]
    return None


def token_forms(token: str) -> set[str]:
    """The token as it would look raw, URL-encoded once or twice, base64-encoded at each byte
    alignment (standard and urlsafe alphabets, the part that does not depend on neighbours) and hex."""
    raw = token.encode()
    forms = {token, quote(token, safe=""), quote(quote(token, safe=""), safe="")}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        # Drop the group that mixes in the padding and the last group (it mixes in whatever follows).
        core = encoded[4 if pad else 0 : -4]
        forms.add(core)
        forms.add(core.replace("+", "-").replace("/", "_"))
    forms.add(raw.hex())
    forms.add(raw.hex().upper())
    return {f for f in forms if len(f) >= 16}


@dataclass
class Leak:
    where: str
    form_kind: str  # "raw", "encoded": never the token itself


@dataclass
class TokenScanner:
    """Thread-safe; `add_url` as tokens are issued, `scan` as data passes, `leaks` at the end."""

    forms: set[str] = field(default_factory=set)
    by_length: dict[int, set[str]] = field(default_factory=dict)
    raw_tokens: set[str] = field(default_factory=set)
    leaks: list[Leak] = field(default_factory=list)
    tokens: int = 0
    scanned_bytes: int = 0
    scanned_items: int = 0
    files: int = 0
    _min_len: int = 1 << 30
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_url(self, url: str) -> None:
        token = token_of(url)
        if token:
            self.add_token(token)

    def add_token(self, token: str) -> None:
        with self._lock:
            if token in self.raw_tokens:
                return
            self.raw_tokens.add(token)
            self.tokens += 1
            for form in token_forms(token):
                self.forms.add(form)
                self.by_length.setdefault(len(form), set()).add(form)
                self._min_len = min(self._min_len, len(form))

    def scan(self, data: str | bytes | bytearray | memoryview, where: str) -> bool:
        """True when clean; records a Leak (with where, never the token) otherwise."""
        if not self.forms or not data:
            return True
        if isinstance(data, str):
            raw = data.encode("utf-8", "surrogatepass")
        else:
            raw = bytes(data)
        with self._lock:
            self.scanned_bytes += len(raw)
            self.scanned_items += 1
            found = self._search(raw)
            if found is not None:
                kind = "raw" if found in self.raw_tokens else "encoded"
                self.leaks.append(Leak(where, kind))
                return False
        return True

    def _search(self, raw: bytes) -> str | None:
        need = self._min_len
        mask = raw.translate(_MASK)
        needle = b"\x01" * need
        pos = mask.find(needle)
        while pos >= 0:
            end = mask.find(b"\x00", pos)
            if end < 0:
                end = len(raw)
            hit = self._in_run(raw[pos:end].decode("ascii"))
            if hit is not None:
                return hit
            pos = mask.find(needle, end)
        return None

    def _in_run(self, run: str) -> str | None:
        if len(self.forms) < _FIND_BELOW:
            for form in self.forms:
                if len(form) <= len(run) and form in run:
                    return form
            return None
        for length, bucket in self.by_length.items():
            for i in range(len(run) - length + 1):
                window = run[i : i + length]
                if window in bucket:
                    return window
        return None

    def scan_file(self, path: Path, where: str | None = None) -> bool:
        """Chunked, with an overlap so a token across a chunk boundary is still seen."""
        label = where or str(path)
        overlap = max((len(f) for f in self.forms), default=0)
        clean = True
        try:
            size = path.stat().st_size
            if size > _MAX_FILE:
                return True
            with path.open("rb") as fh:
                tail = b""
                while True:
                    chunk = fh.read(_CHUNK)
                    if not chunk:
                        break
                    clean &= self.scan(tail + chunk, label)
                    tail = chunk[-overlap:] if overlap else b""
        except OSError:
            return True
        return clean

    def scan_tree(self, root: Path, *, skip_dirs: frozenset[str] = frozenset()) -> int:
        """Every regular file under root (no symlinks followed); returns how many files were read."""
        count = 0
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if d not in skip_dirs]
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                self.scan_file(path)
                count += 1
        return count


# The one scanner of this test run: tests/conftest.py feeds it, tests that issue tokens of their own
# (hostile clouds) register them here too.
SCANNER = TokenScanner()
