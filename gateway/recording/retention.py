"""Retention: the gateway deletes recordings older than `recording.retention`, each deletion audited.

Object stores do not do it for us (moto, which the tests use, enforces no Object Lock or lifecycle; a
real bucket's lifecycle rule would delete without an audit line). Age is measured from a recording's
start time as its metadata says; a recording whose start cannot be read is kept and logged (deleting
what we cannot date would be guessing), and nothing that is not a recording is touched: a store lists
only recordings (a header and a valid id).
"""

from __future__ import annotations

import logging

from gateway.audit import AuditLog, format_ts
from gateway.durations import format_duration
from gateway.recording.store import RecordingStore, StoreError

__all__ = ["delete_expired"]

log = logging.getLogger(__name__)


async def delete_expired(store: RecordingStore, audit: AuditLog, *, max_age: float, now: float) -> list[str]:
    """Delete every recording that started more than `max_age` seconds before `now` (Unix time) and
    return their ids; `max_age` 0 keeps everything. Raises StoreError when the store cannot be listed;
    a single failed deletion is logged and retried on the next run."""
    if max_age <= 0:
        return []
    deleted: list[str] = []
    for info in await store.list():
        start = info.start
        if start is None:
            log.warning("recording %s: no readable start time in its metadata, kept", info.id)
            continue
        if now - start <= max_age:
            continue
        try:
            if not await store.delete(info.id):
                continue  # gone meanwhile (another replica's run)
        except StoreError as exc:
            log.error("recording %s: retention could not delete it: %s", info.id, exc)
            continue
        meta = info.meta
        audit.emit(
            "recording_deleted",
            recording=info.id,
            reason=f"retention: started {format_ts(start)}, older than {format_duration(max_age)}",
            target_user=_text(meta.get("user")),
            server_id=_text(meta.get("server_id")),
            cloud=_text(meta.get("cloud")),
            server_name=_text(meta.get("server_name")),
        )
        deleted.append(info.id)
    return deleted


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
