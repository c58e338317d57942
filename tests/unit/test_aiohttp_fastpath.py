"""The door to aiohttp's private parts opens only for releases it was checked against, and pyproject.toml
allows only those."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import aiohttp
import pytest

from gateway.consoles.aiohttp_fastpath import CHECKED, supported

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("version", "ok"),
    [("3.14.5", True), ("3.14.0", True), ("3.15.0", False), ("3.11.9", False), ("4.0.0a1", False)],
)
def test_the_version_guard(version: str, ok: bool) -> None:
    assert supported(version) is ok


def test_the_running_aiohttp_is_a_checked_release() -> None:
    assert supported(), (
        f"aiohttp {aiohttp.__version__}: check aiohttp_fastpath.py's hooks, then add it to CHECKED"
    )


def test_pyproject_allows_only_checked_releases() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(r"aiohttp\b", d)]
    found = re.fullmatch(r"aiohttp>=(\d+)\.(\d+)\.\d+,<(\d+)\.(\d+)", spec)
    assert found, f"pyproject.toml: aiohttp needs a bounded range of checked releases, not {spec!r}"
    major, low, upper_major, high = map(int, found.groups())
    assert upper_major == major
    assert {(major, minor) for minor in range(low, high)} == CHECKED
    pinned = re.search(r"^aiohttp==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert pinned and supported(pinned[1])
