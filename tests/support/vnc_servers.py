"""Real VNC servers on loopback, without a password: TigerVNC's Xvnc and QEMU's built-in VNC server.

Both are Debian packages (`tigervnc-standalone-server`, `qemu-system-x86`; scripts/setup.sh installs
them). Each runs in its own session so that it, and anything it starts, is stopped as a group by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.polling import wait_for
from tests.support.processes import free_port

__all__ = ["QEMU", "XVNC", "XvncSession", "qemu_vnc", "xvnc", "xvnc_session"]

XVNC = shutil.which("Xvnc")
QEMU = shutil.which("qemu-system-x86_64")
_VNC_BASE_PORT = 5900  # QEMU takes a display number: the port is 5900 + display


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass(frozen=True, slots=True)
class XvncSession:
    host: str
    port: int
    display: str  # ":N": where X programs (tests/support/x_echo.py) show up on the console


@contextlib.contextmanager
def xvnc(log_path: Path, *, desktop: str = "real-xvnc") -> Iterator[tuple[str, int]]:
    """Xvnc's RFB address (see `xvnc_session`)."""
    with xvnc_session(log_path, desktop=desktop) as session:
        yield session.host, session.port


@contextlib.contextmanager
def xvnc_session(
    log_path: Path, *, desktop: str = "real-xvnc", geometry: str = "640x480"
) -> Iterator[XvncSession]:
    """Xvnc on a display it picks itself (-displayfd), RFB on a loopback port, security type None.

    Its defaults are kept: -DisconnectClients is on, so a client asking for exclusive access
    (ClientInit shared-flag 0) makes it drop every other client."""
    assert XVNC is not None, "Xvnc (tigervnc-standalone-server) is not installed"
    port = free_port()
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [
            XVNC,
            "-displayfd",
            str(write_fd),
            "-geometry",
            geometry,
            "-depth",
            "24",
            "-rfbport",
            str(port),
            "-localhost",
            "-SecurityTypes",
            "None",
            "-nolisten",
            "tcp",
            "-desktop",
            desktop,
        ],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
        start_new_session=True,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as ready:
            display = ready.readline().strip()  # Xvnc writes its display number once it accepts clients
        assert display, f"Xvnc did not start: {log_path.read_text()[-500:]}"
        yield XvncSession("127.0.0.1", port, f":{display}")
    finally:
        _stop(proc)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.asynccontextmanager
async def qemu_vnc(log_path: Path, *, name: str = "real-qemu") -> AsyncIterator[tuple[str, int]]:
    """QEMU with no machine and no disk, paused (-S), its VNC server on a loopback port.

    It starts in well under a second and shows its (empty) console at 640x480. Its VNC sharing policy
    is the default, `share=allow-exclusive`: a client asking for exclusive access disconnects every
    other client."""
    assert QEMU is not None, "qemu-system-x86_64 (qemu-system-x86) is not installed"
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [
            QEMU,
            "-machine",
            "none",
            "-nodefaults",
            "-S",
            "-display",
            "none",
            "-vnc",
            f"127.0.0.1:{port - _VNC_BASE_PORT}",
            "-name",
            name,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
        start_new_session=True,
    )
    try:
        await wait_for(lambda: proc.poll() is not None or _accepts(port), 20, "QEMU's VNC server to listen")
        assert proc.poll() is None, f"QEMU did not start: {log_path.read_text()[-500:]}"  # noqa: ASYNC240
        yield "127.0.0.1", port
    finally:
        _stop(proc)
