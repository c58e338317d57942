"""The S3-compatible recording store (aiobotocore): one object per part.

    <prefix><id>/header  meta.json  seg-00000000  seg-00000001 ...  index  seal

Each segment is one PutObject when it is cut, not a part of a multipart upload (docs/recording.md,
"Stores": parts under 5 MiB are refused and an upload's parts are invisible until it completes, so a
live recording could not be played and a gateway crash would lose everything since the start). A
PutObject is atomic (readers see the whole object or none) and durable once acknowledged.

S3 (and moto, which tests use) enforces no retention here: retention.py deletes what has expired.
Timeouts are short and retries few: a store that does not answer must turn into StoreError quickly,
so a required recording fails closed instead of stalling the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any, Final

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.recording.store import (
    RecordingInfo,
    RecordingStore,
    StoreError,
    check_id,
    meta_bytes,
    segment_name,
)

__all__ = ["S3Store"]

_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_LIST_CONCURRENCY: Final = 16


class S3Store(RecordingStore):
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "recordings/",
        endpoint: str = "",
        region: str = "us-east-1",
        access_key: str = "",
        secret_key: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self._region = region
        self._credentials = (access_key or None, secret_key or None)
        self._config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, section: Any) -> S3Store:
        """From config's `recording.s3` (gateway.config.RecordingS3)."""
        return cls(
            bucket=section.bucket,
            prefix=section.prefix,
            endpoint=section.endpoint,
            region=section.region,
            access_key=section.access_key.get_secret_value(),
            secret_key=section.secret_key.get_secret_value(),
        )

    def __repr__(self) -> str:
        return f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    async def _s3(self) -> Any:
        """The client, created on first use (so constructing the store needs no running loop)."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    access, secret = self._credentials
                    self._client = await stack.enter_async_context(
                        get_session().create_client(
                            "s3",
                            endpoint_url=self.endpoint or None,
                            region_name=self._region,
                            aws_access_key_id=access,
                            aws_secret_access_key=secret,
                            config=self._config,
                        )
                    )
                    self._stack = stack
        return self._client

    def _key(self, rid: str, part: str) -> str:
        return f"{self.prefix}{check_id(rid)}/{part}"

    def _error(self, what: str, exc: BaseException) -> StoreError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
        else:
            reason = str(exc) or type(exc).__name__
        return StoreError(f"s3 store {self.bucket}: {what} failed: {reason}")

    async def _put(self, what: str, key: str, data: bytes) -> None:
        client = await self._s3()
        try:
            await client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise self._error(what, exc) from None

    async def _get(self, key: str) -> bytes | None:
        client = await self._s3()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                return await body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise self._error("read", exc) from None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise self._error("read", exc) from None

    async def _objects(self, prefix: str) -> list[dict[str, Any]]:
        client = await self._s3()
        found: list[dict[str, Any]] = []
        try:
            async for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                found.extend(page.get("Contents", ()))
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise self._error("list", exc) from None
        return found

    async def begin(self, rid: str, header: bytes, meta: Mapping[str, Any]) -> None:
        if await self._get(self._key(rid, "header")) is not None:
            raise StoreError(f"s3 store {self.bucket}: begin failed: recording {rid} exists")
        await self._put("begin", self._key(rid, "meta.json"), meta_bytes(meta))
        await self._put("begin", self._key(rid, "header"), header)

    async def put_segment(self, rid: str, number: int, data: bytes) -> None:
        await self._put(f"segment {number}", self._key(rid, segment_name(number)), data)

    async def finish(
        self, rid: str, index: bytes, seal: bytes, meta: Mapping[str, Any] | None = None
    ) -> None:
        if meta is not None:
            await self._put("finish", self._key(rid, "meta.json"), meta_bytes(meta))
        await self._put("finish", self._key(rid, "index"), index)
        await self._put("finish", self._key(rid, "seal"), seal)

    async def _info(self, rid: str, objects: list[dict[str, Any]]) -> RecordingInfo | None:
        names = {obj["Key"].rsplit("/", 1)[-1]: int(obj.get("Size", 0)) for obj in objects}
        if "header" not in names:
            return None
        meta: Any = {}
        raw = await self._get(self._key(rid, "meta.json"))
        with contextlib.suppress(ValueError):
            meta = json.loads(raw or b"{}")
        return RecordingInfo(
            id=rid,
            meta=meta if isinstance(meta, dict) else {},
            segments=sum(1 for n in names if n.startswith("seg-")),
            size=sum(names.values()),
            finished="seal" in names,
        )

    async def list(self) -> list[RecordingInfo]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for obj in await self._objects(self.prefix):
            rid, _, part = obj["Key"][len(self.prefix) :].partition("/")
            if part and "/" not in part:
                grouped.setdefault(rid, []).append(obj)
        valid = []
        for rid in grouped:
            with contextlib.suppress(ValueError):
                valid.append(check_id(rid))
        limit = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def one(rid: str) -> RecordingInfo | None:
            async with limit:
                return await self._info(rid, grouped[rid])

        infos = await asyncio.gather(*(one(rid) for rid in valid))
        return [info for info in infos if info is not None]

    async def info(self, rid: str) -> RecordingInfo | None:
        return await self._info(rid, await self._objects(self._key(rid, "")))

    async def read_header(self, rid: str) -> bytes | None:
        return await self._get(self._key(rid, "header"))

    async def read_segment(self, rid: str, number: int) -> bytes | None:
        return await self._get(self._key(rid, segment_name(number)))

    async def read_index(self, rid: str) -> bytes | None:
        return await self._get(self._key(rid, "index"))

    async def read_seal(self, rid: str) -> bytes | None:
        return await self._get(self._key(rid, "seal"))

    async def delete(self, rid: str) -> bool:
        objects = await self._objects(self._key(rid, ""))
        if not objects:
            return False
        client = await self._s3()
        try:
            # The seal first: a recording caught half-deleted reads as incomplete, never as sealed.
            seal = self._key(rid, "seal")
            if any(obj["Key"] == seal for obj in objects):
                await client.delete_object(Bucket=self.bucket, Key=seal)
                objects = [obj for obj in objects if obj["Key"] != seal]
            for start in range(0, len(objects), 1000):
                batch = [{"Key": obj["Key"]} for obj in objects[start : start + 1000]]
                response = await client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise StoreError(
                        f"s3 store {self.bucket}: delete failed: {first.get('Code')}: {first.get('Message')}"
                    )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise self._error("delete", exc) from None
        return True

    async def check_writable(self) -> None:
        key = f"{self.prefix}.probe/{os.urandom(8).hex()}"
        await self._put("write check", key, b"probe")
        client = await self._s3()
        try:
            await client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise self._error("write check", exc) from None

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()
