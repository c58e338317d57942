"""The console core stays sans-IO: the use case and the relay's state machine import no aiohttp (the web
adapter and the relay's driver do), so they read, and are tested, without a socket."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

CONSOLES = Path(__file__).resolve().parents[2] / "gateway" / "consoles"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "module", ["opening.py", "joining.py", "watchers.py", "relay_core.py", "frames.py", "codes.py"]
)
def test_the_core_imports_no_aiohttp(module: str) -> None:
    assert not {name for name in imported(CONSOLES / module) if name.split(".")[0] == "aiohttp"}


def test_only_the_fast_path_module_reaches_into_aiohttp_internals() -> None:
    """Private aiohttp attributes (`_writer`, `_conn`, `_parser`, `_reader`, ...) are used in one module."""
    private = re.compile(
        r"""[."'](_writer|_conn|_parser|_reader|_payload_parser|_cancel_heartbeat|_drain_helper)\b"""
    )
    gateway = CONSOLES.parent
    users = sorted(
        str(path.relative_to(gateway))
        for path in gateway.rglob("*.py")
        if private.search(path.read_text(encoding="utf-8"))
    )
    assert users == ["consoles/aiohttp_fastpath.py"]
