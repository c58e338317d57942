"""The local-directory recording store (the default): one directory per recording.

    <directory>/<id>/header  meta.json  seg-00000000  seg-00000001 ...  index  seal

Every part is written to a temporary name in the same directory, fsynced, then renamed into place (an
atomic replace on POSIX), so a reader never sees half a part and a crash never leaves one; the
recording's directory is fsynced after begin and finish so the names survive a crash too. File work runs
in a worker thread: the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.recording.store import (
    RecordingInfo,
    RecordingStore,
    StoreError,
    check_id,
    meta_bytes,
    segment_name,
)

__all__ = ["LocalStore"]

_PARTS = ("header", "meta.json", "index", "seal")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class LocalStore(RecordingStore):
    name = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.directory)!r})"

    def _dir(self, rid: str) -> Path:
        return self.directory / check_id(rid)

    async def _run(self, what: str, func: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(func, *args)
        except OSError as exc:
            raise StoreError(f"local store {self.directory}: {what} failed: {exc.strerror or exc}") from None

    async def begin(self, rid: str, header: bytes, meta: Mapping[str, Any]) -> None:
        def work() -> None:
            path = self._dir(rid)
            self.directory.mkdir(parents=True, exist_ok=True)
            path.mkdir()  # FileExistsError: the id is taken
            try:
                _write_atomic(path / "meta.json", meta_bytes(meta))
                _write_atomic(path / "header", header)
                _fsync_dir(path)
                _fsync_dir(self.directory)
            except OSError:
                # No header, so never listed (nor expired by retention): do not leave it behind.
                shutil.rmtree(path, ignore_errors=True)
                raise

        await self._run("begin", work)

    async def put_segment(self, rid: str, number: int, data: bytes) -> None:
        def work() -> None:
            path = self._dir(rid)
            if not path.is_dir():
                raise FileNotFoundError(2, "recording was not begun")
            _write_atomic(path / segment_name(number), data)

        await self._run(f"segment {number}", work)

    async def finish(
        self, rid: str, index: bytes, seal: bytes, meta: Mapping[str, Any] | None = None
    ) -> None:
        def work() -> None:
            path = self._dir(rid)
            if meta is not None:
                _write_atomic(path / "meta.json", meta_bytes(meta))
            _write_atomic(path / "index", index)
            _write_atomic(path / "seal", seal)
            _fsync_dir(path)

        await self._run("finish", work)

    def _info(self, path: Path) -> RecordingInfo | None:
        try:
            names = os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if "header" not in names:
            return None
        meta: Any = {}
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((path / "meta.json").read_bytes())
        size = 0
        for name in names:
            if name in _PARTS or name.startswith("seg-"):
                with contextlib.suppress(FileNotFoundError):
                    size += (path / name).stat().st_size
        return RecordingInfo(
            id=path.name,
            meta=meta if isinstance(meta, dict) else {},
            segments=sum(1 for n in names if n.startswith("seg-")),
            size=size,
            finished="seal" in names,
        )

    async def list(self) -> list[RecordingInfo]:
        def work() -> list[RecordingInfo]:
            try:
                entries = os.listdir(self.directory)
            except FileNotFoundError:
                return []
            found = []
            for name in entries:
                try:
                    check_id(name)
                except ValueError:
                    continue  # not ours (a temporary file, lost+found, ...)
                info = self._info(self.directory / name)
                if info is not None:
                    found.append(info)
            return found

        return await self._run("list", work)

    async def info(self, rid: str) -> RecordingInfo | None:
        return await self._run("info", self._info, self._dir(rid))

    async def read_header(self, rid: str) -> bytes | None:
        return await self._run("read", _read, self._dir(rid) / "header")

    async def read_segment(self, rid: str, number: int) -> bytes | None:
        return await self._run("read", _read, self._dir(rid) / segment_name(number))

    async def read_index(self, rid: str) -> bytes | None:
        return await self._run("read", _read, self._dir(rid) / "index")

    async def read_seal(self, rid: str) -> bytes | None:
        return await self._run("read", _read, self._dir(rid) / "seal")

    async def delete(self, rid: str) -> bool:
        def work() -> bool:
            path = self._dir(rid)
            if not path.is_dir():
                return False
            shutil.rmtree(path)
            return True

        return await self._run("delete", work)

    async def check_writable(self) -> None:
        def work() -> None:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".probe-{os.getpid()}-{id(self)}"
            _write_atomic(probe, b"probe")
            probe.unlink()

        await self._run("write check", work)

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""
