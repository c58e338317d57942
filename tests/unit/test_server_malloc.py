"""tune_malloc: TLS read buffers stay in the heap for reuse instead of going back to the kernel.

Run in a fresh interpreter (malloc settings are process-wide): buffers of the size the event loop
reads TLS with are taken from the heap, not mmapped, and once freed the memory stays at the heap's
top for the next read instead of being trimmed. Without the tuning glibc mmaps each of them and
gives them back on free (checked by hand: keepcost about 0.5 MiB there).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import ctypes
from gateway.server import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
assert tune_malloc()
mapped = libc.mallinfo2().hblkhd
buffers = [bytearray(512 << 10) for _ in range(6)]
grew = libc.mallinfo2().hblkhd - mapped
del buffers
print(grew, libc.mallinfo2().keepcost)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")
def test_tls_read_sized_buffers_come_from_the_heap_and_stay_there() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    grew, kept = (int(x) for x in out.stdout.split())
    assert grew == 0  # not mmapped: no mmap/munmap per buffer
    assert kept >= 3 << 20  # freed, but kept at the heap's top: no brk() shrink and grow per read
